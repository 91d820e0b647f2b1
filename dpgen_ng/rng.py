"""All randomness comes from here: one seeded generator per (seed, iteration, stage, ...)."""

from __future__ import annotations

import zlib

import numpy as np

STAGE_KEYS = {"train": 0, "model_devi": 1, "fp": 2, "init_bulk": 3}


def stage_rng(seed: int, iteration: int, stage: str, *extra: int) -> np.random.Generator:
    """A generator that depends only on its arguments, so a re-made step draws the same numbers."""
    key = STAGE_KEYS.get(stage)
    if key is None:
        key = zlib.crc32(stage.encode())
    return np.random.default_rng(np.random.SeedSequence([seed, iteration, key, *extra]))


def draw_seed(rng: np.random.Generator) -> int:
    """A seed for an external program (DeePMD, LAMMPS): positive, fits in 31 bits."""
    return int(rng.integers(1, 2**31 - 1))
