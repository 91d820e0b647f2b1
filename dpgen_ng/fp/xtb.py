"""xtb (GFN-xTB, the Debian ``xtb`` binary): a fast semi-empirical labeler.

The frame is computed as a molecule (no periodic images): fine for molecules and clusters in a
large box, such as the methane example. Energies and forces only (no virial).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dpdata
import numpy as np
from ase.units import Bohr, Hartree

from dpgen_ng.config.fields import Field, as_dict, as_float, as_int, one_of, parse_section, positive
from dpgen_ng.fp import register
from dpgen_ng.fp.ase_jobs import ase_jobs
from dpgen_ng.fp.base import Failure, JobKind, Labeler
from dpgen_ng.xtbio import METHOD_FLAGS, read_engrad

_PARAMS = {
    "method": Field(one_of(*METHOD_FLAGS), default="gfn2"),
    "charge": Field(as_int, default=0),
    "uhf": Field(positive(as_int, strict=False), default=0, aliases=("spin",),
                 doc="number of unpaired electrons"),
    "accuracy": Field(positive(as_float), default=1.0),
    "etemp": Field(positive(as_float), default=300.0, doc="electronic temperature (K)"),
    "max_iterations": Field(positive(as_int), default=250),
}

XYZ = "conf.xyz"
ENGRAD = "conf.engrad"


@dataclass(frozen=True)
class XtbSettings:
    method: str = "gfn2"
    charge: int = 0
    uhf: int = 0
    accuracy: float = 1.0
    etemp: float = 300.0
    max_iterations: int = 250

    def as_json(self) -> dict[str, Any]:
        return {"fp_params": asdict(self)}


@register("xtb")
class XtbLabeler(Labeler):
    KEYS = {"fp_params": Field(as_dict, default=dict, doc="xtb options: " + ", ".join(_PARAMS))}
    outlog = "xtb.out"
    errlog = "xtb.err"
    UNCONVERGED_MARK = "convergence criteria cannot be satisfied"

    @classmethod
    def parse_settings(cls, raw: dict[str, Any], path: str) -> XtbSettings:
        params = raw.get("fp_params", {})
        return XtbSettings(**parse_section(params, _PARAMS, "fp_params"))

    def write_inputs(self, frame: dpdata.System, task_dir: Path) -> None:
        self.write_conf(frame, task_dir)
        names = frame["atom_names"]
        types = frame["atom_types"]
        coords = frame["coords"][0]
        lines = [str(len(types)), "dpgen_ng frame"]
        lines += [f"{names[t]:<3s} {x:.10f} {y:.10f} {z:.10f}" for t, (x, y, z) in zip(types, coords)]
        (Path(task_dir) / XYZ).write_text("\n".join(lines) + "\n")

    def command(self, base_command: str) -> str:
        s: XtbSettings = self.settings
        return (
            f"{base_command} {XYZ} {METHOD_FLAGS[s.method]} --grad --chrg {s.charge} --uhf {s.uhf}"
            f" --acc {s.accuracy:g} --etemp {s.etemp:g} --iterations {s.max_iterations}"
        )

    def forward_files(self) -> list[str]:
        return [XYZ]

    def backward_files(self) -> list[str]:
        return [ENGRAD, self.outlog, self.errlog]

    def jobs(self, options: dict[str, Any]) -> dict[str, JobKind]:
        """Single points natively; relaxation and MD driven by ASE (xtb's own MD keeps no forces)."""
        params = {**asdict(self.settings), "command": options.get("command", "xtb")}
        return {**super().jobs(options),
                **ase_jobs("xtb", params, options, self.type_map, self.checked, ("relax", "md"),
                           python=options.get("python") or sys.executable)}

    def parse(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        path = Path(task_dir) / ENGRAD
        if not path.is_file():
            return Failure("missing_output", f"no {ENGRAD} in {task_dir}")
        try:
            energy, grad = read_engrad(path)
        except (ValueError, IndexError) as exc:
            return Failure("parse_error", f"{ENGRAD}: {exc}")
        conf = self.read_conf(task_dir)
        if grad.shape != (conf.get_natoms(), 3):
            return Failure("parse_error", f"{ENGRAD}: {grad.shape[0]} atoms, expected {conf.get_natoms()}")
        data = dict(conf.data)
        data["energies"] = np.array([energy * Hartree])
        data["forces"] = (-grad * Hartree / Bohr)[None, :, :]
        return self.checked(dpdata.LabeledSystem(data=data))
