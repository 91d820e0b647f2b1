"""ABACUS (cannot run here): SCF single points, parsed with dpdata's ``abacus/scf``.

The inputs are DP-GEN's: ``INPUT`` (``INPUT_PARAMETERS``, ``calculation scf``, then the keys of
``user_fp_params`` or of the ``fp_incar`` file, DP-GEN's number formats), ``STRU`` (dpdata's
``abacus/stru`` writer: species with mass and pseudopotential, numerical orbitals for LCAO, the
DeePKS descriptor, ``LATTICE_CONSTANT`` = 1 Å in Bohr, the cell and Cartesian positions in Å)
and ``KPT`` unless ``kspacing`` is set. The files of ``fp_pp_path`` are linked into each task (the
STRU names them by file name) and sent with it. Two additions to DP-GEN: ``cal_force 1`` and
``cal_stress 1`` when the input does not set them (ABACUS computes neither by default), and
``ntype`` is the number of species of each frame.

ABACUS logs to ``OUT.<suffix>/running_scf.log`` and may exit 0 after stopping early (e.g. "The
structure is unreasonable!"): a log without ``!FINAL_ETOT_IS`` (DP-GEN's completion check) is a
crash, one saying the SCF did not converge is *unconverged*.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata
from ase.data import atomic_masses, atomic_numbers

from dpgen_ng.config.fields import Field, as_dict, as_int, as_str, list_of
from dpgen_ng.dispatch.runner import read_task_rc
from dpgen_ng.errors import UserError
from dpgen_ng.fp import register
from dpgen_ng.fp.base import Failure, Labeler
from dpgen_ng.io import relink

INPUT, STRU, KPT, OUTPUT, LOG = "INPUT", "STRU", "KPT", "output", "running_scf.log"
FINAL_MARK = "!FINAL_ETOT_IS"  # printed once at the end of a finished SCF
# ABACUS ≤ 2: "convergence has NOT been achieved!"; 3.x: "!! convergence has not been achieved @_@"
# (log) and "!! CONVERGENCE HAS NOT BEEN ACHIEVED !!" (stdout); current: "!!SCF IS NOT CONVERGED!!"
# (then the log still has an energy, "#TOTAL ENERGY#", which dpdata takes as converged)
UNCONVERGED_MARKS = ("convergence has not been achieved", "scf is not converged")
GAMMA = (1, 1, 1, 0, 0, 0)
HERE = ("", ".", "./")  # pseudo_dir / orbital_dir: the files are linked into the task
FIXED_NAMES = {"stru_file": STRU, "kpoint_file": KPT}
LABEL_KEYS = ("atom_names", "atom_numbs", "atom_types", "orig", "cells", "coords", "energies", "forces",
              "virials")

Check = Callable[[Any, str], str]


def read_input_file(text: str) -> dict[str, str]:
    """DP-GEN's reading of an ABACUS ``INPUT``: ``key value`` lines, ``#`` comments; one-word lines
    (the ``INPUT_PARAMETERS`` header) are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("#")[0].strip().split(None, 1)
        if len(parts) == 2:
            out[parts[0]] = parts[1].strip()
    return out


# ----- INPUT values: DP-GEN's checks and formats --------------------------------------------


