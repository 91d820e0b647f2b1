"""DeePMD (deepmd/npy) data directories: find systems, count atoms and frames without loading them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def expand_systems(root: Path) -> list[Path]:
    """Every directory at or below ``root`` that holds a ``type.raw`` (sorted)."""
    root = Path(root)
    if (root / "type.raw").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("type.raw"))


def natoms(system: Path) -> int:
    return len((Path(system) / "type.raw").read_text().split())


def nframes(system: Path) -> int:
    """Frames over all ``set.*`` dirs, read from array headers only (memory-mapped)."""
    total = 0
    for s in sorted(Path(system).glob("set.*")):
        box = s / "box.npy"
        coord = s / "coord.npy"
        arr = np.load(box if box.is_file() else coord, mmap_mode="r")
        total += int(arr.shape[0])
    return total


def auto_batch_size(system: Path, spec: int | str) -> int:
    """Resolve "auto" / "auto:N" (batch × natoms ≥ N, N = 32 by default) to an int ≤ nframes."""
    if isinstance(spec, int):
        return spec
    target = int(spec.split(":", 1)[1]) if ":" in spec else 32
    n = natoms(system)
    bs = -(-target // n)
    return max(1, min(bs, nframes(system)))
