"""Chosen frames of a LAMMPS text dump, without reading the others.

:class:`Dump` scans the file once for the lines that start a frame (``ITEM: TIMESTEP``) and keeps
their byte offsets. Frames are then read by seeking to them, and parsed by dpdata's own
``lammps/dump`` reader together with frame 0 (dpdata takes the atom types, their order and the
element counts from the first frame it reads), so frame ``r`` is exactly
``dpdata.System(dump, fmt="lammps/dump", type_map=...).sub_system([r])``. A last frame cut short
(a run killed mid-write) is not counted, as dpdata leaves it out; row ``r`` is the ``r``-th
``ITEM: TIMESTEP`` block of the file (dpdata would also drop an incomplete frame in the middle,
which no single LAMMPS run writes, and number the later ones one less).

The file may be elsewhere: given its offsets and a function that reads byte ranges, frames are
read the same way (:mod:`dpgen_ng.explore.remote` reads them over SFTP).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dpdata
import numpy as np

MARK = b"ITEM: TIMESTEP"
BLOCK_BYTES = 1 << 22  # read at once while indexing
RangeReader = Callable[[Sequence[tuple[int, int]]], list[bytes]]  # [start, end) ranges -> bytes


def frame_offsets(path: Path, block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """Byte offsets of the lines that start a frame (``ITEM: TIMESTEP`` after optional blanks),
    then the size of the file."""
    offsets: list[int] = []
    base, carry = 0, b""  # file offset of carry; carry: the start of a line not read to its end
    with Path(path).open("rb") as fh:
        while chunk := fh.read(block_bytes):
            buf = carry + chunk
            cut = buf.rfind(b"\n") + 1
            offsets += _marks(buf, cut, base)
            carry, base = buf[cut:], base + cut
    offsets += _marks(carry, len(carry), base)
    return np.array([*offsets, base + len(carry)], dtype=np.int64)


def _marks(buf: bytes, stop: int, base: int) -> list[int]:
    """``base`` + the offsets of the lines of ``buf[:stop]`` that start a frame."""
    found = []
    at = buf.find(MARK, 0, stop)
    while at >= 0:
        line = buf.rfind(b"\n", 0, at) + 1
        if not buf[line:at].strip(b" \t"):
            found.append(base + line)
        at = buf.find(MARK, at + len(MARK), stop)
    return found


class Dump:
    """A LAMMPS text dump whose frames are read when asked for.

    Besides :meth:`frames`, it answers the part of ``dpdata.System``'s interface that selection
    uses on a trajectory: ``get_nframes()``, ``sub_system(rows)``, ``dump["coords"][rows]`` and
    ``dump["cells"][rows]`` (those frames are read), and ``dump["atom_types"]`` (or any other
    key: frame 0's, as dpdata's). The last batch of frames read is kept, so ``["cells"][r]`` then
    ``["coords"][r]`` parse them once.
    """

    def __init__(self, path: Path | str, type_map: Sequence[str] | None = None,
                 read_ranges: RangeReader | None = None, bounds: np.ndarray | None = None) -> None:
        """``path`` is read here; or, with ``read_ranges`` and ``bounds`` (the frame offsets and
        the size, as :func:`frame_offsets` gives them), a file elsewhere (a remote machine)."""
        self.path = path if read_ranges is not None else Path(path)
        self.type_map = None if type_map is None else list(type_map)
        self._bounds = frame_offsets(Path(path)) if bounds is None else np.asarray(bounds, np.int64)
        self._read_ranges = read_ranges or self._read_local
        self._nframes = len(self._bounds) - 1
        self._last: tuple[bytes, dpdata.System] | None = None
        self._first: dpdata.System | None = None
        if self._nframes:
            self._check_ends()

    def get_nframes(self) -> int:
        return self._nframes

    def frames(self, rows: Sequence[int] | np.ndarray) -> dpdata.System:
        """The frames ``rows`` (in that order; repeats allowed) as one system."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= self._nframes):
            raise IndexError(f"{self.path} has {self._nframes} frame(s), not frame {int(rows.max())}")
        if self._first is None:
            raise ValueError(f"{self.path}: no complete frame")
        key = rows.tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        if not rows.size:
            return self._first.sub_system(rows)
        unique, inverse = np.unique(rows, return_inverse=True)
        system = self._read([0, *unique.tolist()])
        if system.get_nframes() != unique.size + 1:
            raise ValueError(f"{self.path}: a frame of {unique.tolist()} is incomplete")
        out = system.sub_system(1 + inverse.reshape(-1))
        self._last = (key, out)
        return out

    sub_system = frames

    def __getitem__(self, key: str) -> Any:
        if self._first is None:
            raise ValueError(f"{self.path}: no complete frame")
        if key in ("coords", "cells"):
            return FrameArray(self, key, self._first[key].shape[1:], self._first[key].dtype)
        return self._first[key]

    def _read(self, rows: Sequence[int]) -> dpdata.System:
        """These frames of the file (no check), parsed by dpdata."""
        got = self._read_ranges([(int(self._bounds[r]), int(self._bounds[r + 1])) for r in rows])
        pieces = [piece if piece.endswith(b"\n") else piece + b"\n" for piece in got]
        text = io.StringIO(b"".join(pieces).decode(), newline=None)
        return dpdata.System(text, fmt="lammps/dump", type_map=self.type_map)

    def _read_local(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        out = []
        with Path(self.path).open("rb") as fh:
            for start, end in ranges:
                fh.seek(start)
                out.append(fh.read(end - start))
        return out

    def _check_ends(self) -> None:
        """Read frame 0 and the last frame in one parse: a last frame dpdata drops is not counted.
        Both are kept (frame 0 for the keys, the last frame as the last batch read: candidates
        are often there)."""
        last = self._nframes - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dpdata warns about the incomplete frame it drops
            try:
                both = self._read([0, last] if last else [0])
            except (RuntimeError, ValueError, IndexError):  # dpdata: "no complete frame found", …
                both = None
        got = 0 if both is None else both.get_nframes()
        if got < (2 if last else 1):  # the last frame is cut short
            self._nframes -= 1
            if last > 1:
                self._first = self._read([0])
            elif got:
                self._first = both
            return
        self._first = both.sub_system([0]) if last else both
        if last:
            self._last = (np.array([last], dtype=np.int64).tobytes(), both.sub_system([1]))


class FrameArray:
    """``dump["coords"]`` or ``dump["cells"]``: indexing it reads those frames only."""

    def __init__(self, dump: Dump, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.dump, self.key, self.shape1, self.dtype = dump, key, shape, dtype

    def __len__(self) -> int:
        return self.dump.get_nframes()

    def __getitem__(self, index: Any) -> np.ndarray:
        rows = np.arange(len(self))[index]
        if not rows.size:
            return np.zeros((*rows.shape, *self.shape1), dtype=self.dtype)
        values = self.dump.frames(rows.reshape(-1))[self.key]
        return values.reshape(*rows.shape, *self.shape1)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every frame (the whole trajectory is read)."""
        return np.asarray(self[:], dtype=dtype)
