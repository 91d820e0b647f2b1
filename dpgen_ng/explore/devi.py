"""Reading ``model_devi.out`` (written by the DeePMD pair style) into columns, in bounded memory.

A file is read in blocks of whole lines (:data:`BLOCK_BYTES`) and only three columns are kept:
``step``, ``max_devi_v`` and ``max_devi_f`` (by header name when the first line is a ``#``
header, else DP-GEN's fixed positions 0, 1, 4). Blank lines and ``#`` lines are skipped, every row
must have the same number of columns, values are doubles (the step too, then truncated to an
integer): what ``np.loadtxt`` gave on the whole file.

The pair style writes fixed-width lines (``%12d``, then ``%18.6e`` columns). A block whose lines
all have one length and the same token boundaries is parsed on its bytes with numpy
(:mod:`dpgen_ng.explore.fixed_width`, exact for the numbers it takes); any other row of such a
block (NaN, a far exponent, a longer number) goes through ``np.loadtxt``, and so does every other
block. In that fast path the columns that are not kept must have the first row's token
boundaries but are not parsed.

A last line without a newline that is cut short (a field that is not a number, another number of
columns than the rows above, too few columns for the ones read) is dropped with a warning: a task
killed mid-write leaves one. A complete last line without a newline is kept.
"""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from dpgen_ng.explore.fixed_width import Columns, Scratch, fixed_width, loadtxt_rows

log = logging.getLogger("dpgen_ng.explore")
BLOCK_BYTES = 1 << 20  # whole lines parsed at once
COLUMNS = ("task", "sys_idx", "row", "step", "max_devi_v", "max_devi_f")  # of model_devi.npz
_CHUNK = 1 << 16  # elements of a generated column written at once
@dataclass(frozen=True)
class Deviation:
    """Per-frame deviations of one task: ``step``, ``max_devi_v``, ``max_devi_f`` (1-D arrays)."""

    step: np.ndarray
    max_devi_v: np.ndarray
    max_devi_f: np.ndarray

    def __len__(self) -> int:
        return int(self.step.size)


def _empty() -> Deviation:
    empty = np.zeros(0)
    return Deviation(empty.astype(np.int64), empty, empty)


def read_model_devi(path: Path) -> Deviation:
    """Columns by header name when a header exists, else DP-GEN's fixed positions (0, 1, 4).

    A single row, extra columns (devi_e, per-atom), comment lines, an empty file and a last line
    cut short (dropped) are all handled.
    """
    parts = list(iter_model_devi(path))
    if not parts:
        return _empty()
    if len(parts) == 1:
        return parts[0]
    return Deviation(*(np.concatenate([getattr(p, k) for p in parts])
                       for k in ("step", "max_devi_v", "max_devi_f")))


