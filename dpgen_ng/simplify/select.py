"""Picking frames, pure numpy (no I/O): DP-GEN's simplify rules.

Per frame and per active criterion (force and energy deviation of the committee; with the
``true_error_*`` keys also its real force and energy error): failed if the value is ≥ trust_hi or
not finite, candidate if trust_lo ≤ value < trust_hi, accurate below trust_lo. A frame failed by
any criterion is failed; else candidate by any criterion is a candidate; else accurate.
Of the candidates, ``iter_pick_number`` are drawn uniformly without replacement; the rest of the
candidates and the failed frames are examined again next iteration; accurate frames are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpgen_ng.config.simplify import SimplifyParams, Trust
from dpgen_ng.explore.select import ACCURATE, CANDIDATE, FAILED
from dpgen_ng.explore.select import Trust as FrameTrust
from dpgen_ng.explore.select import classify as classify_force

__all__ = ["ACCURATE", "CANDIDATE", "FAILED", "Outcome", "classify", "criteria", "init_pick", "pick"]


def criteria(params: SimplifyParams, cols: dict[str, np.ndarray]) -> list[tuple[np.ndarray, Trust]]:
    """The (values, trust levels) pairs that judge the frames. ``cols`` holds ``max_devi_f`` and
    ``devi_e`` of the committee, and ``err_f`` / ``err_e`` (its real error) when the true error
    is judged."""
    out = [(cols["max_devi_f"], params.f_trust)]
    if params.e_trust.active:
        out.append((cols["devi_e"], params.e_trust))
    if params.true_f_trust.active:
        out.append((cols["err_f"], params.true_f_trust))
    if params.true_e_trust.active:
        out.append((cols["err_e"], params.true_e_trust))
    return out


def classify(pairs: list[tuple[np.ndarray, Trust]]) -> np.ndarray:
    """Class codes (ACCURATE / CANDIDATE / FAILED) per frame; the worst class over the criteria."""
    codes = []
    for values, trust in pairs:
        values = np.asarray(values, dtype=float)
        codes.append(classify_force(values, np.zeros_like(values), FrameTrust(trust.lo, trust.hi)))
    return np.maximum.reduce(codes).astype(np.int8)


@dataclass(frozen=True)
class Outcome:
    """What one iteration did with the frames it examined (sorted frame ids)."""

    picked: np.ndarray
    rest: np.ndarray
    accurate: np.ndarray
    failed: np.ndarray
    n_candidate: int

    @property
    def converged(self) -> bool:
        """No candidate left: nothing more to learn from the data (DP-GEN stops here too)."""
        return self.n_candidate == 0

    def counts(self) -> dict[str, int]:
        return {"examined": int(self.picked.size + self.rest.size + self.accurate.size),
                "candidate": self.n_candidate, "picked": int(self.picked.size),
                "accurate": int(self.accurate.size), "failed": int(self.failed.size),
                "rest": int(self.rest.size)}


def init_pick(total: int, number: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Iteration 0: ``number`` frame ids of ``range(total)`` at random, and the others."""
    order = rng.permutation(total)
    return np.sort(order[:number]), np.sort(order[number:])


def pick(ids: np.ndarray, codes: np.ndarray, number: int, rng: np.random.Generator) -> Outcome:
    """Draw at most ``number`` of the candidates among ``ids`` (codes from :func:`classify`)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.shape != codes.shape:
        raise ValueError(f"{ids.size} frame ids for {codes.size} class codes")
    cand = ids[codes == CANDIDATE]
    chosen = np.zeros(cand.size, dtype=bool)
    if cand.size:
        chosen[rng.choice(cand.size, size=min(number, cand.size), replace=False)] = True
    failed = ids[codes == FAILED]
    return Outcome(picked=np.sort(cand[chosen]), rest=np.sort(np.concatenate([cand[~chosen], failed])),
                   accurate=np.sort(ids[codes == ACCURATE]), failed=np.sort(failed),
                   n_candidate=int(cand.size))
