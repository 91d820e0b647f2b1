"""The labeler protocol: write inputs for one frame, name the command and files, parse labels.

Every labeler returns either a labeled dpdata system (one frame) or a typed :class:`Failure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import dpdata
import numpy as np

from dpgen_ng.config.fields import Field
from dpgen_ng.dispatch.runner import read_task_rc
from dpgen_ng.io import tail

FAILURE_KINDS = ("crashed", "unconverged", "parse_error", "missing_output", "non_finite")
CONF_FILE = "POSCAR"  # every fp task keeps its frame as a POSCAR (type order = type_map)


@dataclass(frozen=True)
class Failure:
    kind: str
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {self.kind!r}")


class Labeler:
    """Base class of all labelers. Subclasses set ``name``, ``KEYS`` and implement the hooks."""

    name: ClassVar[str] = ""
    KEYS: ClassVar[dict[str, Field]] = {}
    outlog: ClassVar[str] = "fp.log"
    errlog: ClassVar[str] = "fp.err"

    def __init__(self, settings: Any, type_map: tuple[str, ...]) -> None:
        self.settings = settings
        self.type_map = tuple(type_map)

    @classmethod
    def parse_settings(cls, raw: dict[str, Any], path: str) -> Any:
        raise NotImplementedError

    # --- per task -------------------------------------------------------------------------
    def write_inputs(self, frame: dpdata.System, task_dir: Path) -> None:
        """Write every input file for one frame into ``task_dir`` (which exists)."""
        raise NotImplementedError

    def command(self, base_command: str) -> str:
        """The shell command run in the task dir; ``base_command`` comes from machine.json."""
        raise NotImplementedError

    def forward_files(self) -> list[str]:
        raise NotImplementedError

    def backward_files(self) -> list[str]:
        raise NotImplementedError

    def parse(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        """Read the labels of a finished task (exit code 0)."""
        raise NotImplementedError

    def diagnose(self, task_dir: Path) -> Failure | None:
        """A more precise failure than *crashed* for a non-zero exit (e.g. SCF not converged)."""
        return None

    def result(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        """The labels of a task, or why there are none (whatever happened to its job)."""
        info = read_task_rc(task_dir)
        if info is None:
            return Failure("crashed", "the job never completed (lost, or killed after all retries)")
        if info.rc != 0:
            return self.diagnose(task_dir) or Failure(
                "crashed", f"exit code {info.rc}; stderr: {tail(Path(task_dir) / self.errlog, 3)}")
        missing = [m for m in info.missing if m in self.backward_files()]
        if missing:
            return Failure("missing_output", f"the program made no {', '.join(missing)}")
        return self.parse(task_dir)

    # --- shared helpers -------------------------------------------------------------------
    def write_conf(self, frame: dpdata.System, task_dir: Path) -> None:
        frame.to("vasp/poscar", str(Path(task_dir) / CONF_FILE))

    def read_conf(self, task_dir: Path) -> dpdata.System:
        return dpdata.System(str(Path(task_dir) / CONF_FILE), fmt="vasp/poscar",
                             type_map=list(self.type_map))

    def checked(self, system: dpdata.LabeledSystem) -> dpdata.LabeledSystem | Failure:
        """Reject frames with NaN/Inf energies, forces or virials."""
        if system.get_nframes() != 1:
            return Failure("parse_error", f"expected 1 frame, got {system.get_nframes()}")
        for key in ("energies", "forces", "virials"):
            if key in system.data and not np.all(np.isfinite(system.data[key])):
                return Failure("non_finite", f"{key} contain NaN or Inf")
        return system
