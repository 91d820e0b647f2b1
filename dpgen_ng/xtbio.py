"""xtb command-line flags and its .engrad output (kept light: tasks import it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

METHOD_FLAGS = {"gfn2": "--gfn 2", "gfn1": "--gfn 1", "gfn0": "--gfn 0", "gfnff": "--gfnff"}


def read_engrad(path: Path) -> tuple[float, np.ndarray]:
    """Energy (Hartree) and gradient (Hartree/Bohr, shape natoms×3) from an xtb/ORCA .engrad."""
    values = [ln.split()[0] for ln in Path(path).read_text().splitlines()
              if ln.strip() and not ln.lstrip().startswith("#")]
    natoms = int(values[0])
    energy = float(values[1])
    grad = np.array([float(v) for v in values[2 : 2 + 3 * natoms]])
    if grad.size != 3 * natoms:
        raise ValueError(f"gradient has {grad.size} values, expected {3 * natoms}")
    return energy, grad.reshape(natoms, 3)
