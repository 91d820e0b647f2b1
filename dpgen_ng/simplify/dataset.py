"""The dataset to simplify (``pick_data``): its systems, frame ids, and subsets written as deepmd/npy.

A frame is named by one integer id: its system's offset plus its index in that system (systems in
the order ``pick_data`` lists them, each expanded and sorted). Every subset (picked, rest, accurate)
is a sorted array of ids, written as ``sys.SSS`` directories (one per source system, frames in id
order), so that row r of a system's model deviation is the r-th id of that system in the subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata
import numpy as np

from dpgen_ng.config.simplify import SimplifyParams, resolve
from dpgen_ng.data import expand_systems
from dpgen_ng.errors import UserError
from dpgen_ng.io import replace_dir


@dataclass(frozen=True)
class PickData:
    paths: tuple[Path, ...]
    systems: tuple[dpdata.System, ...]
    offsets: np.ndarray  # len(systems) + 1: system s holds ids offsets[s] .. offsets[s+1]-1

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def split(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        """{system index: sorted local frame indices} of ``ids`` (systems without any left out)."""
        ids = np.sort(np.asarray(ids, dtype=np.int64))
        sys_of = np.searchsorted(self.offsets, ids, side="right") - 1
        return {int(s): ids[sys_of == s] - self.offsets[s] for s in np.unique(sys_of)}

    def frame(self, fid: int) -> dpdata.System:
        (s, local), = self.split(np.array([fid])).items()
        return self.systems[s].sub_system(local)

    def describe(self) -> list[dict[str, Any]]:
        return [{"path": str(p), "nframes": s.get_nframes()} for p, s in zip(self.paths, self.systems)]


def system_paths(workdir: Path, params: SimplifyParams) -> list[Path]:
    out: list[Path] = []
    for i, entry in enumerate(params.pick_data):
        found = expand_systems(resolve(workdir, entry))
        if not found:
            raise UserError(f"no deepmd/npy data (no type.raw) under {resolve(workdir, entry)}",
                            f"pick_data[{i}]", "a deepmd/npy system dir or a dir of them")
        out += found
    return out


def _load(path: Path, params: SimplifyParams) -> dpdata.System:
    cls = dpdata.LabeledSystem if params.labeled else dpdata.System
    try:
        return cls(str(path), fmt="deepmd/npy", type_map=list(params.type_map))
    except ValueError as exc:  # an element outside type_map
        raise UserError(f"{path}: {exc}", "type_map", "every element of pick_data") from None
    except dpdata.data_type.DataError as exc:  # labeled: true on data without labels
        raise UserError(f"{path}: {exc}", "labeled",
                        "false (the picked frames are then labeled by fp_style), or labeled data") from None


def load_pick_data(workdir: Path, params: SimplifyParams) -> PickData:
    """Every system of ``pick_data`` (labeled systems when ``labeled``)."""
    paths = system_paths(workdir, params)
    systems = tuple(_load(p, params) for p in paths)
    counts = [s.get_nframes() for s in systems]
    return PickData(tuple(paths), systems, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


def check_same(data: PickData, recorded: list[dict[str, Any]]) -> None:
    """The data on disk is the data the run started from (ids would mean other frames otherwise)."""
    now = data.describe()
    if [r["nframes"] for r in recorded] != [r["nframes"] for r in now]:
        raise UserError("pick_data changed since this run started (other systems or frame counts)",
                        "pick_data", "the data the run started with, or a new work dir")


def write_frames(data: PickData, ids: np.ndarray, out_dir: Path) -> None:
    """``ids`` as ``out_dir/sys.SSS`` deepmd/npy systems (one set each), replacing ``out_dir``."""

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for s, local in data.split(ids).items():
            sub = data.systems[s].sub_system(local)
            sub.to("deepmd/npy", str(tmp / f"sys.{s:03d}"), set_size=max(1, len(local)))

    replace_dir(out_dir, fill)
