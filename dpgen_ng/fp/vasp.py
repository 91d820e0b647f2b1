"""VASP: INCAR from ``fp_incar``, POTCAR from ``fp_pp_path`` + ``fp_pp_files``, KPOINTS from KSPACING.

VASP cannot run here: inputs are checked exactly and parsing runs on real OUTCARs. An electronic
SCF that stopped at NELM is an *unconverged* failure, never a label.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata
import numpy as np

from dpgen_ng.config.fields import Field, as_float, as_str, list_of, positive
from dpgen_ng.errors import UserError
from dpgen_ng.fp import register
from dpgen_ng.fp.base import RELAX_DOFS, Failure, JobKind, Labeler, Relaxed, relax_dofs, unsupported_relax
from dpgen_ng.io import relink

FILES = ("POSCAR", "INCAR", "POTCAR", "KPOINTS")


def read_incar(text: str) -> dict[str, str]:
    """KEY = VALUE pairs of an INCAR (keys upper-cased; ``#``/``!`` comments; ``;`` separators)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = re.split(r"[#!]", line, maxsplit=1)[0]
        for part in line.split(";"):
            if "=" in part:
                key, value = part.split("=", 1)
                out[key.strip().upper()] = value.strip()
    return out


# DP-GEN autotest's (relax_pos, relax_shape, relax_vol) → ISIF
ISIF = {(True, False, False): 2, (True, True, True): 3, (True, True, False): 4, (False, True, False): 5,
        (False, True, True): 6, (False, False, True): 7}


def relax_incar(text: str, dofs: tuple[bool, bool, bool], nsw: int) -> str:
    """The INCAR ``text`` with ISIF for ``dofs`` (and IBRION = 2, NSW unless the INCAR sets them)."""
    if dofs not in ISIF:
        raise unsupported_relax("vasp", dofs)
    given = read_incar(text)
    updates = {"ISIF": str(ISIF[dofs])}
    if "IBRION" not in given or given["IBRION"].strip() == "-1":
        updates["IBRION"] = "2"
    if int(float(given.get("NSW", "0") or 0)) <= 0:
        updates["NSW"] = str(nsw)
    lines = []
    for line in text.splitlines():
        parts = [p for p in line.split(";") if p.split("=", 1)[0].strip().upper() not in updates]
        if any(p.strip() for p in parts):
            lines.append(";".join(parts))
    return "\n".join(lines + [f"{k} = {v}" for k, v in updates.items()]) + "\n"


def _flag(value: str) -> bool:
    return value.strip().strip(".").upper().startswith("T")


def kpoints_text(cell: np.ndarray, kspacing: tuple[float, float, float], gamma: bool) -> str:
    """A KPOINTS file with N_i = max(1, ceil(2π |b_i| / kspacing_i)), b = reciprocal vectors."""
    rec = np.linalg.inv(np.asarray(cell, dtype=float)).T
    mesh = [max(1, math.ceil(2 * math.pi * float(np.linalg.norm(b)) / k)) for b, k in zip(rec, kspacing)]
    return ("Automatic mesh from KSPACING\n0\n" + ("Gamma" if gamma else "Monkhorst-Pack") + "\n"
            + " ".join(str(n) for n in mesh) + "\n0 0 0\n")


@dataclass(frozen=True)
class VaspInit:
    """init_bulk's VASP inputs (DP-GEN's keys): POTCARs in elements order, relax and MD INCARs."""

    potcars: tuple[str, ...]
    relax_incar: str | None
    md_incar: str | None
    relax_kpt: str | None = None  # KPOINTS texts (relax_kpt / md_kpt); else KSPACING in the INCAR
    md_kpt: str | None = None


@dataclass(frozen=True)
class VaspSettings:
    incar_path: str | None
    incar: str | None
    kspacing: tuple[float, float, float] | None
    kgamma: bool
    pp_path: str | None
    pp_files: tuple[str, ...]
    aniso: bool
    init: VaspInit | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fp_incar": self.incar_path, "fp_pp_path": self.pp_path,
                               "fp_pp_files": list(self.pp_files)}
        if self.init:
            out.update(potcars=list(self.init.potcars), relax_incar=self.init.relax_incar is not None,
                       md_incar=self.init.md_incar is not None, relax_kpt=self.init.relax_kpt is not None,
                       md_kpt=self.init.md_kpt is not None)
        if self.aniso:
            out["fp_aniso_kspacing"] = list(self.kspacing)
        return out


