"""Quantum ESPRESSO pw.x (Debian): SCF single points, parsed with dpdata's ``qe/pw/scf``.

The input always has ``ibrav = 0`` on a line of its own and ``CELL_PARAMETERS angstrom`` (what
dpdata's reader needs). k-points come from ``user_fp_params.kspacing`` (1/Å, like VASP's
KSPACING); without it the Γ point is used.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata
import numpy as np
from ase import io as ase_io
from ase.data import atomic_masses, atomic_numbers
from ase.units import Bohr, Rydberg

from dpgen_ng.config.fields import Field, as_dict, as_str, list_of
from dpgen_ng.errors import UserError
from dpgen_ng.fp import register
from dpgen_ng.fp.base import Failure, JobKind, Labeler, Relaxed, relax_dofs, unsupported_relax
from dpgen_ng.io import relink

INPUT = "pw.in"
OUTPUT = "pw.out"
DEFAULT_PP_PATH = "/usr/share/espresso/pseudo"
SECTIONS = ("control", "system", "electrons")
RY_TIME_FS = 0.0483776877  # pw.x's time unit (Rydberg atomic units) in fs


def default_params() -> dict[str, Any]:
    return {
        "control": {"calculation": "scf", "tprnfor": True, "tstress": True, "outdir": "./tmp",
                    "pseudo_dir": "./", "disk_io": "none"},
        "system": {"ecutwfc": 40, "ecutrho": 320},
        "electrons": {"conv_thr": 1e-8, "mixing_beta": 0.5},
    }


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return ".true." if v else ".false."
    if isinstance(v, str):
        return f"'{v}'"
    return repr(v) if isinstance(v, float) else str(v)


def namelist(name: str, values: dict[str, Any], first: list[str] = ()) -> list[str]:
    lines = [f"&{name}"] + list(first)
    lines += [f"    {k} = {_value(v)}" for k, v in values.items()]
    return lines + ["/"]


def kpoints(cell: np.ndarray, kspacing: float | None) -> list[str]:
    if not kspacing:
        return ["K_POINTS gamma"]
    rec = np.linalg.inv(np.asarray(cell, dtype=float)).T
    mesh = [max(1, math.ceil(2 * math.pi * float(np.linalg.norm(b)) / kspacing)) for b in rec]
    return ["K_POINTS automatic", " ".join(map(str, mesh)) + " 0 0 0"]


@dataclass(frozen=True)
class PwscfSettings:
    params: dict[str, Any]
    kspacing: float | None
    pp_path: str
    pp_files: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        user = {**self.params, **({"kspacing": self.kspacing} if self.kspacing else {})}
        return {"user_fp_params": user, "fp_pp_path": self.pp_path, "fp_pp_files": list(self.pp_files)}


@register("pwscf")
class PwscfLabeler(Labeler):
    PER_TYPE = ("fp_pp_files",)
    KEYS = {
        "user_fp_params": Field(as_dict, default=dict, doc="control/system/electrons namelists, kspacing",
                                 aliases=("fp_params",)),
        "fp_pp_path": Field(as_str, default=None, doc="directory of the UPF files"),
        "fp_pp_files": Field(list_of(as_str, min_len=1), default=None, doc="one UPF per type_map entry"),
    }
    outlog = OUTPUT
    errlog = "pw.err"
    UNCONVERGED_MARK = "convergence NOT achieved"

    @classmethod
    def parse_settings(cls, raw: dict[str, Any], path: str) -> PwscfSettings:
        user = as_dict(raw.get("user_fp_params", {}), "user_fp_params")
        params = default_params()
        kspacing = None
        for key, value in user.items():
            low = key.lower()
            if low == "kspacing":
                kspacing = float(value) if value else None
            elif low in SECTIONS:
                params[low].update(as_dict(value, f"user_fp_params.{key}"))
            else:
                raise UserError(f"unknown key '{key}'", f"user_fp_params.{key}",
                                "one of control, system, electrons, kspacing")
        if params["system"].pop("ibrav", 0) != 0:
            raise UserError("ibrav must be 0", "user_fp_params.system.ibrav",
                            "0 (the cell is given by CELL_PARAMETERS), or leave it out")
        for derived in ("nat", "ntyp"):  # DP-GEN examples give them; they come from each frame
            params["system"].pop(derived, None)
        if raw.get("fp_pp_files") is None:
            raise UserError("missing required key 'fp_pp_files'", "fp_pp_files",
                            "one UPF file per type_map entry, e.g. [\"H.pbe-kjpaw.UPF\", ...]")
        pp_path = Path(raw.get("fp_pp_path") or DEFAULT_PP_PATH).expanduser()
        pp_files = list_of(as_str, min_len=1)(raw["fp_pp_files"], "fp_pp_files")
        for i, name in enumerate(pp_files):
            if not (pp_path / name).is_file():
                raise UserError(f"{pp_path / name} not found", f"fp_pp_files[{i}]", "a UPF file")
        return PwscfSettings(params, kspacing, str(pp_path.resolve()), tuple(pp_files))

    def input_text(self, frame: dpdata.System, extra: dict[str, dict[str, Any]] | None = None) -> str:
        s: PwscfSettings = self.settings
        params = copy.deepcopy(s.params)
        for name, values in (extra or {}).items():
            params.setdefault(name, {}).update(values)
        present = [n for n, c in zip(frame["atom_names"], frame["atom_numbs"]) if c > 0]
        lines = namelist("control", params["control"])
        lines += namelist("system", params["system"], first=[
            "    ibrav = 0", f"    nat = {frame.get_natoms()}", f"    ntyp = {len(present)}"])
        lines += namelist("electrons", params["electrons"])
        for name in ("ions", "cell"):  # only for relaxations and MD
            if params.get(name):
                lines += namelist(name, params[name])
        lines.append("ATOMIC_SPECIES")
        for el in present:
            pp = s.pp_files[self.type_map.index(el)]
            lines.append(f"{el} {atomic_masses[atomic_numbers[el]]:.4f} {pp}")
        lines.append("CELL_PARAMETERS angstrom")
        lines += [" ".join(f"{x:.10f}" for x in row) for row in frame["cells"][0]]
        lines.append("ATOMIC_POSITIONS angstrom")
        names = frame["atom_names"]
        lines += [f"{names[t]} " + " ".join(f"{x:.10f}" for x in xyz)
                  for t, xyz in zip(frame["atom_types"], frame["coords"][0])]
        lines += kpoints(frame["cells"][0], s.kspacing)
        return "\n".join(lines) + "\n"

    def jobs(self, options: dict[str, Any]) -> dict[str, JobKind]:
        """Single points, and for init_bulk pw.x's own (vc-)relax and MD, read back with ASE."""
        relax = self._relax_params(options)
        nsteps = int(options.get("md_nstep", 10))
        md = {"control": {"calculation": "md", "nstep": nsteps,
                          "dt": float(options.get("md_dt", 1.0)) / RY_TIME_FS},
              "system": {"nosym": True},  # the atoms leave the symmetric start at once
              "ions": {"ion_temperature": "rescaling", "tempw": float(options.get("md_temp", 300.0))}}

        def writer(extra: dict[str, dict[str, Any]]):  # noqa: ANN202
            def write(frame: dpdata.System, task_dir: Path) -> None:
                self.write_inputs(frame, task_dir)
                (Path(task_dir) / INPUT).write_text(self.input_text(frame, extra))
            return write

        single = super().jobs(options)["single"]
        return {"single": single,
                # pw.x exits 3 when the relaxation reached nstep: an unconverged result, not a crash
                "relax": dataclasses.replace(single, write=writer(relax), parse=self._parse_relax,
                                             command=lambda base: f"{self.command(base)} || [ $? -eq 3 ]"),
                "md": dataclasses.replace(single, write=writer(md),
                                          parse=lambda d: self._parse_md(Path(d), nsteps))}

    @staticmethod
    def _relax_params(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """pw.x's relax (positions) or vc-relax (cell_dofree all / shape / volume)."""
        pos, shape, vol = relax_dofs(options)
        control = {"nstep": int(options.get("relax_steps", 200)), "etot_conv_thr": 1e-5,
                   "forc_conv_thr": float(options.get("relax_fmax", 0.05)) / (Rydberg / Bohr)}
        if not (shape or vol):
            return {"control": {"calculation": "relax", **control}, "ions": {"ion_dynamics": "bfgs"}}
        if not pos:
            raise unsupported_relax("pwscf", (pos, shape, vol))
        dofree = "all" if shape and vol else ("shape" if shape else "volume")
        return {"control": {"calculation": "vc-relax", **control}, "ions": {"ion_dynamics": "bfgs"},
                "cell": {"cell_dynamics": "bfgs", "cell_dofree": dofree}}

    def _images(self, task_dir: Path) -> list[Any] | Failure:
        out = Path(task_dir) / OUTPUT
        if not out.is_file() or out.stat().st_size == 0:
            return Failure("missing_output", f"no {OUTPUT} in {task_dir}")
        try:
            return ase_io.read(out, index=":", format="espresso-out")
        except Exception as exc:  # noqa: BLE001
            return Failure("parse_error", f"{OUTPUT}: {type(exc).__name__}: {exc}")

    def _parse_relax(self, task_dir: Path) -> Relaxed | Failure:
        images = self._images(task_dir)
        if isinstance(images, Failure) or not images:
            return images or Failure("parse_error", "no structure in pw.out")
        relaxed = dpdata.System(images[-1], fmt="ase/structure", type_map=list(self.type_map))
        text = (Path(task_dir) / OUTPUT).read_text(errors="replace")
        try:  # vc-relax ends with a fresh scf at the final cell: its labels are the last image's
            final = self.checked(dpdata.LabeledSystem(images[-1], fmt="ase/structure",
                                                      type_map=list(self.type_map)))
        except Exception:  # noqa: BLE001 - no energy on the last image: structure only
            final = None
        converged = "bfgs converged" in text or "End final coordinates" in text
        return Relaxed(relaxed, converged, None if isinstance(final, Failure) else final)

    def _parse_md(self, task_dir: Path, nsteps: int) -> dpdata.LabeledSystem | Failure:
        images = self._images(task_dir)
        if isinstance(images, Failure):
            return images
        failure = self.diagnose(task_dir)
        if failure is not None:
            return failure
        steps = images  # pw.x evaluates nstep structures, the first one being the start (as VASP)
        if len(steps) != nsteps:
            return Failure("parse_error", f"incomplete AIMD: {len(steps)} of {nsteps} steps")
        out = dpdata.LabeledSystem(steps[0], fmt="ase/structure", type_map=list(self.type_map))
        for atoms in steps[1:]:
            out.append(dpdata.LabeledSystem(atoms, fmt="ase/structure", type_map=list(self.type_map)))
        return self.checked(out) if out.get_nframes() == 1 else out

    def write_inputs(self, frame: dpdata.System, task_dir: Path) -> None:
        s: PwscfSettings = self.settings
        if len(s.pp_files) != len(self.type_map):
            raise UserError(f"{len(s.pp_files)} UPF files for {len(self.type_map)} types", "fp_pp_files",
                            "one per type_map entry, in type_map order")
        task_dir = Path(task_dir)
        self.write_conf(frame, task_dir)
        (task_dir / INPUT).write_text(self.input_text(frame))
        for name in self._pp_names(frame):
            relink(task_dir / name, Path(s.pp_path) / name)

    def _pp_names(self, frame: dpdata.System) -> list[str]:
        s: PwscfSettings = self.settings
        present = [n for n, c in zip(frame["atom_names"], frame["atom_numbs"]) if c > 0]
        return [s.pp_files[self.type_map.index(el)] for el in present]

    def command(self, base_command: str) -> str:
        return f"{base_command} -in {INPUT}"

    def forward_files(self) -> list[str]:
        # the pseudopotentials travel with each task (pseudo_dir = './')
        return [INPUT, *sorted(set(self.settings.pp_files))]

    def backward_files(self) -> list[str]:
        return [OUTPUT, self.errlog]

    def parse(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        failure = self.precheck(task_dir)
        if failure is not None:
            return failure
        out = Path(task_dir) / OUTPUT
        try:
            system = dpdata.LabeledSystem([str(Path(task_dir) / INPUT), str(out)], fmt="qe/pw/scf",
                                          type_map=list(self.type_map))
        except Exception as exc:  # noqa: BLE001 - any dpdata failure is a parse error of this task
            return Failure("parse_error", f"dpdata qe/pw/scf: {type(exc).__name__}: {exc}")
        return self.checked(system)
