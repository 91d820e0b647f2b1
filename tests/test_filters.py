"""Sanity filters (DP-GEN's fp_skip_bad_box criteria, minimum distances) and their config."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from dpgen_ng.config.param import parse_run_params
from dpgen_ng.errors import UserError
from dpgen_ng.explore.filters import bad_box, min_distance_table, too_close


def test_bad_box_criteria():
    cube = np.eye(3) * 10
    long = np.diag([10.0, 10.0, 60.0])
    sheared = np.array([[10.0, 0, 0], [8.0, 10.0, 0], [0, 0, 10.0]])
    flat = np.array([[10.0, 0, 0], [9.9, 1.0, 0], [0, 0, 10.0]])  # thin: small face distance
    cells = np.stack([cube, long, sheared, flat])
    assert bad_box(cells, {"length_ratio": 5}).tolist() == [False, True, False, False]
    assert bad_box(cells, {"wrap_ratio": 0.5}).tolist() == [False, False, True, True]
    assert bad_box(cells, {"tilt_ratio": 0.5}).tolist() == [False, False, True, True]
    # flat: heights are 1.0, 10, 10 Å; longest edge 14.1 Å → ratio 14.1
    assert bad_box(cells, {"height_ratio": 5}).tolist() == [False, True, False, True]
    assert bad_box(cells, {}).tolist() == [False] * 4


def test_too_close_with_periodic_images():
    cell = np.eye(3) * 10
    types = np.array([0, 0, 1])
    coords = np.array([[[0.2, 5, 5], [9.9, 5, 5], [5, 5, 5]],    # H-H 0.3 Å across the boundary
                       [[1.0, 5, 5], [3.0, 5, 5], [5, 5, 5]]])   # all ≥ 2 Å apart
    table = min_distance_table(2, {(0, 0): 0.5, (0, 1): 1.0})
    assert too_close(coords, np.stack([cell, cell]), types, table).tolist() == [True, False]
    table = min_distance_table(2, {(0, 1): 2.5})  # H-C: 2 Å in frame 2
    assert too_close(coords, np.stack([cell, cell]), types, table).tolist() == [False, True]


def test_filter_config(example_param):
    raw = copy.deepcopy(example_param)
    raw["fp_skip_bad_box"] = "length_ratio:5;height_ratio:5"
    raw["fp_min_distance"] = {"H-H": 0.6, "C-H": 0.8}
    p = parse_run_params(raw)
    assert p.skip_bad_box == {"length_ratio": 5.0, "height_ratio": 5.0}
    assert p.min_distance == {(0, 0): 0.6, (0, 1): 0.8}
    assert p.effective()["min_distance"] == {"H-H": 0.6, "H-C": 0.8}
    raw["fp_min_distance"] = 0.7
    assert parse_run_params(raw).min_distance == {(0, 0): 0.7, (0, 1): 0.7, (1, 1): 0.7}
    raw["fp_skip_bad_box"] = "lenght_ratio:5"
    with pytest.raises(UserError, match="lenght_ratio"):
        parse_run_params(raw)
    raw["fp_skip_bad_box"] = ""
    raw["fp_min_distance"] = {"H-O": 1.0}
    with pytest.raises(UserError, match="H-O"):
        parse_run_params(raw)
