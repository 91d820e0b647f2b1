"""CP2K (the Debian ``cp2k``): DFT single points (energy, forces, stress), parsed with dpdata.

Input: defaults (PBE, DZVP-MOLOPT-SR-GTH, GTH-PBE pseudopotentials) deep-merged with
``user_fp_params`` (DP-GEN's nested-dict form), or a template file ``external_input_path`` whose
``ABC`` line in ``&CELL`` is replaced by the frame's cell vectors and which includes coord.xyz.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata
from ase.data import atomic_numbers

from dpgen_ng.config.fields import Field, as_dict, as_str, list_of
from dpgen_ng.errors import UserError
from dpgen_ng.fp import cp2k_motion as motion
from dpgen_ng.fp import register
from dpgen_ng.fp.base import Failure, JobKind, Labeler
from dpgen_ng.io import relink

INPUT = "input.inp"
COORD = "coord.xyz"
OUTPUT = "output"
DATA_DIR = "/usr/share/cp2k"


def default_input() -> dict[str, Any]:
    """A fresh copy of the defaults (never shared, never mutated elsewhere)."""
    return {
        "GLOBAL": {"PROJECT": "DPGEN", "RUN_TYPE": "ENERGY_FORCE", "PRINT_LEVEL": "MEDIUM"},
        "FORCE_EVAL": {
            "METHOD": "QS",
            "STRESS_TENSOR": "ANALYTICAL",
            "DFT": {
                "BASIS_SET_FILE_NAME": f"{DATA_DIR}/BASIS_MOLOPT",
                "POTENTIAL_FILE_NAME": f"{DATA_DIR}/GTH_POTENTIALS",
                "CHARGE": 0,
                "MGRID": {"CUTOFF": 300, "REL_CUTOFF": 50, "NGRIDS": 4},
                "QS": {"EPS_DEFAULT": "1.0E-12"},
                "SCF": {
                    "SCF_GUESS": "ATOMIC",
                    "EPS_SCF": "1.0E-6",
                    "MAX_SCF": 50,
                    "OT": {"MINIMIZER": "DIIS", "PRECONDITIONER": "FULL_SINGLE_INVERSE"},
                },
                "XC": {"XC_FUNCTIONAL": {"_": "PBE"}},
            },
            "SUBSYS": {"COORD": {"@include": COORD}},
            "PRINT": {"FORCES": {"_": "ON"}, "STRESS_TENSOR": {"_": "ON"}},
        },
    }


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``; keys compare case-insensitively."""
    out = copy.deepcopy(base)
    upper = {k.upper(): k for k in out}
    for key, value in over.items():
        target = upper.get(key.upper(), key)
        if isinstance(value, dict) and isinstance(out.get(target), dict):
            out[target] = merge(out[target], value)
        else:
            out[target] = copy.deepcopy(value)
            upper[key.upper()] = target
    return out


