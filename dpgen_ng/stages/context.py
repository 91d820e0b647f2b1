"""The per-iteration context handed to every step: paths, settings, RNG, dispatch, ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.config.machine import MachineSettings
from dpgen_ng.config.param import RunParams
from dpgen_ng.dispatch import Dispatcher
from dpgen_ng.errors import StageError
from dpgen_ng.io import atomic_write_json, sync_filesystem
from dpgen_ng.ledger import Ledger
from dpgen_ng.record import (  # noqa: F401 - the file names, where the stages look for them
    LABELS_FILE,
    MANIFEST,
    RESUMED_FILE,
    SELECTION_FILE,
    STAGE_DIRS,
    iter_name,
)
from dpgen_ng.rng import stage_rng


@dataclass(frozen=True)
class IterContext:
    workdir: Path
    iteration: int
    params: RunParams
    machines: MachineSettings
    ledger: Ledger

    @property
    def iter_dir(self) -> Path:
        return self.workdir / iter_name(self.iteration)

    def stage_dir(self, index: int) -> Path:
        return self.iter_dir / STAGE_DIRS[index]

    def iter_path(self, iteration: int) -> Path:
        return self.workdir / iter_name(iteration)

    def rng(self, stage: str, *extra: int) -> np.random.Generator:
        return stage_rng(self.params.seed, self.iteration, stage, *extra)

    def dispatcher(self, stage: str) -> Dispatcher:
        return Dispatcher(self.workdir, self.machines[stage], self.ledger)

    def resolve(self, path: str) -> Path:
        """A path from param.json: absolute, or relative to the work dir (as in DP-GEN)."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.workdir / p


def write_manifest(stage_dir: Path, tasks: list[dict[str, Any]], **extra: Any) -> None:
    """The list of tasks a make step produced; run and post read it (never a directory glob).

    It is the make step's last write: the task files written before it without a sync of their
    own are flushed to disk first, in one call."""
    sync_filesystem(stage_dir)
    atomic_write_json(stage_dir / MANIFEST, {"tasks": tasks, **extra})


def read_manifest(stage_dir: Path) -> dict[str, Any]:
    path = stage_dir / MANIFEST
    if not path.is_file():
        raise StageError(f"{path} is missing: the make step of this stage did not complete")
    return json.loads(path.read_text())
