"""Supercells, isotropic scaling and random perturbations of a structure (seeded, pure numpy)."""

from __future__ import annotations

import numpy as np


def perturb_cell(cell: np.ndarray, pert_box: float, rng: np.random.Generator) -> np.ndarray:
    """``cell @ (I + E)`` with E symmetric: diagonal in [-pert_box, pert_box), off-diagonal half that."""
    e = rng.uniform(-pert_box, pert_box, size=(3, 3))
    e = np.triu(e) + np.triu(e, 1).T
    off = ~np.eye(3, dtype=bool)
    e[off] *= 0.5
    return cell @ (np.eye(3) + e)


def displace_atoms(coords: np.ndarray, pert_atom: float, rng: np.random.Generator) -> np.ndarray:
    """Move each atom by a random vector uniformly distributed in a ball of radius ``pert_atom``."""
    n = coords.shape[0]
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    length = pert_atom * rng.uniform(0.0, 1.0, size=(n, 1)) ** (1.0 / 3.0)
    return coords + direction * length


def perturbed_frames(
    cell: np.ndarray, coords: np.ndarray, numb: int, pert_box: float, pert_atom: float,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frame 0 is the input unchanged; frames 1..numb are perturbed (atoms follow the cell)."""
    frames = [(cell.copy(), coords.copy())]
    frac = coords @ np.linalg.inv(cell)
    for _ in range(numb):
        new_cell = perturb_cell(cell, pert_box, rng)
        frames.append((new_cell, displace_atoms(frac @ new_cell, pert_atom, rng)))
    return frames
