"""init_bulk's perturbations: frame 0 unperturbed, amplitudes bounded, seeded."""

from __future__ import annotations

import numpy as np

from dpgen_ng.initbulk.perturb import displace_atoms, perturb_cell, perturbed_frames


def test_frame_zero_is_unperturbed_and_seeded():
    cell = np.eye(3) * 10
    coords = np.random.default_rng(1).uniform(0, 10, size=(5, 3))
    a = perturbed_frames(cell, coords, 4, 0.03, 0.1, np.random.default_rng(3))
    b = perturbed_frames(cell, coords, 4, 0.03, 0.1, np.random.default_rng(3))
    assert len(a) == 5
    assert np.array_equal(a[0][0], cell) and np.array_equal(a[0][1], coords)
    for (c1, x1), (c2, x2) in zip(a, b):
        assert np.array_equal(c1, c2) and np.array_equal(x1, x2)
    assert not np.allclose(a[1][1], coords)


def test_amplitudes_bounded():
    rng = np.random.default_rng(0)
    cell = np.diag([4.0, 5.0, 6.0])
    for _ in range(200):
        strain = np.linalg.solve(cell, perturb_cell(cell, 0.03, rng)) - np.eye(3)
        assert np.allclose(strain, strain.T)
        assert np.all(np.abs(np.diag(strain)) <= 0.03)
        assert np.all(np.abs(strain[~np.eye(3, dtype=bool)]) <= 0.015)
    coords = np.zeros((1000, 3))
    moved = np.linalg.norm(displace_atoms(coords, 0.2, rng), axis=1)
    assert moved.max() <= 0.2 and moved.max() > 0.15


def test_atoms_follow_the_cell_when_pert_atom_is_zero():
    cell = np.eye(3) * 10
    coords = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    frames = perturbed_frames(cell, coords, 3, 0.05, 0.0, np.random.default_rng(2))
    frac = coords / 10
    for c, x in frames[1:]:
        assert np.allclose(x, frac @ c)