def iter_model_devi(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[Deviation]:
    """The rows of a ``model_devi.out`` in blocks of about ``block_bytes`` (never an empty one)."""
    path = Path(path)
    scratch = Scratch()
    with path.open("rb") as fh:
        first = fh.readline()
        cols = _header_columns(first)
        # a one-line '#' header is a comment: off the data, so that the first block can be fast
        header = first.startswith(b"#") and len(first.decode().splitlines()) == 1
        ncols = 0
        for buf, stop, whole in _line_blocks(fh, b"" if header else first, block_bytes):
            if whole:
                values, width = _parse_block(buf, stop, cols, path, scratch)
            else:
                values, width = _last_line(bytes(buf[:stop]), cols, ncols, path)
            if width and ncols and width != ncols:
                raise ValueError(f"{path}: the number of columns changed from {ncols} to {width}")
            ncols = ncols or width
            if values and values[0].size:
                yield Deviation(values[0].astype(np.int64), values[1], values[2])


def _header_columns(first: bytes) -> Columns:
    """Indices of step, max_devi_v, max_devi_f: by name in a ``#`` header, else 0, 1, 4."""
    lines = first.decode().splitlines()
    header = lines[0].lstrip("#").split() if lines and lines[0].startswith("#") else []
    col = {name: i for i, name in enumerate(header)}
    return col.get("step", 0), col.get("max_devi_v", 1), col.get("max_devi_f", 4)


def _line_blocks(fh: IO[bytes], first: bytes, size: int) -> Iterator[tuple[bytearray, int, bool]]:
    """``(buffer, n, True)``: the buffer's first ``n`` bytes are whole lines; at the end
    ``(buffer, n, False)``: what follows the last newline, if anything. One buffer is reused
    (read into, never reallocated but for a line longer than it): fresh megabytes for every block
    would cost as much as parsing them."""
    buf = bytearray(max(size, 2 * len(first)))
    buf[:len(first)] = first
    filled = len(first)
    while True:
        if filled == len(buf):  # a line longer than the buffer
            buf = buf + bytearray(len(buf))
        got = fh.readinto(memoryview(buf)[filled:])
        filled += got
        cut = buf.rfind(b"\n", 0, filled) + 1
        if cut:
            yield buf, cut, True
        buf[:filled - cut] = buf[cut:filled]
        filled -= cut
        if not got:
            break
    if filled:
        yield buf, filled, False


def _pick(data: np.ndarray, cols: Columns, path: Path) -> tuple[list[np.ndarray], int]:
    if not data.size:
        return [], 0
    if data.shape[1] <= max(cols):
        raise ValueError(f"{path}: {data.shape[1]} column(s); column {max(cols) + 1} is needed")
    return [np.ascontiguousarray(data[:, c]) for c in cols], data.shape[1]


def _parse_block(buf: bytearray, stop: int, cols: Columns, path: Path,
                 scratch: Scratch) -> tuple[list[np.ndarray], int]:
    """The three columns of ``buf[:stop]`` (whole lines), and its number of columns (0: no rows)."""
    fast = fixed_width(buf, stop, cols, scratch)
    return fast if fast is not None else _pick(loadtxt_rows(buf[:stop].decode()), cols, path)


def _last_line(tail: bytes, cols: Columns, ncols: int, path: Path) -> tuple[list[np.ndarray], int]:
    """The text after the last newline: kept when it is a whole row, else dropped."""
    try:
        data = loadtxt_rows(tail.decode())
    except ValueError:  # a number cut short (UnicodeDecodeError is a ValueError too)
        data = None
    if data is not None and not data.size:
        return [], 0  # a comment or spaces
    if data is not None and data.shape[1] == (ncols or data.shape[1]) and data.shape[1] > max(cols):
        return _pick(data, cols, path)
    log.warning("%s: the last line is cut short (%r); it is left out", path,
                tail[-60:].decode(errors="replace"))
    return [], 0


def force_over(parts: Iterable[Deviation], divisor: Callable[[], float]) -> Iterator[Deviation]:
    """The parts with ``max_devi_f`` divided by ``divisor()``, called once, at the first part
    (DP-GEN's ``model_devi_f_avg_relative``: no deviations, no RMS force needed)."""
    value = None
    for part in parts:
        value = divisor() if value is None else value
        yield dataclasses.replace(part, max_devi_f=part.max_devi_f / value)


def last_frame_failed(parts: Iterable[Deviation]) -> Iterator[Deviation]:
    """The parts, the force deviation of the very last frame set to inf (an MD run that stopped:
    the frame at the blow-up is not trustworthy)."""
    last = None
    for part in parts:
        if last is not None:
            yield last
        last = part
    if last is not None:
        f = last.max_devi_f.copy()
        f[-1] = np.inf
        yield dataclasses.replace(last, max_devi_f=f)


@dataclass(frozen=True)
class _Task:
    task: int
    sys_idx: int
    parts: list[Deviation]
    step_dtype: np.dtype  # of the steps given (those kept may be narrower)


class DeviTable:
    """The deviations of many tasks, kept as the blocks they were read in (memory: the three
    columns read, nothing per row besides); :meth:`save` streams them into ``model_devi.npz``."""

    def __init__(self) -> None:
        self._tasks: list[_Task] = []

    def add(self, task: int, sys_idx: int, parts: Iterable[Deviation]) -> int:
        """The rows of one task (``row`` counts them from 0 in the order of ``parts``), taken one
        part at a time from ``parts``; returns their number. Steps that fit are kept as 32-bit
        integers until :meth:`save` (a sixth less memory)."""
        kept, dtypes = [], []
        for part in parts:
            dtypes.append(part.step.dtype)
            kept.append(_narrow(part))
        self._tasks.append(_Task(task, sys_idx, kept, np.result_type(*dtypes or [_empty().step.dtype])))
        return sum(len(part) for part in kept)

    def __len__(self) -> int:
        return sum(len(p) for t in self._tasks for p in t.parts)

    def save(self, path: Path) -> None:
        """Write :data:`COLUMNS` as ``np.savez`` writes the concatenated columns: the same
        ``.npy`` members, byte for byte (a table without tasks has float columns, as before)."""
        n = len(self)
        with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name in COLUMNS:
                dtype = self._dtype(name)
                with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array_header_1_0(fh, {
                        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)})
                    for piece in self._pieces(name):
                        fh.write(np.ascontiguousarray(piece, dtype=dtype))  # the buffer, no copy

    def _dtype(self, name: str) -> np.dtype:
        """The dtype ``np.concatenate`` gives the column (what the former table had)."""
        if not self._tasks:
            return np.dtype(float)
        if name == "row":
            return np.arange(0).dtype
        empty = {"task": lambda t: np.full(0, t.task), "sys_idx": lambda t: np.full(0, t.sys_idx),
                 "step": lambda t: np.zeros(0, t.step_dtype)}.get(name)
        if empty is not None:
            return np.concatenate([empty(t) for t in self._tasks]).dtype
        samples = [getattr(p, name)[:0] for t in self._tasks for p in (t.parts or [_empty()])]
        return np.concatenate(samples).dtype

    def _pieces(self, name: str) -> Iterator[np.ndarray]:
        for t in self._tasks:
            if name in ("step", "max_devi_v", "max_devi_f"):
                yield from (getattr(p, name) for p in t.parts)
                continue
            n = sum(len(p) for p in t.parts)
            for start in range(0, n, _CHUNK):
                stop = min(start + _CHUNK, n)
                if name == "row":
                    yield np.arange(start, stop)
                else:
                    yield np.full(stop - start, t.task if name == "task" else t.sys_idx)