def _number(value: Any, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise UserError(f"got {value!r}", where, "a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"got {value!r}", where, "a finite number")
    return float(value)


def _integer(value: Any, where: str) -> int:
    v = _number(value, where)
    if not v.is_integer():
        raise UserError(f"got {value!r}", where, "an integer")
    return int(v)


def _switch(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "t", "f"):
        return "1" if value.strip().lower() in ("true", "t") else "0"
    v = _integer(value, where)
    if v not in (0, 1):
        raise UserError(f"got {value!r}", where, "0 or 1")
    return str(v)


def real(fmt: str, lo: float | None = None, hi: float | None = None) -> Check:
    def check(value: Any, where: str) -> str:
        v = _number(value, where)
        if (lo is not None and v < lo) or (hi is not None and v >= hi):
            raise UserError(f"got {value!r}", where, f"a number in [{lo}, {hi})" if hi else f"≥ {lo}")
        return fmt.format(v)
    return check


def integer(lo: int | None = None, choices: tuple[int, ...] = ()) -> Check:
    def check(value: Any, where: str) -> str:
        v = _integer(value, where)
        if (lo is not None and v < lo) or (choices and v not in choices):
            raise UserError(f"got {value!r}", where, f"one of {choices}" if choices else f"an integer ≥ {lo}")
        return str(v)
    return check


def choice(*names: str) -> Check:
    def check(value: Any, where: str) -> str:
        if value not in names:
            raise UserError(f"got {value!r}", where, "one of " + ", ".join(names))
        return value
    return check


def _kspacing(value: Any, where: str) -> str:
    """One or three spacings (a number, a list, or a string), DP-GEN's "%f " each."""
    items = value.split() if isinstance(value, str) else value
    items = items if isinstance(items, (list, tuple)) else [items]
    if len(items) not in (1, 3):
        raise UserError(f"got {value!r}", where, "one or three k-point spacings (1/Bohr)")
    return "".join(real("{:f} ", lo=0)(v, where) for v in items)


def _plain(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return " ".join(_plain(v, where) for v in value)
    if isinstance(value, str) or (isinstance(value, (int, float)) and math.isfinite(value)):
        return str(value).strip()
    raise UserError(f"got {type(value).__name__} {value!r}", where, "a number, a string or a list of them")


FORMATS: dict[str, Check] = {
    "ecutwfc": real("{:f}", lo=0), "kspacing": _kspacing, "scf_thr": real("{:e}"),
    "scf_nmax": integer(lo=0), "basis_type": choice("pw", "lcao", "lcao_in_pw"), "gamma_only": _switch,
    "mixing_beta": real("{:f}", lo=0, hi=1), "symmetry": integer(choices=(-1, 0, 1)), "nbands": integer(lo=1),
    "nspin": integer(choices=(1, 2, 4)), "smearing_sigma": real("{:f}", lo=0), "cal_force": _switch,
    "cal_stress": _switch, "deepks_out_labels": _switch, "deepks_descriptor_lmax": integer(lo=0),
    "deepks_scf": _switch,
}


def _special(low: str, value: Any, where: str) -> str:
    """Keys whose value this labeler decides or depends on."""
    text = _plain(value, where)
    if low in ("pseudo_dir", "orbital_dir") and text not in HERE:
        raise UserError(f"{low} {text!r}", where, "'./' or leave it out: the files of fp_pp_path are "
                        "linked into each task")
    if low in FIXED_NAMES and text != FIXED_NAMES[low]:
        raise UserError(f"{low} {text!r}", where, f"'{FIXED_NAMES[low]}' (the file written) or leave it out")
    if low == "suffix" and (not text or "/" in text or " " in text):
        raise UserError(f"suffix {text!r}", where, "a plain name (ABACUS writes OUT.<suffix>/)")
    if low == "deepks_model":
        return Path(text).name  # linked into the task from fp_pp_path
    if low == "cal_force" and FORMATS[low](value, where) == "0":
        raise UserError("cal_force 0", where, "1 or leave it out: the labels need forces")
    return FORMATS[low](value, where) if low in FORMATS else text


SPECIAL = ("pseudo_dir", "orbital_dir", "stru_file", "kpoint_file", "suffix", "deepks_model", "cal_force")


def input_lines(params: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """The ``key value`` lines after ``calculation scf``, in the given order (``ntype`` is filled
    per frame, ``_`` keys are comments); cal_force / cal_stress 1 are added when not set."""
    lines: list[tuple[str, str]] = []
    for key, value in params.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue
        low, at = key.lower(), f"{where}.{key}"
        if low == "calculation":
            if str(value).strip().lower() != "scf":
                raise UserError(f"calculation {value!r}", at,
                                "scf (labels are SCF single points), or leave it out")
            continue
        if low == "ntype":
            lines.append((key, ""))
        elif low in SPECIAL:
            lines.append((key, _special(low, value, at)))
        else:
            lines.append((key, FORMATS.get(low, _plain)(value, at)))
    given = {k.lower() for k, _ in lines}
    for key, old in (("cal_force", "force"), ("cal_stress", "stress")):  # old: ABACUS 2's names
        if key not in given and old not in given:
            lines.append((key, "1"))
    return lines


def kpt_text(mesh: list[int] | tuple[int, ...]) -> str:
    """DP-GEN's KPT: a Gamma-centred Monkhorst-Pack mesh and its shifts."""
    return "K_POINTS\n0\nGamma\n" + "".join(f"{k} " for k in mesh)


def _k_points(value: Any, where: str) -> list[int]:
    mesh = list_of(as_int)(value, where)
    if len(mesh) != 6 or min(mesh[:3]) < 1 or min(mesh[3:]) < 0:
        raise UserError(f"got {value!r}", where,
                        "6 integers: the mesh (≥ 1) and its shifts, e.g. [2, 2, 2, 0, 0, 0]")
    return mesh


def _kpt(raw: dict[str, Any], given: dict[str, str]) -> str | None:
    """DP-GEN's order: ``kspacing`` (no KPT), ``gamma_only 1``, ``k_points``, ``fp_kpt_file``, Γ."""
    mesh = _k_points(raw["k_points"], "k_points") if raw.get("k_points") is not None else None
    text = None
    if raw.get("fp_kpt_file") is not None:
        path = Path(as_str(raw["fp_kpt_file"], "fp_kpt_file")).expanduser()
        if not path.is_file():
            raise UserError(f"{path} not found", "fp_kpt_file", "an ABACUS KPT file")
        text = path.read_text()
    if "kspacing" in given:
        return None
    if given.get("gamma_only") == "1":
        return kpt_text(GAMMA)
    if mesh is not None:
        return kpt_text(mesh)
    if text is not None:
        return text
    if "gamma_only" in given:
        raise UserError("gamma_only is 0 but no k-points are given", "k_points",
                        "k_points, fp_kpt_file or user_fp_params.kspacing")
    return kpt_text(GAMMA)


# ----- settings -----------------------------------------------------------------------------


def _params(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if "user_fp_params" in raw and "fp_incar" in raw:
        raise UserError("both user_fp_params and fp_incar are set", "fp_incar", "one of the two")
    if "fp_incar" in raw:
        path = Path(as_str(raw["fp_incar"], "fp_incar")).expanduser()
        if not path.is_file():
            raise UserError(f"{path} not found", "fp_incar", "an ABACUS INPUT file")
        return read_input_file(path.read_text()), "fp_incar"
    if "user_fp_params" in raw:
        return as_dict(raw["user_fp_params"], "user_fp_params"), "user_fp_params"
    raise UserError("neither user_fp_params nor fp_incar is set", "user_fp_params",
                    "the INPUT keys as a mapping, or fp_incar: an INPUT file")


def _files(raw: dict[str, Any], key: str, pp_path: Path, what: str) -> tuple[str, ...]:
    names = list_of(as_str, min_len=1)(raw[key], key)
    for i, name in enumerate(names):
        if not (pp_path / name).is_file():
            raise UserError(f"{pp_path / name} not found", f"{key}[{i}]", f"{what} in fp_pp_path")
    return tuple(names)


def _extra_files(raw: dict[str, Any], given: dict[str, str], pp_path: Path,
                 where: str) -> tuple[tuple[str, ...] | None, str | None, str | None]:
    """Orbitals (LCAO), the DeePKS descriptor (deepks_out_labels / deepks_scf) and model: DP-GEN
    uses them only in these cases, and so do we."""
    orb = descriptor = None
    if given.get("basis_type") in ("lcao", "lcao_in_pw"):
        if raw.get("fp_orb_files") is None:
            raise UserError(f"basis_type {given['basis_type']} needs numerical orbitals", "fp_orb_files",
                            "one orbital file per type_map entry")
        orb = _files(raw, "fp_orb_files", pp_path, "a numerical orbital file")
    if "1" in (given.get("deepks_out_labels"), given.get("deepks_scf")):
        if raw.get("fp_dpks_descriptor") is None:
            raise UserError("DeePKS needs a descriptor", "fp_dpks_descriptor", "a file in fp_pp_path")
        descriptor = as_str(raw["fp_dpks_descriptor"], "fp_dpks_descriptor")
        if not (pp_path / descriptor).is_file():
            raise UserError(f"{pp_path / descriptor} not found", "fp_dpks_descriptor", "a file in fp_pp_path")
    model = given.get("deepks_model")
    if model is not None and not (pp_path / model).is_file():
        raise UserError(f"{pp_path / model} not found", f"{where}.deepks_model", "a DeePKS model file")
    return orb, descriptor, model


@dataclass(frozen=True)
class AbacusSettings:
    raw: dict[str, Any]  # the keys as given (for ``dpgen check``)
    lines: tuple[tuple[str, str], ...]  # INPUT after "calculation scf"
    kpt: str | None  # KPT text; None with kspacing
    pp_path: str
    pp_files: tuple[str, ...]
    orb_files: tuple[str, ...] | None  # only with basis_type lcao / lcao_in_pw
    descriptor: str | None  # only with deepks_out_labels or deepks_scf
    model: str | None  # user_fp_params.deepks_model

    def as_json(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)

    @property
    def suffix(self) -> str:
        return next((v for k, v in self.lines if k.lower() == "suffix"), "ABACUS")

    def links(self) -> dict[str, Path]:
        """{name in the task: file of fp_pp_path} for every file the task needs."""
        names = [*self.pp_files, *(self.orb_files or ()), *filter(None, (self.descriptor, self.model))]
        out: dict[str, Path] = {}
        for name in names:
            src = Path(self.pp_path) / name
            if out.setdefault(Path(name).name, src) != src:
                raise UserError(f"two files named {Path(name).name!r}", "fp_pp_files",
                                "distinct file names (they are linked side by side into each task)")
        return out


# ----- the labeler --------------------------------------------------------------------------


def _mass(name: str) -> float:
    return float(atomic_masses[atomic_numbers[name]]) if name in atomic_numbers else 1.0


def unconverged_mark(text: str) -> str | None:
    low = text.lower()
    return next((m for m in UNCONVERGED_MARKS if m in low), None)


def notice(text: str) -> str | None:
    """The first message of ABACUS's ``NOTICE`` box (why it stopped), if any."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "NOTICE":
            for nxt in lines[i + 1:]:
                s = nxt.strip()
                if s and set(s) != {"!"}:
                    return s
    return None


@register("abacus")
class AbacusLabeler(Labeler):
    PER_TYPE = ("fp_pp_files", "fp_orb_files")
    KEYS = {
        "fp_pp_path": Field(as_str, default=None, doc="directory of the pp/orbital/DeePKS files"),
        "fp_pp_files": Field(list_of(as_str, min_len=1), default=None, doc="one pseudopotential per type"),
        "fp_orb_files": Field(list_of(as_str), default=None, doc="one numerical orbital per type (LCAO)"),
        "fp_dpks_descriptor": Field(as_str, default=None, doc="DeePKS descriptor file (in fp_pp_path)"),
        "user_fp_params": Field(as_dict, default=None, doc="INPUT keys and values"),
        "fp_incar": Field(as_str, default=None, doc="an INPUT file (instead of user_fp_params)"),
        "fp_kpt_file": Field(as_str, default=None, doc="a KPT file"),
        "k_points": Field(list_of(as_int), default=None, doc="[n1, n2, n3, s1, s2, s3] for KPT"),
    }
    outlog = OUTPUT
    errlog = "abacus.err"

    @classmethod
    def parse_settings(cls, raw: dict[str, Any], path: str) -> AbacusSettings:
        for key in ("fp_pp_path", "fp_pp_files"):
            if raw.get(key) is None:
                raise UserError(f"missing required key '{key}'", key, cls.KEYS[key].doc)
        pp_path = Path(as_str(raw["fp_pp_path"], "fp_pp_path")).expanduser()
        params, where = _params(raw)
        lines = input_lines(params, where)
        given = {k.lower(): v for k, v in lines}
        pp_files = _files(raw, "fp_pp_files", pp_path, "a pseudopotential file")
        orb, descriptor, model = _extra_files(raw, given, pp_path, where)
        return AbacusSettings(copy.deepcopy(raw), tuple(lines), _kpt(raw, given), str(pp_path.resolve()),
                              pp_files, orb, descriptor, model)

    def __init__(self, settings: AbacusSettings, type_map: tuple[str, ...]) -> None:
        super().__init__(settings, type_map)
        for key, files in (("fp_pp_files", settings.pp_files), ("fp_orb_files", settings.orb_files)):
            if files is not None and len(files) != len(self.type_map):
                raise UserError(f"{len(files)} files for {len(self.type_map)} types", key,
                                "one per type_map entry, in type_map order")
        settings.links()  # distinct file names

    # --- inputs ---------------------------------------------------------------------------
    def input_text(self, frame: dpdata.System) -> str:
        ntype = str(sum(1 for n in frame["atom_numbs"] if n > 0))
        lines = [f"{k} {ntype if k.lower() == 'ntype' else v}" for k, v in self.settings.lines]
        return "\n".join(["INPUT_PARAMETERS", "calculation scf", *lines]) + "\n"

    def write_stru(self, frame: dpdata.System, path: Path) -> None:
        s: AbacusSettings = self.settings
        names = list(frame["atom_names"])
        unknown = [n for n in names if n not in self.type_map]
        if unknown:
            raise UserError(f"type {unknown[0]!r} of a frame is not in type_map", "type_map", "every type")
        idx = [self.type_map.index(n) for n in names]
        frame.to("abacus/stru", str(path), frame_idx=0, mass=[_mass(n) for n in names],
                 pp_file=[Path(s.pp_files[i]).name for i in idx],
                 numerical_orbital=[Path(s.orb_files[i]).name for i in idx] if s.orb_files else None,
                 numerical_descriptor=Path(s.descriptor).name if s.descriptor else None)

    def write_inputs(self, frame: dpdata.System, task_dir: Path) -> None:
        s: AbacusSettings = self.settings
        task_dir = Path(task_dir)
        self.write_conf(frame, task_dir)
        (task_dir / INPUT).write_text(self.input_text(frame))
        self.write_stru(frame, task_dir / STRU)
        if s.kpt is not None:
            (task_dir / KPT).write_text(s.kpt)
        for name, src in s.links().items():
            relink(task_dir / name, src)

    def command(self, base_command: str) -> str:
        return base_command  # ABACUS reads INPUT, STRU and KPT in its working directory

    def forward_files(self) -> list[str]:
        kpt = [KPT] if self.settings.kpt is not None else []
        return [INPUT, STRU, *kpt, *self.settings.links()]

    def backward_files(self) -> list[str]:
        return [OUTPUT, self.errlog, f"OUT.{self.settings.suffix}"]

    # --- outputs --------------------------------------------------------------------------
    def log_path(self, task_dir: Path) -> Path:
        return Path(task_dir) / f"OUT.{self.settings.suffix}" / LOG

    def _texts(self, task_dir: Path) -> str:
        paths = (self.log_path(task_dir), Path(task_dir) / OUTPUT)
        return "\n".join(p.read_text(errors="replace") for p in paths if p.is_file())

    def diagnose(self, task_dir: Path) -> Failure | None:
        """After a non-zero exit: the SCF did not converge, or ABACUS said why it stopped."""
        text = self._texts(task_dir)
        mark = unconverged_mark(text)
        if mark:
            return Failure("unconverged", f"abacus: {mark}")
        why, info = notice(text), read_task_rc(task_dir)
        if why and info is not None:
            return Failure("crashed", f"exit code {info.rc}; ABACUS: {why}")
        return None

    def parse(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        log = self.log_path(task_dir)
        rel = f"OUT.{self.settings.suffix}/{LOG}"
        if not log.is_file() or log.stat().st_size == 0:
            return Failure("missing_output", f"no {rel} in {task_dir}")
        text = self._texts(task_dir)
        mark = unconverged_mark(text)
        if mark:
            return Failure("unconverged", f"abacus: {mark}")
        if FINAL_MARK not in log.read_text(errors="replace"):
            why = notice(text) or "no message"
            return Failure("crashed", f"ABACUS stopped before the end of the SCF ({why}): "
                                      f"no {FINAL_MARK} in {rel}")
        try:
            system = dpdata.LabeledSystem(str(task_dir), fmt="abacus/scf", type_map=list(self.type_map))
        except Exception as exc:  # noqa: BLE001 - any dpdata failure is a parse error of this task
            return Failure("parse_error", f"dpdata abacus/scf: {type(exc).__name__}: {exc}")
        if system.get_nframes() == 0:
            return Failure("parse_error", f"dpdata abacus/scf read no labels from {rel} (no final energy)")
        if system["forces"].shape != (1, system.get_natoms(), 3):
            return Failure("parse_error", f"no TOTAL-FORCE block in {rel}")
        keep = [k for k in LABEL_KEYS if k in system.data]  # not dpdata's STRU extras (move, pp_files)
        return self.checked(dpdata.LabeledSystem(data={k: system.data[k] for k in keep}))
