"""Selection strategies (``fp_pick``) on synthetic candidates: pure numpy, no engines."""

from __future__ import annotations

import numpy as np
import pytest

from dpgen_ng.config.param import parse_run_params
from dpgen_ng.errors import UserError
from dpgen_ng.explore.pick import PICKERS, Candidates, farthest_points, picker


def cands(devi, features=None, known=None, origin=None) -> Candidates:
    devi = np.asarray(devi, dtype=float)
    n = devi.size
    return Candidates(devi, np.zeros(n, int) if origin is None else np.asarray(origin), np.arange(n),
                      None if features is None else np.asarray(features, dtype=float),
                      None if known is None else np.asarray(known, dtype=float))


def cloud(n: int = 300, d: int = 6, seed: int = 3) -> Candidates:
    rng = np.random.default_rng(seed)
    return cands(rng.uniform(0.05, 0.2, n), rng.normal(size=(n, d)), rng.normal(size=(20, d)))


def test_registered_names():
    assert PICKERS.names() == ("fps", "fps-devi", "max-devi", "random")


def test_fps_known_answer_on_a_line():
    """Points 0, 0.1, 0.2, 5, 9, 10 with 0 already known: 10 is farthest, then 5 (5 from both 0
    and 10), then 0.2 or 9 — 9 is 1 from 10, 0.2 is 0.2 from 0: 9."""
    x = np.array([[0.0], [0.1], [0.2], [5.0], [9.0], [10.0]])
    assert farthest_points(x, 3, np.array([[0.0]]), first=0).tolist() == [5, 3, 4]
    # with nothing known, the first pick is the one given, then the farthest from it: 0 and 10
    # are both 5 from 5, the tie goes to the lower index
    assert farthest_points(x, 3, None, first=3).tolist() == [3, 0, 5]


def test_fps_spreads_over_clusters():
    """Three tight clusters, budget 3: one pick per cluster, whatever the seed."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    x = np.concatenate([c + 0.01 * rng.normal(size=(50, 2)) for c in centers])
    for seed in range(5):
        picks = picker("fps").pick(cands(np.full(150, 0.1), x), 3, np.random.default_rng(seed))
        assert sorted(p // 50 for p in picks) == [0, 1, 2]


def test_fps_avoids_what_is_known():
    """Two clusters, one of them already in the training set: both picks from the other."""
    x = np.concatenate([np.zeros((10, 2)), np.full((10, 2), 5.0)]) + np.linspace(0, 0.1, 20)[:, None]
    picks = picker("fps").pick(cands(np.full(20, 0.1), x, known=np.zeros((3, 2))), 2,
                               np.random.default_rng(0))
    assert all(p >= 10 for p in picks)


def test_max_devi_highest_first_ties_by_order():
    c = cands([0.1, 0.3, 0.2, 0.3, 0.05])
    assert picker("max-devi").pick(c, 3, np.random.default_rng(0)).tolist() == [1, 3, 2]


def test_fps_devi_prefers_uncertain_of_equally_far():
    """Two points equally far from the first pick; the one with the larger deviation wins."""
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    picks = picker("fps-devi").pick(cands([0.3, 0.1, 0.2], x), 2, np.random.default_rng(0))
    assert picks.tolist() == [0, 2]


@pytest.mark.parametrize("name", PICKERS.names())
def test_budget_seed_and_no_repeats(name):
    c = cloud()
    for budget in (0, 1, 17, 300, 400):
        a = picker(name).pick(c, budget, np.random.default_rng(7))
        b = picker(name).pick(c, budget, np.random.default_rng(7))
        assert a.tolist() == b.tolist()
        assert len(a) == min(budget, len(c)) == np.unique(a).size
        assert np.all((a >= 0) & (a < len(c)))


@pytest.mark.parametrize("name", ["fps", "fps-devi"])
def test_duplicate_frames_are_never_picked_twice(name):
    x = np.zeros((8, 3))  # eight copies of one structure
    picks = picker(name).pick(cands(np.full(8, 0.1), x, known=np.zeros((1, 3))), 5, np.random.default_rng(0))
    assert np.unique(picks).size == 5


def test_random_depends_on_the_seed():
    c = cloud()
    a = picker("random").pick(c, 20, np.random.default_rng(1))
    assert a.tolist() != picker("random").pick(c, 20, np.random.default_rng(2)).tolist()


def test_fps_needs_features():
    with pytest.raises(ValueError, match="fingerprints"):
        picker("fps").pick(cands([0.1, 0.2]), 1, np.random.default_rng(0))


def test_fp_pick_key(example_param):
    assert parse_run_params(example_param).fp_pick == "random"
    assert parse_run_params(dict(example_param, fp_pick="fps")).fp_pick == "fps"
    with pytest.raises(UserError) as info:
        parse_run_params(dict(example_param, fp_pick="cur"))
    assert info.value.where == "fp_pick" and "fps" in info.value.line()
