"""What every simplify step gets: the work dir, the iteration, the settings, RNG, dispatch, ledger."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.config.machine import MachineSettings
from dpgen_ng.config.simplify import SimplifyParams
from dpgen_ng.dispatch import Dispatcher
from dpgen_ng.errors import StageError
from dpgen_ng.io import atomic_write_json, relink
from dpgen_ng.ledger import Ledger
from dpgen_ng.record import STAGE_DIRS, iter_name
from dpgen_ng.rng import stage_rng

# names as in DP-GEN's simplify (01.model_devi) and ours
PICKED = "data.picked"  # frames picked in this iteration (to be labeled, or labeled)
REST = "data.rest"  # frames left for the next iteration (candidates not picked, and failed ones)
ACCURATE = "data.accurate"  # frames the committee predicts well: dropped from the search
EXAMINED = "data.rest.old"  # link to the previous iteration's rest: what the models are run on
FRAMES = "frames.json"  # frame ids (into pick_data) of each set above, and the counts
LABELED_DATA = "data.000"  # 02.fp: the picked frames with labels (what later iterations train on)
FINAL_DATA = "data.simplified"  # in the work dir: every picked, labeled frame (deepmd/npy)
SUMMARY = "simplify.json"  # in the work dir: per iteration counts and why the run stopped


@dataclass(frozen=True)
class SimplifyContext:
    workdir: Path
    iteration: int
    params: SimplifyParams
    machines: MachineSettings
    ledger: Ledger

    @property
    def iter_dir(self) -> Path:
        return self.workdir / iter_name(self.iteration)

    def stage_dir(self, index: int, iteration: int | None = None) -> Path:
        it = self.iteration if iteration is None else iteration
        return self.workdir / iter_name(it) / STAGE_DIRS[index]

    def rng(self, stage: str, *extra: int) -> np.random.Generator:
        return stage_rng(self.params.seed, self.iteration, stage, *extra)

    def dispatcher(self, stage: str) -> Dispatcher:
        return Dispatcher(self.workdir, self.machines[stage], self.ledger)

    def resolve(self, path: str, prefix: str = "") -> Path:
        from dpgen_ng.config.simplify import resolve

        return resolve(self.workdir, path, prefix)


def link_rel(link: Path, target: Path) -> None:
    """``link`` → ``target`` as a relative symlink (the work dir can be moved)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    relink(link, os.path.relpath(target.resolve(), link.parent.resolve()))


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)


def read_json(path: Path, step: str) -> Any:
    if not path.is_file():
        raise StageError(f"{path} is missing: the {step} step did not complete")
    return json.loads(path.read_text())
