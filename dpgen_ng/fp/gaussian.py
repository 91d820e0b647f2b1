"""Gaussian (g09 / g16): molecular single points (energy, forces), parsed with dpdata's
``gaussian/log``. Gaussian cannot run here; the tests use a real DP-GEN task.

DP-GEN's keys under ``fp_params`` (alias ``user_fp_params``): ``keywords`` (one route, or a list of
routes run one after the other with ``--link1--``), ``nproc``, ``charge``, ``multiplicity`` (an
integer or ``"auto"``), ``fragment_guesses`` and ``basis_set``. The input ``input`` is fed to
Gaussian on stdin and the log is its stdout, ``output`` (DP-GEN's ``g16 < input``).

``multiplicity: "auto"`` follows DP-GEN: the frame is split into molecules (atoms closer than the
sum of their covalent radii + 0.45 Å, Open Babel's rule without its valence clean-up); an O2
molecule is a triplet, any other molecule a singlet or doublet by its electron count. Unlike
DP-GEN the charge is counted in the electron parity (DP-GEN writes an impossible multiplicity for an
odd charge).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata
import numpy as np
from ase.data import atomic_numbers, covalent_radii
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from dpgen_ng.config.fields import (
    Field,
    as_bool,
    as_dict,
    as_int,
    as_str,
    either,
    join,
    one_of,
    parse_section,
    positive,
    str_or_list_of_str,
)
from dpgen_ng.errors import UserError
from dpgen_ng.fp import register
from dpgen_ng.fp.base import Failure, Labeler

INPUT = "input"
OUTPUT = "output"
TITLE = "DPGEN"
CHK = "dpgen.chk"  # multi-step runs only (DP-GEN: a random uuid name; one task dir per run here)
BOND_TOLERANCE = 0.45  # Å over the sum of covalent radii (Open Babel's ConnectTheDots)
BOND_MIN = 0.4  # Å: closer pairs are not bonds (Open Babel)
CONVERGENCE_FAILURE = "Convergence failure -- run terminated."
TERMINATION = re.compile(r"^ *(Normal|Error) termination", re.MULTILINE)
FORCE_WORD = re.compile(r"\bforce\b", re.IGNORECASE)

CLUSTER_WHY = "remove it; Gaussian labels whole frames here (DP-GEN's cluster cutting comes later)"
_UNSUPPORTED = {
    "keywords_high_multiplicity": "remove it; it needs Open Babel's radical perception",
    **{k: CLUSTER_WHY for k in ("use_clusters", "cluster_cutoff", "cluster_cutoff_hard", "cluster_minify")},
}


def _keywords(value: Any, where: str) -> tuple[str, ...]:
    routes = str_or_list_of_str(value, where)
    if not routes or not all(r.strip() for r in routes):
        raise UserError("empty route", where, "a route such as \"force b3lyp/6-31g**\", or a list of them")
    for i, route in enumerate(routes):
        if route.lstrip().startswith("#"):
            raise UserError(f"route {route!r} starts with '#'", join(where, i) if len(routes) > 1 else where,
                            "the route without '#' (it is added)")
    if not any(FORCE_WORD.search(r) for r in routes):
        raise UserError("no 'force' in the route", where,
                        "a route with the 'force' keyword (forces are the labels), e.g. "
                        "\"force b3lyp/6-31g**\"")
    return tuple(routes)


_PARAMS = {
    "keywords": Field(_keywords, doc="the route without '#', e.g. \"force b3lyp/6-31g**\", or a list"),
    "nproc": Field(positive(as_int), doc="the %nproc line"),
    "charge": Field(as_int, default=0),
    "multiplicity": Field(either(positive(as_int), one_of("auto"), expected="a positive integer or 'auto'"),
                          default="auto"),
    "fragment_guesses": Field(as_bool, default=False, doc="guess=fragment=N for frames of several molecules"),
    "basis_set": Field(as_str, default=None, doc="a custom basis set, written after the coordinates"),
}


@dataclass(frozen=True)
class GaussianSettings:
    keywords: tuple[str, ...]
    nproc: int
    charge: int = 0
    multiplicity: int | str = "auto"
    fragment_guesses: bool = False
    basis_set: str | None = None

    def as_json(self) -> dict[str, Any]:
        params: dict[str, Any] = {"keywords": list(self.keywords), "nproc": self.nproc,
                                  "charge": self.charge, "multiplicity": self.multiplicity,
                                  "fragment_guesses": self.fragment_guesses}
        if self.basis_set is not None:
            params["basis_set"] = self.basis_set
        return {"fp_params": params}


def fragments(symbols: list[str], coords: np.ndarray) -> tuple[int, np.ndarray]:
    """(number of molecules, molecule index of each atom): atoms are bonded when their distance is in
    [0.4 Å, r_cov(a) + r_cov(b) + 0.45 Å] (no periodic images, as the molecule Gaussian sees)."""
    xyz = np.asarray(coords, dtype=float)
    radii = np.array([covalent_radii[atomic_numbers[s]] for s in symbols])
    dist = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)
    bonded = (dist <= radii[:, None] + radii[None, :] + BOND_TOLERANCE) & (dist >= BOND_MIN)
    count, labels = connected_components(csr_matrix(bonded), directed=False)
    return int(count), labels


def molecule_multiplicity(symbols: list[str]) -> int:
    """DP-GEN's rule for one neutral molecule: O2 is a triplet, else 1 or 2 by the electron count."""
    if sorted(symbols) == ["O", "O"]:
        return 3
    return sum(atomic_numbers[s] for s in symbols) % 2 + 1


