"""Reading ``model_devi.out`` (written by the DeePMD pair style) into columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Deviation:
    """Per-frame deviations of one task: ``step``, ``max_devi_v``, ``max_devi_f`` (1-D arrays)."""

    step: np.ndarray
    max_devi_v: np.ndarray
    max_devi_f: np.ndarray

    def __len__(self) -> int:
        return int(self.step.size)


def read_model_devi(path: Path) -> Deviation:
    """Columns by header name when a header exists, else DP-GEN's fixed positions (0, 1, 4).

    A single row, extra columns (devi_e, per-atom) and an empty file are all handled.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    header = lines[0].lstrip("#").split() if lines and lines[0].startswith("#") else []
    rows = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    data = np.loadtxt(rows, ndmin=2) if rows else np.zeros((0, 0))
    if data.size == 0:
        empty = np.zeros(0)
        return Deviation(empty.astype(int), empty, empty)
    col = {name: i for i, name in enumerate(header)}
    i_step, i_v, i_f = col.get("step", 0), col.get("max_devi_v", 1), col.get("max_devi_f", 4)
    return Deviation(data[:, i_step].astype(np.int64), data[:, i_v], data[:, i_f])


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
