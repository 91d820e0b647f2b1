"""Sanity filters applied to candidates before labeling (pure numpy, vectorised over frames).

``bad_box`` follows DP-GEN's ``fp_skip_bad_box`` criteria; ``too_close`` rejects frames with two
atoms closer than a minimum distance per element pair (minimum-image convention, exact for
distances below half the smallest cell height).
"""

from __future__ import annotations

import numpy as np

BOX_CRITERIA = ("length_ratio", "height_ratio", "wrap_ratio", "tilt_ratio")


def _heights(cells: np.ndarray) -> np.ndarray:
    """Distances between opposite faces, shape (n, 3)."""
    vol = np.abs(np.linalg.det(cells))
    out = []
    for i, j in ((0, 1), (1, 2), (2, 0)):
        out.append(vol / np.linalg.norm(np.cross(cells[:, i], cells[:, j]), axis=1))
    return np.stack(out, axis=1)


def bad_box(cells: np.ndarray, criteria: dict[str, float]) -> np.ndarray:
    """True where a cell fails any criterion (``value`` is the largest ratio allowed)."""
    cells = np.asarray(cells, dtype=float).reshape(-1, 3, 3)
    lengths = np.linalg.norm(cells, axis=2)
    bad = np.zeros(len(cells), dtype=bool)
    for key, limit in criteria.items():
        if key == "length_ratio":
            ratio = lengths.max(axis=1) / lengths.min(axis=1)
        elif key == "height_ratio":
            ratio = lengths.max(axis=1) / _heights(cells).min(axis=1)
        elif key == "wrap_ratio":
            ratio = np.abs(np.stack([cells[:, 1, 0] / cells[:, 0, 0], cells[:, 2, 1] / cells[:, 1, 1],
                                     cells[:, 2, 0] / cells[:, 0, 0]], axis=1)).max(axis=1)
        elif key == "tilt_ratio":
            ratio = np.abs(np.stack([cells[:, 1, 0] / cells[:, 1, 1], cells[:, 2, 1] / cells[:, 2, 2],
                                     cells[:, 2, 0] / cells[:, 2, 2]], axis=1)).max(axis=1)
        else:
            raise ValueError(f"unknown box criterion {key!r}")
        bad |= ratio > limit
    return bad


def min_distance_table(ntypes: int, pairs: dict[tuple[int, int], float]) -> np.ndarray:
    table = np.zeros((ntypes, ntypes))
    for (a, b), d in pairs.items():
        table[a, b] = table[b, a] = d
    return table


def too_close(coords: np.ndarray, cells: np.ndarray, types: np.ndarray, table: np.ndarray) -> np.ndarray:
    """True where some pair of atoms i < j is closer than ``table[type_i, type_j]``."""
    coords = np.asarray(coords, dtype=float)
    cells = np.asarray(cells, dtype=float)
    n = coords.shape[1]
    if n < 2:
        return np.zeros(len(coords), dtype=bool)
    inv = np.linalg.inv(cells)
    frac = np.einsum("fij,fjk->fik", coords, inv)
    delta = frac[:, :, None, :] - frac[:, None, :, :]
    delta -= np.round(delta)
    dist = np.linalg.norm(np.einsum("fabj,fjk->fabk", delta, cells), axis=-1)
    limit = table[types[:, None], types[None, :]]
    iu = np.triu_indices(n, k=1)
    return (dist[:, iu[0], iu[1]] < limit[iu]).any(axis=1)