def auto_multiplicity(symbols: list[str], coords: np.ndarray,
                      charge: int) -> tuple[int, list[int], np.ndarray]:
    """(total multiplicity, multiplicity of each molecule, molecule index of each atom). The total:
    1 or 2 by the electron parity, +2 per O2 molecule (DP-GEN's rule without fragment guesses)."""
    count, labels = fragments(symbols, coords)
    per = [molecule_multiplicity([s for s, f in zip(symbols, labels) if f == i]) for i in range(count)]
    electrons = sum(atomic_numbers[s] for s in symbols) - charge
    return 1 + electrons % 2 + 2 * per.count(3), per, labels


@register("gaussian")
class GaussianLabeler(Labeler):
    KEYS = {
        "fp_params": Field(as_dict, doc="Gaussian options: " + ", ".join(_PARAMS),
                           aliases=("user_fp_params",)),
    }
    outlog = OUTPUT
    errlog = "gaussian.err"

    def __init__(self, settings: Any, type_map: tuple[str, ...]) -> None:
        super().__init__(settings, type_map)
        for i, name in enumerate(self.type_map):
            if name not in atomic_numbers or name == "X":
                raise UserError(f"type {name!r} is not an element", f"type_map[{i}]",
                                "chemical symbols (they are written into the Gaussian input)")

    @classmethod
    def parse_settings(cls, raw: dict[str, Any], path: str) -> GaussianSettings:
        parse_section(raw, cls.KEYS, path)
        where = join(path, "fp_params")
        p = parse_section(raw["fp_params"], _PARAMS, where, unsupported=_UNSUPPORTED)
        if p["fragment_guesses"] and p["multiplicity"] != "auto":
            raise UserError("fragment_guesses needs multiplicity 'auto'", join(where, "multiplicity"),
                            "\"auto\" (each molecule gets its own), or fragment_guesses false")
        if p["fragment_guesses"] and p["charge"] != 0:
            raise UserError("fragment_guesses with a charge is not supported yet", join(where, "charge"),
                            "0, or fragment_guesses false (DP-GEN gives every molecule the whole charge)")
        return GaussianSettings(**p)

    # --- input ----------------------------------------------------------------------------
    def molecule_spec(self, frame: dpdata.System) -> tuple[str, str, list[str], int]:
        """(charge-multiplicity line, the same for --link1-- steps, atom lines, number of molecules
        when fragment guesses are used, else 0)."""
        s: GaussianSettings = self.settings
        symbols = [frame["atom_names"][t] for t in frame["atom_types"]]
        coords = np.asarray(frame["coords"][0], dtype=float)
        atoms = [f"{sym} {x:f} {y:f} {z:f}" for sym, (x, y, z) in zip(symbols, coords)]
        if s.multiplicity != "auto":
            return f"{s.charge} {s.multiplicity}", f"{s.charge} {s.multiplicity}", atoms, 0
        mult, per, labels = auto_multiplicity(symbols, coords, s.charge)
        plain = f"{s.charge} {mult}"
        if not s.fragment_guesses or len(per) == 1:
            return plain, plain, atoms, 0
        total = sum(per) - len(per) + 1  # +1 per unpaired electron of each molecule (charge is 0)
        spin = f"{s.charge} {total}" + "".join(f" {s.charge} {m}" for m in per)
        atoms = [f"{sym}(Fragment={f + 1}) {x:f} {y:f} {z:f}"
                 for sym, f, (x, y, z) in zip(symbols, labels, coords)]
        return spin, plain, atoms, len(per)

    def input_text(self, frame: dpdata.System) -> str:
        """The .gjf text for one frame, laid out as DP-GEN's ``make_gaussian_input``."""
        s: GaussianSettings = self.settings
        spin, plain, atoms, nfrag = self.molecule_spec(frame)
        routes = list(s.keywords)
        if nfrag:
            routes[0] += f" guess=fragment={nfrag}"
        link0 = ([f"%chk={CHK}"] if len(routes) > 1 else []) + [f"%nproc={s.nproc}"]
        lines = [*link0, f"#{routes[0]}", "", TITLE, "", spin, *atoms]
        if s.basis_set is not None:
            lines += ["", s.basis_set, ""]
        for route in routes[1:]:  # later steps take the geometry from the checkpoint (geom=check)
            lines += ["\n--link1--", *link0, f"#{route}", "", TITLE, "", plain, ""]
        return "\n".join([*lines, "\n"])

    def write_inputs(self, frame: dpdata.System, task_dir: Path) -> None:
        self.write_conf(frame, task_dir)
        (Path(task_dir) / INPUT).write_text(self.input_text(frame))

    def command(self, base_command: str) -> str:
        return f"{base_command} < {INPUT}"  # the log is stdout: outlog = output

    def forward_files(self) -> list[str]:
        return [INPUT]

    def backward_files(self) -> list[str]:
        return [OUTPUT, self.errlog]

    # --- output ---------------------------------------------------------------------------
    def diagnose(self, task_dir: Path) -> Failure | None:
        """Unconverged SCF, or Gaussian's own error message, when the log does not end normally."""
        out = Path(task_dir) / OUTPUT
        text = out.read_text(errors="replace") if out.is_file() else ""
        ends = TERMINATION.findall(text)
        if not ends or ends[-1] == "Normal":
            return None
        if CONVERGENCE_FAILURE in text:
            return Failure("unconverged", f"gaussian: {CONVERGENCE_FAILURE}")
        return Failure("crashed", f"gaussian: {error_reason(text)}")

    def parse(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        failure = self.precheck(task_dir)
        if failure is not None:
            return failure
        path = Path(task_dir) / OUTPUT
        ends = TERMINATION.findall(path.read_text(errors="replace"))
        done = ends[::-1].index("Error") if "Error" in ends else len(ends)  # normal ends after an error
        steps = len(self.settings.keywords)  # one "Normal termination" per --link1-- step
        if done < steps:
            return Failure("crashed", f"{OUTPUT} has {done} 'Normal termination' for {steps} step(s): "
                                      "the run was cut short")
        try:
            system = dpdata.LabeledSystem(str(path), fmt="gaussian/log")
            if system.get_nframes() == 0:  # dpdata returns no frame when the log has no forces
                return Failure("parse_error", f"dpdata gaussian/log: no forces in {OUTPUT}")
            system.apply_type_map(list(self.type_map))
        except Exception as exc:  # noqa: BLE001 - any dpdata failure is a parse error of this task
            return Failure("parse_error", f"dpdata gaussian/log: {type(exc).__name__}: {exc}")
        return self.checked(system)


def error_reason(text: str) -> str:
    """Gaussian's reason for its last error termination: the line before it, and the link."""
    lines = text.splitlines()
    at = max(i for i, ln in enumerate(lines) if TERMINATION.match(ln) and "Error" in ln)
    before = [ln.strip() for ln in lines[:at] if ln.strip() and not TERMINATION.match(ln)]
    link = lines[at].strip().split(" at ")[0]
    return f"{before[-1]} ({link})" if before else link