def render(tree: dict[str, Any], indent: int = 0) -> list[str]:
    """CP2K input text from a nested dict. ``_`` is a section parameter; lists repeat sections."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in tree.items():
        if key == "_":
            continue
        if isinstance(value, dict) and isinstance(value.get("_"), list):
            items = _expand(value)  # DP-GEN's form: "_": [a, b], KEY: [x, y] → two sections
        elif isinstance(value, dict):
            items = [value]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = value
        else:
            if key.startswith("@"):
                lines.append(f"{pad}{key} {value}")
            else:
                lines.append(f"{pad}{key} {_scalar(value)}")
            continue
        for item in items:
            param = f" {_scalar(item['_'])}" if "_" in item else ""
            lines.append(f"{pad}&{key}{param}")
            lines += render(item, indent + 1)
            lines.append(f"{pad}&END {key}")
    return lines


def _expand(section: dict[str, Any]) -> list[dict[str, Any]]:
    n = len(section["_"])
    return [{k: (v[i] if isinstance(v, list) and len(v) == n else v) for k, v in section.items()}
            for i in range(n)]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return ".TRUE." if value else ".FALSE."
    if isinstance(value, (list, tuple)):
        return " ".join(_scalar(v) for v in value)
    return str(value)


def _template(value: Any, where: str) -> str:
    path = Path(as_str(value, where)).expanduser()
    if not path.is_file():
        raise UserError(f"template {str(path)!r} not found", where, "a CP2K input template file")
    text = path.read_text()
    if not any(ln.split()[:1] and ln.split()[0].upper() == "ABC" for ln in text.splitlines()):
        raise UserError("template has no 'ABC' line in &CELL", where, "an ABC line to fill with the cell")
    if COORD not in text:
        raise UserError(f"template does not include {COORD}", where, f"'@include {COORD}' in &COORD")
    return text


@dataclass(frozen=True)
class Cp2kSettings:
    user_fp_params: dict[str, Any]
    template: str | None
    template_path: str | None
    pp_files: tuple[Path, ...] = ()  # basis / potential files that travel with each task

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = ({"external_input_path": self.template_path} if self.template_path
                               else {"user_fp_params": self.user_fp_params})
        if self.pp_files:
            out["fp_pp_path"] = str(self.pp_files[0].parent)
            out["fp_pp_files"] = [p.name for p in self.pp_files]
        return out


@register("cp2k")
class Cp2kLabeler(Labeler):
    KEYS = {
        "user_fp_params": Field(as_dict, default=dict, doc="nested CP2K input merged over defaults",
                                 aliases=("fp_params",)),
        "external_input_path": Field(_template, default=None, doc="a CP2K input template"),
        "fp_pp_path": Field(as_str, default=None, doc="directory of basis/potential files to send"),
        "fp_pp_files": Field(list_of(as_str), default=None, doc="basis/potential files to send"),
    }
    outlog = OUTPUT
    errlog = "cp2k.err"
    UNCONVERGED_MARK = "SCF run NOT converged"

    @classmethod
    def parse_settings(cls, raw: dict[str, Any], path: str) -> Cp2kSettings:
        if "user_fp_params" in raw and "external_input_path" in raw:
            raise UserError("both user_fp_params and external_input_path are set",
                            "external_input_path", "one of the two")
        params = as_dict(raw.get("user_fp_params", {}), "user_fp_params")
        tpath = raw.get("external_input_path")
        template = _template(tpath, "external_input_path") if tpath is not None else None
        pp_path = Path(as_str(raw.get("fp_pp_path") or ".", "fp_pp_path")).expanduser()
        pp_files = []
        for i, name in enumerate(list_of(as_str)(raw.get("fp_pp_files") or [], "fp_pp_files")):
            if not (pp_path / name).is_file():
                raise UserError(f"{pp_path / name} not found", f"fp_pp_files[{i}]",
                                "a basis-set or potential file (referred to by name in the input)")
            pp_files.append((pp_path / name).resolve())
        return Cp2kSettings(params, template, tpath, tuple(pp_files))

    def input_text(self, frame: dpdata.System, extra: dict[str, Any] | None = None) -> str:
        cell = frame["cells"][0]
        vectors = [f"{n} {v[0]:.10f} {v[1]:.10f} {v[2]:.10f}" for n, v in zip("ABC", cell)]
        s: Cp2kSettings = self.settings
        if s.template is not None:
            out = []
            for ln in s.template.splitlines():
                tok = ln.split()[:1]
                if tok and tok[0].upper() == "ABC":
                    indent = ln[: len(ln) - len(ln.lstrip())]
                    out += [indent + v for v in vectors]
                else:
                    out.append(ln)
            return "\n".join(out) + "\n"
        tree = merge(merge(default_input(), extra or {}), s.user_fp_params)
        feval = tree["FORCE_EVAL"]
        subsys = feval.setdefault("SUBSYS", {})
        subsys["CELL"] = {"A": vectors[0][2:], "B": vectors[1][2:], "C": vectors[2][2:]}
        present = [frame["atom_names"][i] for i, n in enumerate(frame["atom_numbs"]) if n > 0]
        subsys.setdefault("KIND", [
            {"_": el, "BASIS_SET": "DZVP-MOLOPT-SR-GTH", "POTENTIAL": "GTH-PBE"} for el in present
        ])
        dft = feval["DFT"]
        if not any(k.upper() in ("MULTIPLICITY", "MULTIP") for k in dft):
            nelec = sum(atomic_numbers[frame["atom_names"][t]] for t in frame["atom_types"])
            nelec -= int(dft.get("CHARGE", 0))
            dft["MULTIPLICITY"] = 1 if nelec % 2 == 0 else 2
            if nelec % 2:
                dft.setdefault("UKS", True)
        return "\n".join(render(tree)) + "\n"

    def jobs(self, options: dict[str, Any]) -> dict[str, JobKind]:
        """Single points; GEO_OPT/CELL_OPT relaxations (init_bulk, dpgen test); NVT AIMD (init_bulk)."""
        if self.settings.template is not None:
            return super().jobs(options)  # a user template fixes RUN_TYPE itself
        files = (tuple(self.forward_files()), (OUTPUT, self.errlog, motion.POS, motion.FRC))
        kind, section = motion.relax_section(options, periodic_cell=True)  # refuses what CP2K cannot

        def relax_write(frame: dpdata.System, task_dir: Path) -> None:
            self._write(frame, task_dir, {"GLOBAL": {"RUN_TYPE": kind}, "MOTION": section})

        def md_write(frame: dpdata.System, task_dir: Path) -> None:
            seed = {"SEED": int(options["seed"])} if "seed" in options else {}
            self._write(frame, task_dir, {"GLOBAL": {"RUN_TYPE": "MD", **seed},
                                          "MOTION": motion.md_section(options)})

        def relax_parse(d: Path) -> Any:
            return motion.parse_relax(d, self.read_conf(d), OUTPUT, self.UNCONVERGED_MARK)

        def md_parse(d: Path) -> Any:
            return motion.parse_md(d, self.read_conf(d), int(options.get("md_nstep", 10)))

        return {**super().jobs(options),
                "relax": JobKind(relax_write, self.command, files[0], (*files[1], motion.CELL), relax_parse,
                                 OUTPUT, self.errlog),
                "md": JobKind(md_write, self.command, files[0], files[1], md_parse, OUTPUT, self.errlog)}

    def _write(self, frame: dpdata.System, task_dir: Path, extra: dict[str, Any]) -> None:
        self.write_inputs(frame, task_dir)
        text = self.input_text(frame, extra)
        (Path(task_dir) / INPUT).write_text(text)

    def write_inputs(self, frame: dpdata.System, task_dir: Path) -> None:
        self.write_conf(frame, task_dir)
        names, types, coords = frame["atom_names"], frame["atom_types"], frame["coords"][0]
        xyz = [f"{names[t]} {x:.10f} {y:.10f} {z:.10f}" for t, (x, y, z) in zip(types, coords)]
        (Path(task_dir) / COORD).write_text("\n".join(xyz) + "\n")
        (Path(task_dir) / INPUT).write_text(self.input_text(frame))
        for src in self.settings.pp_files:  # linked here, sent with the task to remote machines
            relink(Path(task_dir) / src.name, src)

    def command(self, base_command: str) -> str:
        return f"{base_command} -i {INPUT}"

    def forward_files(self) -> list[str]:
        return [INPUT, COORD, *(p.name for p in self.settings.pp_files)]

    def backward_files(self) -> list[str]:
        return [OUTPUT, self.errlog]

    def parse(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        failure = self.precheck(task_dir)
        if failure is not None:
            return failure
        path = Path(task_dir) / OUTPUT
        text = path.read_text(errors="replace")
        try:
            system = dpdata.LabeledSystem(str(path), fmt="cp2k/output", type_map=list(self.type_map))
        except Exception as exc:  # noqa: BLE001 - any dpdata failure is a parse error of this task
            return Failure("parse_error", f"dpdata cp2k/output: {type(exc).__name__}: {exc}")
        if "virials" not in system.data:
            virial = motion.read_virial(text, system["cells"][0])
            if virial is not None:  # CP2K ≥ 2023 prints "STRESS| Analytical stress tensor [GPa]"
                system.data["virials"] = virial[None]
        return self.checked(system)

