"""Selection (pure numpy) and reading model_devi.out."""

from __future__ import annotations

import numpy as np
import pytest

from dpgen_ng.explore.devi import read_model_devi
from dpgen_ng.explore.pick import Candidates, RandomPick
from dpgen_ng.explore.select import ACCURATE, CANDIDATE, FAILED, Trust, classify, fp_budget, select_system

HEADER = ("#       step         max_devi_v         min_devi_v         avg_devi_v"
          "         max_devi_f         min_devi_f         avg_devi_f\n")


def test_classify_window_edges_and_nan():
    f = np.array([0.0, 0.049, 0.05, 0.1, 0.1499, 0.15, 3.0, np.nan, np.inf])
    codes = classify(f, np.zeros_like(f), Trust(0.05, 0.15))
    assert codes.tolist() == [ACCURATE, ACCURATE, CANDIDATE, CANDIDATE, CANDIDATE, FAILED, FAILED,
                              FAILED, FAILED]


def test_classify_virial_window():
    f = np.array([0.01, 0.01, 0.1, 0.01])
    v = np.array([0.01, 0.5, 2.0, np.nan])
    codes = classify(f, v, Trust(0.05, 0.15, 0.2, 1.0))
    # virial candidate; failed on virial although f is a candidate; NaN virial fails
    assert codes.tolist() == [ACCURATE, CANDIDATE, FAILED, FAILED]
    # without a virial window the virial column is ignored
    assert classify(f, v, Trust(0.05, 0.15)).tolist() == [ACCURATE, ACCURATE, CANDIDATE, ACCURATE]


@pytest.mark.parametrize("ratio,expected", [(0.0, 10), (0.5, 10), (0.9, 10), (0.95, 5), (0.99, 0), (1.0, 0)])
def test_fp_budget(ratio, expected):
    assert fp_budget(ratio, 10, soft=0.9, hard=0.99) == pytest.approx(expected, abs=1)


def test_fp_budget_soft_equals_hard():
    assert fp_budget(0.5, 7, 1.0, 1.0) == 7
    assert fp_budget(1.0, 7, 1.0, 1.0) == 0


def uniform(seed: int):
    """DP-GEN's draw: ``choose`` backed by the ``random`` strategy."""
    rng = np.random.default_rng(seed)
    return lambda idx, k: RandomPick().pick(Candidates(np.zeros(idx.size), idx, idx), k, rng)


def test_select_system_seeded_sorted_bounded():
    rng_codes = np.random.default_rng(0).integers(0, 3, size=300)
    task = np.repeat(np.arange(3), 100)
    row = np.tile(np.arange(100), 3)
    a = select_system(task, row, rng_codes, 20, 1.0, 1.0, uniform(5))
    b = select_system(task, row, rng_codes, 20, 1.0, 1.0, uniform(5))
    assert np.array_equal(a.picked, b.picked)
    assert a.picked.shape == (20, 2)
    assert a.n_accurate + a.n_candidate + a.n_failed == 300
    keys = a.picked[:, 0] * 1000 + a.picked[:, 1]
    assert np.all(np.diff(keys) > 0)  # sorted, unique
    assert all(rng_codes[t * 100 + r] == CANDIDATE for t, r in a.picked)
    c = select_system(task, row, rng_codes, 20, 1.0, 1.0, uniform(6))
    assert not np.array_equal(a.picked, c.picked)


def test_random_strategy_draws_what_dp_gen_semantics_drew():
    """The default ``fp_pick`` keeps the picks of earlier releases (one seed, same frames)."""
    codes = np.random.default_rng(1).integers(0, 3, size=500)
    task, row = np.repeat(np.arange(5), 100), np.tile(np.arange(100), 5)
    cand = np.flatnonzero(codes == CANDIDATE)
    before = np.sort(np.random.default_rng(9).choice(cand, size=30, replace=False))
    now = select_system(task, row, codes, 30, 1.0, 1.0, uniform(9))
    assert now.picked.tolist() == np.stack([task[before], row[before]], axis=1).tolist()


def test_select_fewer_candidates_than_budget_and_empty():
    codes = np.array([CANDIDATE, ACCURATE, CANDIDATE])
    s = select_system(np.zeros(3, int), np.arange(3), codes, 10, 1.0, 1.0, uniform(0))
    assert s.picked.tolist() == [[0, 0], [0, 2]]
    e = select_system(np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.int8), 10, 1.0, 1.0,
                      uniform(0))
    assert e.picked.shape == (0, 2) and e.n_total == 0


def test_read_model_devi_single_row_and_columns(tmp_path):
    p = tmp_path / "model_devi.out"
    p.write_text(HEADER + "0 1.0e-2 1e-3 2e-3 0.2 0.1 0.15\n")
    d = read_model_devi(p)
    assert d.step.tolist() == [0] and d.max_devi_f.tolist() == [0.2] and d.max_devi_v.tolist() == [0.01]
    p.write_text(HEADER + "0 1 2 3 4 5 6\n10 1 2 3 7 5 6\n")
    assert read_model_devi(p).max_devi_f.tolist() == [4, 7]


def test_read_model_devi_extra_devi_e_column_by_header(tmp_path):
    p = tmp_path / "md.out"
    p.write_text("# step max_devi_v min_devi_v avg_devi_v max_devi_f min_devi_f avg_devi_f devi_e\n"
                 "0 0.1 0 0 0.3 0 0 0.01\n")
    d = read_model_devi(p)
    assert d.max_devi_f.tolist() == [0.3] and len(d) == 1


def test_read_model_devi_empty(tmp_path):
    p = tmp_path / "md.out"
    p.write_text(HEADER)
    assert len(read_model_devi(p)) == 0
