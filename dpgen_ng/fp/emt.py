"""``emt``: ASE's effective-medium theory for Al, Cu, Ag, Au, Ni, Pd, Pt (and H, C, N, O roughly).

A fast reference for demos and tests only — **not DFT**. Single points, relaxations (cell and
positions) and Langevin MD run through ``dpgen_ng.ase_driver``; machine.json's command is the
Python that runs it (``python3``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata

from dpgen_ng.errors import UserError
from dpgen_ng.fp import register
from dpgen_ng.fp.ase_jobs import ase_jobs
from dpgen_ng.fp.base import Failure, JobKind, Labeler

EMT_ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "H", "C", "N", "O")


@dataclass(frozen=True)
class EmtSettings:
    def as_json(self) -> dict[str, Any]:
        return {}


@register("emt")
class EmtLabeler(Labeler):
    KEYS: dict = {}  # EMT has no settings
    outlog = "driver.log"
    errlog = "driver.err"

    @classmethod
    def parse_settings(cls, raw: dict[str, Any], path: str) -> EmtSettings:
        return EmtSettings()

    def __init__(self, settings: Any, type_map: tuple[str, ...]) -> None:
        super().__init__(settings, type_map)
        unknown = [el for el in type_map if el not in EMT_ELEMENTS]
        if unknown:
            raise UserError(f"EMT has no parameters for {unknown}", "type_map",
                            "elements from " + ", ".join(EMT_ELEMENTS))

    def jobs(self, options: dict[str, Any]) -> dict[str, JobKind]:
        return ase_jobs("emt", {}, options, self.type_map, self.checked, ("single", "relax", "md"))

    def _single(self) -> JobKind:
        return self.jobs({})["single"]

    def write_inputs(self, frame: dpdata.System, task_dir: Path) -> None:
        self._single().write(frame, task_dir)

    def command(self, base_command: str) -> str:
        return self._single().command(base_command)

    def forward_files(self) -> list[str]:
        return list(self._single().forward)

    def backward_files(self) -> list[str]:
        return list(self._single().backward)

    def parse(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        return self._single().parse(task_dir)