@register("vasp")
class VaspLabeler(Labeler):
    PER_TYPE = ("fp_pp_files",)
    KEYS = {
        "fp_incar": Field(as_str, default=None, doc="the INCAR of every single point"),
        "fp_pp_path": Field(as_str, default=None, doc="directory of the POTCAR files"),
        "fp_pp_files": Field(list_of(as_str, min_len=1), default=None, doc="one POTCAR per type_map entry"),
        "fp_aniso_kspacing": Field(list_of(positive(as_float), min_len=3), default=None),
        # init_bulk (DP-GEN's init.json keys)
        "potcars": Field(list_of(as_str, min_len=1), default=None, doc="POTCAR files in elements order"),
        "relax_incar": Field(as_str, default=None, doc="INCAR of the relaxation (stage 1)"),
        "md_incar": Field(as_str, default=None, doc="INCAR of the AIMD (stage 3); its NSW is the step count"),
        "relax_kpt": Field(as_str, default=None, doc="KPOINTS file of the relaxation"),
        "md_kpt": Field(as_str, default=None, doc="KPOINTS file of the AIMD"),
    }

    @classmethod
    def parse_settings(cls, raw: dict[str, Any], path: str) -> VaspSettings:
        init = _init_settings(raw)
        if init is not None and raw.get("fp_incar") is None:
            return VaspSettings(None, None, None, True, None, (), False, init)
        for key in ("fp_incar", "fp_pp_path", "fp_pp_files"):
            if raw.get(key) is None:
                raise UserError(f"missing required key '{key}'", key, cls.KEYS[key].doc)
        incar_path = Path(as_str(raw["fp_incar"], "fp_incar")).expanduser()
        if not incar_path.is_file():
            raise UserError(f"{incar_path} not found", "fp_incar", "an INCAR file")
        text = incar_path.read_text()
        incar = read_incar(text)
        aniso = raw.get("fp_aniso_kspacing")
        if aniso is not None:
            aniso = list_of(positive(as_float), min_len=3)(aniso, "fp_aniso_kspacing")
            if len(aniso) != 3:
                raise UserError(f"{len(aniso)} values", "fp_aniso_kspacing", "three k-spacings (1/Å)")
            kspacing = tuple(aniso)
        else:
            if "KSPACING" not in incar:
                raise UserError("INCAR has no KSPACING", f"fp_incar ({incar_path})",
                                "KSPACING (and KGAMMA) to make KPOINTS, or fp_aniso_kspacing")
            try:
                kspacing = (float(incar["KSPACING"]),) * 3
            except ValueError:
                raise UserError(f"KSPACING = {incar['KSPACING']!r}", f"fp_incar ({incar_path})",
                                "a number (1/Å)") from None
        if "KGAMMA" not in incar:
            raise UserError("INCAR has no KGAMMA", f"fp_incar ({incar_path})",
                            "KGAMMA = .TRUE. or .FALSE. (Gamma-centred or Monkhorst-Pack mesh)")
        pp_path = Path(as_str(raw["fp_pp_path"], "fp_pp_path")).expanduser()
        pp_files = list_of(as_str, min_len=1)(raw["fp_pp_files"], "fp_pp_files")
        for i, name in enumerate(pp_files):
            if not (pp_path / name).is_file():
                raise UserError(f"{pp_path / name} not found", f"fp_pp_files[{i}]", "a POTCAR file")
        return VaspSettings(str(incar_path.resolve()), text, kspacing, _flag(incar["KGAMMA"]),
                            str(pp_path.resolve()), tuple(pp_files), aniso is not None, init)

    def jobs(self, options: dict[str, Any]) -> dict[str, JobKind]:
        """Single points (param.json keys); relaxation / AIMD for init_bulk (init.json keys)."""
        s: VaspSettings = self.settings
        out = super().jobs(options) if s.incar is not None else {}
        back = ("OUTCAR", "CONTCAR", "vasprun.xml", self.outlog, self.errlog)
        if s.incar is not None and any(k in options for k in RELAX_DOFS):  # dpgen test
            incar = relax_incar(s.incar, relax_dofs(options), int(options.get("relax_steps", 200)))

            def write_relax(frame: dpdata.System, task_dir: Path) -> None:
                self.write_inputs(frame, task_dir)
                (Path(task_dir) / "INCAR").write_text(incar)

            out["relax"] = JobKind(write_relax, self.command, FILES, back,
                                   lambda d: parse_relax(Path(d), self.type_map), self.outlog, self.errlog)
        init = s.init
        if init is None:
            return out

        def writer(incar: str, kpoints: str | None):  # noqa: ANN202
            def write(frame: dpdata.System, task_dir: Path) -> None:
                self.write_conf(frame, task_dir)
                present = [n for n, c in zip(frame["atom_names"], frame["atom_numbs"]) if c > 0]
                (Path(task_dir) / "POTCAR").write_bytes(b"".join(
                    Path(init.potcars[self.type_map.index(el)]).read_bytes() for el in present))
                (Path(task_dir) / "INCAR").write_text(incar)  # without KPOINTS, its KSPACING
                if kpoints is not None:
                    (Path(task_dir) / "KPOINTS").write_text(kpoints)
            return write

        def files(kpoints: str | None) -> tuple[str, ...]:
            return ("POSCAR", "INCAR", "POTCAR") + (("KPOINTS",) if kpoints is not None else ())

        if init.relax_incar is not None and "relax" not in out:
            out["relax"] = JobKind(writer(init.relax_incar, init.relax_kpt), self.command,
                                   files(init.relax_kpt), back,
                                   lambda d: parse_relax(Path(d), self.type_map), self.outlog, self.errlog)
        if init.md_incar is not None:
            nsw = int(float(read_incar(init.md_incar).get("NSW", options.get("md_nstep", 10))))
            out["md"] = JobKind(writer(init.md_incar, init.md_kpt), self.command, files(init.md_kpt), back,
                                lambda d: parse_md(Path(d), self.type_map, nsw), self.outlog, self.errlog)
        return out

    def potcar_for(self, elements: list[str]) -> bytes:
        s: VaspSettings = self.settings
        if s.pp_path is None:
            raise UserError("no POTCARs for single points", "fp_pp_files", "fp_pp_path and fp_pp_files")
        if len(s.pp_files) != len(self.type_map):
            raise UserError(f"{len(s.pp_files)} POTCARs for {len(self.type_map)} types", "fp_pp_files",
                            "one POTCAR per type_map entry, in type_map order")
        return b"".join((Path(s.pp_path) / s.pp_files[self.type_map.index(el)]).read_bytes()
                        for el in elements)

    def write_inputs(self, frame: dpdata.System, task_dir: Path) -> None:
        s: VaspSettings = self.settings
        task_dir = Path(task_dir)
        self.write_conf(frame, task_dir)  # POSCAR: the elements present, in type_map order
        present = [n for n, c in zip(frame["atom_names"], frame["atom_numbs"]) if c > 0]
        # one POTCAR per element combination, shared by the tasks of a stage (as DP-GEN does)
        shared = task_dir.parent / f"POTCAR.{'.'.join(present)}"
        data = self.potcar_for(present)
        if not shared.is_file() or shared.read_bytes() != data:
            shared.write_bytes(data)
        relink(task_dir / "POTCAR", Path("..") / shared.name)
        (task_dir / "INCAR").write_text(s.incar)
        (task_dir / "KPOINTS").write_text(kpoints_text(frame["cells"][0], s.kspacing, s.kgamma))

    def command(self, base_command: str) -> str:
        return base_command

    def forward_files(self) -> list[str]:
        return list(FILES)

    def backward_files(self) -> list[str]:
        return ["OUTCAR", "vasprun.xml", self.outlog, self.errlog]

    def parse(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        outcar = Path(task_dir) / "OUTCAR"
        if outcar.is_file() and outcar.stat().st_size > 0:
            return self._parse_outcar(outcar)
        xml = Path(task_dir) / "vasprun.xml"
        if xml.is_file() and xml.stat().st_size > 0:
            try:
                system = dpdata.LabeledSystem(str(xml), fmt="vasp/xml", type_map=list(self.type_map))
            except Exception as exc:  # noqa: BLE001
                return Failure("parse_error", f"vasprun.xml: {type(exc).__name__}: {exc}")
            return self.checked(system)
        return Failure("missing_output", f"neither OUTCAR nor vasprun.xml in {task_dir}")

    def _parse_outcar(self, outcar: Path) -> dpdata.LabeledSystem | Failure:
        try:
            every = dpdata.LabeledSystem(str(outcar), fmt="vasp/outcar", type_map=list(self.type_map),
                                         convergence_check=False)
        except Exception as exc:  # noqa: BLE001 - any dpdata failure is a parse error of this task
            return Failure("parse_error", f"OUTCAR: {type(exc).__name__}: {exc}")
        if every.get_nframes() == 0:
            return Failure("parse_error", "OUTCAR holds no complete ionic step")
        nelm, steps = scf_steps(outcar.read_text(errors="replace"))
        stuck = [i + 1 for i, n in enumerate(steps) if nelm is not None and n >= nelm]
        if stuck:
            return Failure("unconverged", f"electronic SCF stopped at NELM = {nelm} "
                           f"(ionic step(s) {stuck})")
        if every.get_nframes() > 1:
            return Failure("parse_error", f"{every.get_nframes()} ionic steps in OUTCAR; a single "
                           "point needs NSW = 1 (or 0)")
        return self.checked(every)


def _init_settings(raw: dict[str, Any]) -> VaspInit | None:
    if raw.get("potcars") is None:
        given = [k for k in ("relax_incar", "md_incar", "relax_kpt", "md_kpt") if raw.get(k)]
        if given:
            raise UserError(f"{given[0]} without potcars", "potcars", "POTCAR files in elements order")
        return None
    potcars = list_of(as_str, min_len=1)(raw["potcars"], "potcars")
    for i, pot in enumerate(potcars):
        if not Path(pot).expanduser().is_file():
            raise UserError(f"{pot} not found", f"potcars[{i}]", "a POTCAR file")
    texts = {}
    for key in ("relax_incar", "md_incar", "relax_kpt", "md_kpt"):
        if raw.get(key) is not None:
            path = Path(as_str(raw[key], key)).expanduser()
            if not path.is_file():
                what = "an INCAR file" if "incar" in key else "a KPOINTS file"
                raise UserError(f"{path} not found", key, what)
            texts[key] = path.read_text()
    for kpt, incar in (("relax_kpt", "relax_incar"), ("md_kpt", "md_incar")):
        if kpt in texts and incar not in texts:
            raise UserError(f"{kpt} without {incar}", kpt, f"{incar} too (the KPOINTS go with it)")
    return VaspInit(tuple(str(Path(p).expanduser().resolve()) for p in potcars), texts.get("relax_incar"),
                    texts.get("md_incar"), texts.get("relax_kpt"), texts.get("md_kpt"))


def parse_relax(task_dir: Path, type_map: tuple[str, ...]) -> Relaxed | Failure:
    contcar = task_dir / "CONTCAR"
    if not contcar.is_file() or contcar.stat().st_size == 0:
        return Failure("missing_output", "no CONTCAR")
    relaxed = dpdata.System(str(contcar), fmt="vasp/poscar", type_map=list(type_map))
    outcar = task_dir / "OUTCAR"
    text = outcar.read_text(errors="replace") if outcar.is_file() else ""
    final = None
    try:  # the labels of the last ionic step (the CONTCAR's), unless its SCF stopped at NELM
        steps = dpdata.LabeledSystem(str(outcar), fmt="vasp/outcar", type_map=list(type_map),
                                     convergence_check=False)
        nelm, scf = scf_steps(text)
        last_ok = nelm is None or (len(scf) >= steps.get_nframes() and scf[steps.get_nframes() - 1] < nelm)
        if steps.get_nframes() and last_ok:
            final = steps.sub_system([steps.get_nframes() - 1])
    except Exception:  # noqa: BLE001 - structure only
        final = None
    return Relaxed(relaxed, "reached required accuracy" in text, final)


def parse_md(task_dir: Path, type_map: tuple[str, ...], nsw: int) -> dpdata.LabeledSystem | Failure:
    """A complete AIMD (NSW ionic steps); steps whose SCF stopped at NELM are left out."""
    outcar = task_dir / "OUTCAR"
    if not outcar.is_file() or outcar.stat().st_size == 0:
        return Failure("missing_output", "no OUTCAR")
    try:
        every = dpdata.LabeledSystem(str(outcar), fmt="vasp/outcar", type_map=list(type_map),
                                     convergence_check=False)
    except Exception as exc:  # noqa: BLE001
        return Failure("parse_error", f"OUTCAR: {type(exc).__name__}: {exc}")
    if every.get_nframes() != nsw:
        return Failure("parse_error", f"incomplete AIMD: {every.get_nframes()} of {nsw} steps (NSW)")
    nelm, steps = scf_steps(outcar.read_text(errors="replace"))
    keep = [i for i, n in enumerate(steps[: every.get_nframes()]) if nelm is None or n < nelm]
    if not keep:
        return Failure("unconverged", f"every ionic step stopped at NELM = {nelm}")
    return every.sub_system(keep)


def scf_steps(text: str) -> tuple[int | None, list[int]]:
    """NELM and, per ionic step, the number of electronic steps it took."""
    m = re.search(r"NELM\s*=\s*(\d+)", text)
    nelm = int(m.group(1)) if m else None
    steps: dict[int, int] = {}
    for ionic, elec in re.findall(r"Iteration\s+(\d+)\(\s*(\d+)\)", text):
        steps[int(ionic)] = max(steps.get(int(ionic), 0), int(elec))
    return nelm, [steps[k] for k in sorted(steps)]
