"""Per-frame structural fingerprints for the ``fp_pick`` strategies (``explore/pick.py``).

A fingerprint is the current model's DeePMD-kit descriptor averaged over the atoms of each
element (``train/worker.py``: ``fingerprints``). All frames of one call go to one child process,
so TensorFlow starts once per iteration, whatever the number of systems and trajectories.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dpdata
import numpy as np

from dpgen_ng.train.evaluate import run_worker

KNOWN_MAX = 1000  # training frames sampled as "already known" (bounds the cost as data grows)


@dataclass(frozen=True)
class FrameSet:
    """Frames of one atom list: coords (frames, atoms, 3), cells (frames, 3, 3) or None (no PBC),
    atom types (atoms,) as indices into the type map."""

    coords: np.ndarray
    cells: np.ndarray | None
    types: np.ndarray


def compute(model: Path, type_map: Sequence[str], groups: dict[str, FrameSet]) -> dict[str, np.ndarray]:
    """The fingerprints of every group, shape (frames, elements × descriptor size)."""
    groups = {k: g for k, g in groups.items() if len(g.coords)}
    if not groups:
        return {}
    with tempfile.TemporaryDirectory(prefix="dpgen_ng-fingerprints-") as tmp:
        frames, out = Path(tmp) / "frames.npz", Path(tmp) / "fingerprints.npz"
        arrays: dict[str, np.ndarray] = {}
        for name, g in groups.items():
            arrays[f"{name}.coords"] = np.asarray(g.coords, dtype=float)
            arrays[f"{name}.cells"] = np.zeros(0) if g.cells is None else np.asarray(g.cells, dtype=float)
            arrays[f"{name}.types"] = np.asarray(g.types, dtype=int)
        np.savez(frames, **arrays)
        run_worker({"task": "fingerprints", "model": str(Path(model).resolve()), "type_map": list(type_map),
                    "groups": sorted(groups), "frames": str(frames), "out": str(out)})
        with np.load(out) as data:
            return {name: data[name] for name in groups}


def known_frames(systems: Sequence[Path], type_map: Sequence[str], rng: np.random.Generator,
                 cap: int = KNOWN_MAX) -> list[FrameSet]:
    """A seeded sample of at most ``cap`` frames of the training systems (deepmd/npy)."""
    loaded = [dpdata.System(str(s), fmt="deepmd/npy", type_map=list(type_map)) for s in systems]
    sizes = np.array([s.get_nframes() for s in loaded], dtype=int)
    total = int(sizes.sum())
    if total == 0:
        return []
    take = np.sort(rng.choice(total, size=min(cap, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for s, a, b in zip(loaded, starts[:-1], starts[1:], strict=True):
        rows = take[(take >= a) & (take < b)] - a
        if rows.size:
            out.append(FrameSet(s["coords"][rows], None if s.nopbc else s["cells"][rows],
                                np.asarray(s["atom_types"])))
    return out
