"""The labeler protocol: write inputs for one frame, name the command and files, parse labels.

Every labeler returns either a labeled dpdata system (one frame) or a typed :class:`Failure`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import dpdata
import numpy as np

from dpgen_ng.config.fields import Field
from dpgen_ng.dispatch.runner import read_task_rc
from dpgen_ng.errors import UserError
from dpgen_ng.io import tail

FAILURE_KINDS = ("crashed", "unconverged", "parse_error", "missing_output", "non_finite")
CONF_FILE = "POSCAR"  # every fp task keeps its frame as a POSCAR (type order = type_map)


@dataclass(frozen=True)
class JobKind:
    """How a labeler does one kind of job (``single`` point, ``relax``, ``md``) in a task dir."""

    write: Callable[[dpdata.System, Path], None]
    command: Callable[[str], str]
    forward: tuple[str, ...]
    backward: tuple[str, ...]
    parse: Callable[[Path], Any]  # -> dpdata.System / LabeledSystem, or Failure
    outlog: str
    errlog: str


@dataclass(frozen=True)
class Relaxed:
    """The outcome of a relaxation: the final structure, whether the optimizer reached its
    threshold, and the labels (energy, forces, virial) of the final structure when the engine
    prints them (``dpgen test`` needs them; init_bulk only the structure)."""

    structure: dpdata.System
    converged: bool
    final: dpdata.LabeledSystem | None = None


RELAX_DOFS = ("relax_pos", "relax_shape", "relax_vol")


def relax_dofs(options: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(positions, cell shape, cell volume) to relax: ``dpgen test``'s three switches when given,
    else init_bulk's ``relax_cell`` (positions always, the cell when true)."""
    if any(k in options for k in RELAX_DOFS):
        pos, shape, vol = (bool(options.get(k, False)) for k in RELAX_DOFS)
        return pos, shape, vol
    cell = bool(options.get("relax_cell", True))
    return True, cell, cell


def unsupported_relax(engine: str, dofs: tuple[bool, bool, bool]) -> UserError:
    named = ", ".join(f"{k}={str(v).lower()}" for k, v in zip(RELAX_DOFS, dofs))
    return UserError(f"{engine} cannot relax with {named}", "cal_setting",
                     f"a combination {engine} supports (see docs/test.md)")


@dataclass(frozen=True)
class Failure:
    kind: str
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {self.kind!r}")


def job_result(task_dir: Path, job: JobKind,
               diagnose: Callable[[Path], Failure | None] = lambda d: None) -> Any:
    """What a finished task of kind ``job`` gave: its parsed outcome, or a :class:`Failure`."""
    info = read_task_rc(task_dir)
    if info is None:
        return Failure("crashed", "the job never completed (lost, or killed after all retries)")
    if info.rc != 0:
        return diagnose(task_dir) or Failure(
            "crashed", f"exit code {info.rc}; stderr: {tail(Path(task_dir) / job.errlog, 3)}")
    missing = [m for m in info.missing if m in job.backward]
    if missing:
        return Failure("missing_output", f"the program made no {', '.join(missing)}")
    return job.parse(task_dir)


class Labeler:
    """Base class of all labelers. Subclasses set ``name``, ``KEYS`` and implement the hooks."""

    name: ClassVar[str] = ""
    KEYS: ClassVar[dict[str, Field]] = {}
    PER_TYPE: ClassVar[tuple[str, ...]] = ()  # list keys with one entry per type_map entry
    outlog: ClassVar[str] = "fp.log"
    errlog: ClassVar[str] = "fp.err"
    UNCONVERGED_MARK: ClassVar[str | None] = None  # text in ``outlog`` meaning "SCF not converged"

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
        """A more precise failure than *crashed* (here: the code's own "SCF not converged")."""
        mark, out = self.UNCONVERGED_MARK, Path(task_dir) / self.outlog
        if mark and out.is_file() and mark in out.read_text(errors="replace"):
            return Failure("unconverged", f"{self.name}: {mark}")
        return None

    def precheck(self, task_dir: Path) -> Failure | None:
        """The main output exists, is not empty and reports no SCF failure."""
        out = Path(task_dir) / self.outlog
        if not out.is_file() or out.stat().st_size == 0:
            return Failure("missing_output", f"no {self.outlog} in {task_dir}")
        return self.diagnose(task_dir)

    def jobs(self, options: dict[str, Any]) -> dict[str, JobKind]:
        """The kinds of job this labeler can do; init_bulk asks for ``relax`` and ``md`` too."""
        return {"single": JobKind(self.write_inputs, self.command, tuple(self.forward_files()),
                                  tuple(self.backward_files()), self.parse, self.outlog, self.errlog)}

    def result(self, task_dir: Path, job: JobKind | None = None) -> Any:
        """The outcome of a task (labels, or a structure for a relaxation), or why there is none."""
        return job_result(task_dir, job or self.jobs({})["single"], self.diagnose)

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
