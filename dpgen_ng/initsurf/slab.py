"""Unit cells, slabs and elongation for init_surf.

The unit cells are DP-GEN's, since Miller indices refer to their basis vectors: the cubic
conventional cells of ``sc``, ``bcc`` and ``fcc`` (lattice constant ``latt``); ``hcp`` with
a1 = (a, 0, 0), a2 = (a/2, a√3/2, 0) (60° apart), ideal c = a·√(8/3) along z and
a = latt/√2 (``latt`` is the cubic constant of the fcc crystal with the same nearest-neighbour
distance); ``diamond`` as the fcc primitive cell latt·(0,1,1), latt·(1,0,1), latt·(1,1,0) with
atoms at ±(1/8, 1/8, 1/8) (cubic constant 2·latt).

A slab is ASE's ``surface(unit, miller, layers, vacuum)``: ``layers`` repeats of the unit
cell's surface cell along the normal (for fcc(111) one atomic plane each, for fcc(100) two),
c along z, ``vacuum`` Å of empty space below and above (a gap of 2·vacuum to the image).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import numpy as np
from ase import Atoms
from ase.build import surface

from dpgen_ng.initbulk.crystal import CELLS
from dpgen_ng.structures import read_poscar

MAX_LAYERS = 50  # z_min: the slab grows one layer at a time up to this many (as in DP-GEN)

_R3 = np.sqrt(3.0)
# cell_type -> (basis in units of a, fractional sites, a / latt)
UNIT_CELLS = MappingProxyType({
    "sc": (*CELLS["sc"], 1.0),
    "bcc": (*CELLS["bcc"], 1.0),
    "fcc": (*CELLS["fcc"], 1.0),
    "hcp": (np.array([[1.0, 0, 0], [0.5, _R3 / 2, 0], [0, 0, np.sqrt(8.0 / 3.0)]]),
            [[0, 0, 0], [1 / 3, 1 / 3, 0.5]], 1 / np.sqrt(2.0)),
    "diamond": (np.array([[0, 1.0, 1.0], [1.0, 0, 1.0], [1.0, 1.0, 0]]),
                [[0.125, 0.125, 0.125], [0.875, 0.875, 0.875]], 1.0),
})


def unit_cell(cell_type: str, latt: float) -> Atoms:
    """The unit cell of ``cell_type`` with anonymous sites (symbol X)."""
    basis, frac, a_per_latt = UNIT_CELLS[cell_type]
    cell = np.asarray(basis, dtype=float) * latt * a_per_latt
    return Atoms(["X"] * len(frac), scaled_positions=np.asarray(frac, dtype=float), cell=cell, pbc=True)


def poscar_atoms(poscar: Path, elements: tuple[str, ...]) -> Atoms:
    """A POSCAR (species among ``elements``) as ASE atoms."""
    system = read_poscar(poscar, "from_poscar_path", list(elements))
    symbols = [system["atom_names"][t] for t in system["atom_types"]]
    return Atoms(symbols, positions=system["coords"][0], cell=system["cells"][0], pbc=True)


def surf_name(miller: tuple[int, ...]) -> str:
    """DP-GEN's directory name: ``surf-111``, ``surf-1-10`` for (1, -1, 0)."""
    return "surf-" + "".join(str(i) for i in miller)


def slab_for(unit: Atoms, miller: tuple[int, int, int], vacuum: float, layer_numb: int | None,
             z_min: float | None) -> tuple[Atoms, int]:
    """The slab and its layer count: ``layer_numb`` layers, or the fewest (up to MAX_LAYERS)
    whose cell height, vacuum included, reaches ``z_min`` (DP-GEN's rule). ValueError when none
    does."""
    if layer_numb is not None:
        return surface(unit, miller, layer_numb, vacuum=vacuum), layer_numb
    assert z_min is not None
    for layers in range(1, MAX_LAYERS + 1):
        slab = surface(unit, miller, layers, vacuum=vacuum)
        if slab.cell.lengths()[2] >= z_min:
            return slab, layers
    raise ValueError(f"{surf_name(miller)}: {MAX_LAYERS} layers are {slab.cell.lengths()[2]:.2f} Å high "
                     f"(vacuum included), below z_min {z_min}")


def elongate(cell: np.ndarray, coords: np.ndarray, elong: float) -> tuple[np.ndarray, np.ndarray]:
    """Lengthen the c vector by ``elong`` Å (along itself) and centre the atoms' mean z at half
    the new c length, as DP-GEN does."""
    cell = np.array(cell, dtype=float)
    coords = np.array(coords, dtype=float)
    length = np.linalg.norm(cell[2])
    cell[2] *= 1.0 + elong / length
    coords[:, 2] += np.linalg.norm(cell[2]) / 2 - coords[:, 2].mean()
    return cell, coords
