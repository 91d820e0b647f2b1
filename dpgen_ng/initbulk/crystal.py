"""Crystals for init_bulk: conventional cells, supercells, and every composition on the sites."""

from __future__ import annotations

import itertools
from types import MappingProxyType

import dpdata
import numpy as np

# conventional cells (fractional positions); lattice constant a, hcp with the ideal c/a
_SQ = np.sqrt(8.0 / 3.0)
CELLS = MappingProxyType({
    "sc": (np.eye(3), [[0, 0, 0]]),
    "bcc": (np.eye(3), [[0, 0, 0], [0.5, 0.5, 0.5]]),
    "fcc": (np.eye(3), [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]),
    "diamond": (np.eye(3), [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0],
                            [0.25, 0.25, 0.25], [0.25, 0.75, 0.75], [0.75, 0.25, 0.75], [0.75, 0.75, 0.25]]),
    "hcp": (np.array([[1.0, 0, 0], [-0.5, np.sqrt(3) / 2, 0], [0, 0, _SQ]]),
            [[0, 0, 0], [1 / 3, 2 / 3, 0.5]]),
})


def supercell_sites(cell_type: str, latt: float,
                    super_cell: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The supercell (3×3, Å) and its sites (Cartesian, Å), in a fixed order."""
    unit, frac = CELLS[cell_type]
    cell = np.asarray(unit) * latt
    frac = np.asarray(frac, dtype=float)
    shifts = np.array(list(itertools.product(*(range(n) for n in super_cell))), dtype=float)
    sites = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3) / np.asarray(super_cell, dtype=float)
    big = cell * np.asarray(super_cell, dtype=float)[:, None]
    return big, sites @ big


def compositions(nsites: int, nelements: int) -> list[tuple[int, ...]]:
    """Every way to share ``nsites`` among ``nelements`` with at least one atom each (sorted)."""
    if nelements > nsites:
        return []
    out = []
    for cut in itertools.combinations(range(1, nsites), nelements - 1):
        bounds = (0, *cut, nsites)
        out.append(tuple(b - a for a, b in zip(bounds[:-1], bounds[1:])))
    return sorted(out, reverse=True)


def place_elements(
    cell_type: str, latt: float, super_cell: tuple[int, int, int], elements: tuple[str, ...],
    rng: np.random.Generator,
) -> list[tuple[tuple[int, ...], dpdata.System]]:
    """One system per composition, the elements spread over randomly shuffled sites (seeded)."""
    cell, sites = supercell_sites(cell_type, latt, super_cell)
    out = []
    for counts in compositions(len(sites), len(elements)):
        order = rng.permutation(len(sites))
        types = np.repeat(np.arange(len(elements)), counts)
        coords = sites[order]
        data = {
            "atom_names": list(elements), "atom_numbs": list(counts), "atom_types": types,
            "cells": cell[None], "coords": coords[None], "orig": np.zeros(3),
        }
        out.append((counts, dpdata.System(data=data)))
    return out
