"""Candidate selection: pure numpy over all frames of one system, no file I/O.

Classification of one frame (``f`` = max force deviation, ``v`` = max virial deviation):
failed if ``f ≥ f_hi`` (or ``v ≥ v_hi`` when a virial window is set) or the value is not
finite; otherwise candidate if ``f ≥ f_lo`` (or ``v ≥ v_lo``); otherwise accurate.
(DP-GEN lets "candidate" win over "failed" when only one criterion fails; we do not.)

With an adaptive lower level (:func:`classify_adaptive`, DP-GEN's ``model_devi_adapt_trust_lo``)
the candidates are instead the N frames of highest deviation below the upper level, and trust_lo
becomes the deviation of the last of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ACCURATE, CANDIDATE, FAILED, SKIPPED = 0, 1, 2, 3  # SKIPPED: a candidate a sanity filter rejected


@dataclass(frozen=True)
class Trust:
    """Trust levels of force and virial deviation (virial: None = off); ``adapted``: the lower
    levels came from the data (:func:`classify_adaptive`)."""

    f_lo: float
    f_hi: float
    v_lo: float | None = None
    v_hi: float | None = None
    adapted: bool = False


def classify(max_f: np.ndarray, max_v: np.ndarray, trust: Trust) -> np.ndarray:
    """Per-frame class codes (ACCURATE / CANDIDATE / FAILED)."""
    max_f = np.asarray(max_f, dtype=float)
    max_v = np.asarray(max_v, dtype=float)
    failed = ~np.isfinite(max_f) | (max_f >= trust.f_hi)
    cand = max_f >= trust.f_lo
    if trust.v_hi is not None and trust.v_lo is not None:
        failed |= ~np.isfinite(max_v) | (max_v >= trust.v_hi)
        cand |= max_v >= trust.v_lo
    codes = np.full(max_f.shape, ACCURATE, dtype=np.int8)
    codes[cand] = CANDIDATE
    codes[failed] = FAILED
    return codes


@dataclass(frozen=True)
class AdaptiveTrust:
    """How many frames below trust_hi become candidates: max(numb, perc % of them), per quantity."""

    numb_f: int = 10
    perc_f: float = 0.0
    numb_v: int = 0
    perc_v: float = 0.0


def _top(values: np.ndarray, order: np.ndarray, ok: np.ndarray, numb: int, perc: float,
         hi: float) -> tuple[np.ndarray, float]:
    """The ``ok`` frames with the highest ``values`` (ties broken by ``order``) and the level of
    the lowest of them (``hi`` when there are none)."""
    idx = np.flatnonzero(ok)
    n = min(max(numb, int(perc * 0.01 * idx.size)), idx.size)
    chosen = np.zeros(values.shape, dtype=bool)
    if n == 0:
        return chosen, hi
    ranked = idx[np.lexsort((order[idx], values[idx]))]
    chosen[ranked[-n:]] = True
    return chosen, float(values[ranked[-n]])


def classify_adaptive(max_f: np.ndarray, max_v: np.ndarray, order: np.ndarray, f_hi: float,
                      v_hi: float | None, adapt: AdaptiveTrust) -> tuple[np.ndarray, Trust]:
    """Codes with an adaptive lower level, and the levels that resulted.

    ``order`` breaks ties between equal deviations (e.g. task × rows + row), so the outcome does
    not depend on the order of the input. Without a virial window (``v_hi`` None) only the force
    deviation counts.
    """
    max_f = np.asarray(max_f, dtype=float)
    max_v = np.asarray(max_v, dtype=float)
    order = np.asarray(order)
    failed = ~np.isfinite(max_f) | (max_f >= f_hi)
    if v_hi is not None:
        failed |= ~np.isfinite(max_v) | (max_v >= v_hi)
    ok = ~failed
    cand, f_lo = _top(max_f, order, ok, adapt.numb_f, adapt.perc_f, f_hi)
    v_lo = None
    if v_hi is not None:
        cand_v, v_lo = _top(max_v, order, ok, adapt.numb_v, adapt.perc_v, v_hi)
        cand |= cand_v
    codes = np.full(max_f.shape, ACCURATE, dtype=np.int8)
    codes[cand] = CANDIDATE
    codes[failed] = FAILED
    return codes, Trust(f_lo, f_hi, v_lo, v_hi, adapted=True)


def fp_budget(accurate_ratio: float, task_max: int, soft: float, hard: float) -> int:
    """DP-GEN's accurate-ratio throttling of the number of frames to label."""
    if accurate_ratio >= hard:
        return 0
    if accurate_ratio < soft or hard <= soft:
        return task_max
    return int(task_max * (accurate_ratio - hard) / (soft - hard))


@dataclass(frozen=True)
class SystemSelection:
    """The outcome for one system: counts and the picked candidates as (task index, frame row)."""

    n_accurate: int
    n_candidate: int
    n_failed: int
    n_skipped: int
    budget: int
    picked: np.ndarray  # shape (k, 2): task index, row index within that task; sorted

    @property
    def n_total(self) -> int:
        return self.n_accurate + self.n_candidate + self.n_failed + self.n_skipped

    @property
    def accurate_ratio(self) -> float:
        return self.n_accurate / self.n_total if self.n_total else 0.0


def budget_of(codes: np.ndarray, task_max: int, soft: float, hard: float) -> int:
    """DP-GEN's label budget of a system whose frames are classified as ``codes`` (0 if none)."""
    total = codes.size
    if not total:
        return 0
    return fp_budget(np.count_nonzero(codes == ACCURATE) / total, task_max, soft, hard)


def select_system(
    task_index: np.ndarray,
    row_index: np.ndarray,
    codes: np.ndarray,
    task_max: int,
    soft: float,
    hard: float,
    choose: Callable[[np.ndarray, int], np.ndarray],
) -> SystemSelection:
    """Count classes, work out the budget, and let ``choose(candidates, k)`` (positions of the
    candidate frames, number to pick) say which ``k`` of them to label (an ``fp_pick`` strategy).

    Frames a filter rejected (SKIPPED) count as candidates for the accurate ratio, but are
    never picked: the budget is filled from the remaining candidates.
    """
    n_acc = int(np.count_nonzero(codes == ACCURATE))
    n_skip = int(np.count_nonzero(codes == SKIPPED))
    cand = np.flatnonzero(codes == CANDIDATE)
    n_fail = int(np.count_nonzero(codes == FAILED))
    budget = budget_of(codes, task_max, soft, hard)
    k = min(budget, cand.size)
    if k == cand.size:  # no choice to make: every candidate (the strategy is not asked)
        chosen = cand
    else:
        chosen = np.sort(cand[np.asarray(choose(cand, k), dtype=int)]) if k else np.zeros(0, dtype=int)
    if np.unique(chosen).size != k:
        raise ValueError(f"a selection strategy returned {np.unique(chosen).size} distinct picks, not {k}")
    picked = np.stack([task_index[chosen], row_index[chosen]], axis=1) if k else np.zeros((0, 2), int)
    order = np.lexsort((picked[:, 1], picked[:, 0])) if k else np.zeros(0, dtype=int)
    return SystemSelection(n_acc, int(cand.size), n_fail, n_skip, budget, picked[order])
