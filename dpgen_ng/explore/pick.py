"""Which candidates of a system get labeled (``fp_pick``): small strategies behind one protocol.

The stage (``stages/fp.py``) classifies the frames, applies the sanity filters and DP-GEN's
accurate-ratio budget; a strategy then sees only the candidates that are left (deviations,
trajectory of origin, a tie-breaking order and, when it asks for them, per-frame structural
fingerprints) and the budget, and returns which of them to label. Pure numpy, no file I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dpgen_ng.registry import Registry

CHUNK = 4096  # candidates per block of the distance computation (bounds the memory)


@dataclass(frozen=True)
class Candidates:
    """The candidates of one system.

    ``devi``: max force deviation; ``origin``: index of the MD task the frame comes from;
    ``order``: a total order used to break ties (task × rows + row), so picks never depend on
    the order of the input; ``features``: one fingerprint per candidate (n, d), given only to
    strategies that ask for them; ``known``: fingerprints of frames already in the training set.
    """

    devi: np.ndarray
    origin: np.ndarray
    order: np.ndarray
    features: np.ndarray | None = None
    known: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.devi.size)


class Picker(ABC):
    """A selection strategy: ``pick`` returns ``min(budget, len(cand))`` distinct indices into
    ``cand``; all randomness comes from ``rng``."""

    name: ClassVar[str]
    needs_features: ClassVar[bool] = False

    @abstractmethod
    def pick(self, cand: Candidates, budget: int, rng: np.random.Generator) -> np.ndarray: ...


PICKERS: Registry[Picker] = Registry("fp_pick strategy")


def picker(name: str) -> Picker:
    return PICKERS[name]()


@PICKERS.register("random")
class RandomPick(Picker):
    """DP-GEN's behaviour: a uniform draw without replacement."""

    def pick(self, cand: Candidates, budget: int, rng: np.random.Generator) -> np.ndarray:
        k = min(budget, len(cand))
        return rng.choice(len(cand), size=k, replace=False) if k else np.zeros(0, dtype=int)


@PICKERS.register("max-devi")
class MaxDeviPick(Picker):
    """The highest deviations first (DPGEN2's fixed-levels-max-select); ties by ``order``."""

    def pick(self, cand: Candidates, budget: int, rng: np.random.Generator) -> np.ndarray:
        k = min(budget, len(cand))
        ranked = np.lexsort((cand.order, -np.asarray(cand.devi, dtype=float)))
        return ranked[:k]


def _sq_dist_to_set(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Squared distance of every row of ``x`` to its nearest row of ``ref`` (blocked)."""
    out = np.empty(len(x))
    ref_sq = np.einsum("ij,ij->i", ref, ref)
    for a in range(0, len(x), CHUNK):
        block = x[a:a + CHUNK]
        d = np.einsum("ij,ij->i", block, block)[:, None] + ref_sq[None, :] - 2.0 * block @ ref.T
        out[a:a + CHUNK] = np.maximum(d.min(axis=1), 0.0)
    return out


def farthest_points(x: np.ndarray, k: int, known: np.ndarray | None, first: int,
                    weight: np.ndarray | None = None) -> np.ndarray:
    """Greedy farthest-point sampling of ``k`` rows of ``x``.

    Each step takes the row whose distance to everything chosen so far (and to ``known``) is
    largest, times ``weight`` when given; ties go to the lowest index. Without ``known`` the
    first row is ``first``. O(k·n·d) time, O(n) memory beyond ``x``.
    """
    n = len(x)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=int)
    x = np.asarray(x, dtype=float)
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=float)
    if known is not None and len(known):
        nearest = _sq_dist_to_set(x, np.asarray(known, dtype=float))
    else:
        nearest = np.full(n, np.inf)
    chosen = np.empty(k, dtype=int)
    taken = np.zeros(n, dtype=bool)
    for i in range(k):
        if i == 0 and not np.isfinite(nearest).any():
            j = first
        else:
            score = np.where(taken, -1.0, np.sqrt(nearest) * w)
            j = int(np.argmax(score))
        chosen[i] = j
        taken[j] = True
        diff = x - x[j]
        nearest = np.minimum(nearest, np.einsum("ij,ij->i", diff, diff))
    return chosen


def _scaled(cand: Candidates) -> tuple[np.ndarray, np.ndarray | None]:
    """Fingerprints (and the known ones) standardised per component with the candidates' spread,
    so that no descriptor component dominates the distance by its units alone."""
    if cand.features is None:
        raise ValueError("this strategy needs fingerprints (features) of the candidates")
    x = np.asarray(cand.features, dtype=float)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    known = None if cand.known is None else (np.asarray(cand.known, dtype=float) - mean) / std
    return (x - mean) / std, known


@PICKERS.register("fps")
class FarthestPointPick(Picker):
    """Farthest-point sampling on the fingerprints: picks spread over configuration space and far
    from the training frames. Without training frames the first pick is a seeded draw."""

    needs_features = True

    def pick(self, cand: Candidates, budget: int, rng: np.random.Generator) -> np.ndarray:
        if not len(cand) or budget <= 0:
            return np.zeros(0, dtype=int)
        x, known = _scaled(cand)
        return farthest_points(x, budget, known, int(rng.integers(len(cand))))


@PICKERS.register("fps-devi")
class DeviWeightedFarthestPointPick(Picker):
    """Farthest-point sampling with each distance weighted by the frame's deviation (relative to
    the largest): far from what is known *and* uncertain."""

    needs_features = True

    def pick(self, cand: Candidates, budget: int, rng: np.random.Generator) -> np.ndarray:
        if not len(cand) or budget <= 0:
            return np.zeros(0, dtype=int)
        x, known = _scaled(cand)
        devi = np.asarray(cand.devi, dtype=float)
        weight = devi / devi.max() if devi.max() > 0 else None
        first = int(np.lexsort((cand.order, -devi))[0])  # the most uncertain frame
        return farthest_points(x, budget, known, first, weight)