def _narrow(part: Deviation) -> Deviation:
    """``part`` with its steps as int32 when they fit (they are written back as int64)."""
    step = part.step
    if step.dtype != np.int64 or not step.size or step.min() < -(2**31) or step.max() >= 2**31:
        return part
    return Deviation(step.astype(np.int32), part.max_devi_v, part.max_devi_f)


def rms_force(traj: Path) -> float:
    """sqrt(mean |F|²) over every atom of every frame of a LAMMPS dump with fx fy fz columns
    (DP-GEN's ``model_devi_f_avg_relative`` divides the force deviations by it)."""
    total, count = 0.0, 0
    cols: list[int] = []
    with Path(traj).open() as fh:
        for line in fh:
            if line.startswith("ITEM: ATOMS"):
                names = line.split()[2:]
                if not {"fx", "fy", "fz"} <= set(names):
                    raise ValueError(f"{traj}: the dump has no fx fy fz columns")
                cols = [names.index(c) for c in ("fx", "fy", "fz")]
            elif line.startswith("ITEM:"):
                cols = []
            elif cols:
                words = line.split()
                if len(words) > max(cols):
                    total += sum(float(words[c]) ** 2 for c in cols)
                    count += 1
    if count == 0:
        raise ValueError(f"{traj}: no atoms with forces")
    return float(np.sqrt(total / count))
