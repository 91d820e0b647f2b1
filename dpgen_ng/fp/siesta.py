"""SIESTA: DFT single points (energy, forces, stress), parsed with dpdata's ``siesta/output``.

The input ``input`` is the .fdf DP-GEN writes (same keywords, blocks and order) from
``fp_params``: ``ecut`` (MeshCutoff, Ry), ``ediff`` (DM.Tolerance), ``mixingWeight``
(DM.MixingWeight), ``NumberPulay`` (DM.NumberPulay) and ``kspacing`` (1/Å, a Monkhorst-Pack grid
as VASP's KSPACING); a key left out is not written and SIESTA's default applies. SIESTA reads
the input on stdin and writes ``output`` on stdout: ``<machine command> < input``.

Differences from DP-GEN, all on purpose:

* only the species present in the frame are listed (dpdata's reader needs species 1..n to
  occur, and counts atoms per species it sees);
* ``mixingWeight`` is written (DP-GEN tests a misspelled key, so it never writes it);
* each pseudopotential is linked into the task as ``<type>.psf`` (``.psml`` for PSML files),
  the name SIESTA looks for, whatever the name of the file in ``fp_pp_path``;
* coordinates and cell carry 10 decimals (DP-GEN: 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata
import numpy as np
from ase.data import atomic_numbers

from dpgen_ng.config.fields import (
    Field,
    as_dict,
    as_float,
    as_int,
    as_str,
    join,
    list_of,
    parse_section,
    positive,
)
from dpgen_ng.errors import UserError
from dpgen_ng.fp import register
from dpgen_ng.fp.base import Failure, Labeler
from dpgen_ng.io import relink

INPUT = "input"
OUTPUT = "output"
UNCONVERGED = "SCF_NOT_CONV"  # SIESTA ≥ 4.0: "SCF_NOT_CONV: SCF did not converge ..."
OUT_OF_TIME = "OUT_OF_TIME"  # die() after the wall time ran out (printed with SCF_NOT_CONV)
END_MARK = "End of run"  # ">> End of run: <date>": SIESTA's last timestamp (DP-GEN checks it)
START_MARK = ">> Start of run"

FP_PARAMS: dict[str, Field] = {
    "ecut": Field(positive(as_float), default=None, doc="MeshCutoff (Ry)"),
    "ediff": Field(positive(as_float), default=None, doc="DM.Tolerance"),
    "kspacing": Field(positive(as_float), default=None, doc="k-point spacing (1/Å) of a Monkhorst-Pack grid"),
    "mixingWeight": Field(positive(as_float), default=None, doc="DM.MixingWeight"),
    "NumberPulay": Field(positive(as_int, strict=False), default=None, doc="DM.NumberPulay"),
}


def pp_link_name(element: str, pp_file: str) -> str:
    """The name SIESTA opens for a species labelled ``element``."""
    return element + (".psml" if pp_file.lower().endswith(".psml") else ".psf")


def kgrid(cell: np.ndarray, kspacing: float | None) -> list[str]:
    """The kgrid_Monkhorst_Pack block for ``kspacing`` (none: SIESTA's Γ-only default)."""
    if not kspacing:
        return []
    rec = np.linalg.inv(np.asarray(cell, dtype=float)).T
    mesh = [max(1, math.ceil(2 * math.pi * float(np.linalg.norm(b)) / kspacing)) for b in rec]
    rows = [["0", "0", "0", "0.0"] for _ in range(3)]
    for i, n in enumerate(mesh):
        rows[i][i] = str(n)
    return ["%block kgrid_Monkhorst_Pack", *("\t".join(r) for r in rows),
            "%endblock kgrid_Monkhorst_Pack"]


def _header(natoms: int, nspecies: int, params: dict[str, Any]) -> list[str]:
    lines = ["SystemName        system", "SystemLabel       system",
             f"NumberOfAtoms     {natoms}", f"NumberOfSpecies   {nspecies}", "",
             "WriteForces       T", "WriteCoorStep     T", "WriteCoorXmol     T",
             "WriteMDXmol       T", "WriteMDHistory    T", ""]
    if params.get("ecut") is not None:
        lines.append(f"MeshCutoff            {params['ecut']:g} Ry")
    if params.get("ediff") is not None:
        lines.append(f"DM.Tolerance          {params['ediff']:e}")
    if params.get("mixingWeight") is not None:
        lines.append(f"DM.MixingWeight       {params['mixingWeight']:f}")
    if params.get("NumberPulay") is not None:
        lines.append(f"DM.NumberPulay         {params['NumberPulay']:d}")
    return lines + ["DM.UseSaveDM          true", "XC.functional          GGA",
                    "XC.authors             PBE", "MD.UseSaveXV           T", "",
                    "DM.UseSaveDM           F", "WriteDM                F",
                    "WriteDM.NetCDF         F", "WriteDMHS.NetCDF       F"]


def _geometry(frame: dpdata.System, species: list[str]) -> list[str]:
    lines = ["LatticeConstant 1.00 Ang", "%block LatticeVectors"]
    lines += [" ".join(f"{x:.10f}" for x in row) for row in frame["cells"][0]]
    lines += ["%endblock LatticeVectors", "", "AtomicCoordinatesFormat Ang",
              "%block AtomicCoordinatesAndAtomicSpecies"]
    names = frame["atom_names"]
    for t, xyz in zip(frame["atom_types"], frame["coords"][0]):
        el = names[t]
        lines.append(" ".join(f"{x:.10f}" for x in xyz) + f" {species.index(el) + 1} {el}")
    return lines + ["%endblock AtomicCoordinatesAndAtomicSpecies"]


@dataclass(frozen=True)
class SiestaSettings:
    fp_params: dict[str, Any]
    pp_path: str
    pp_files: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        params = {k: v for k, v in self.fp_params.items() if v is not None}
        return {"fp_params": params, "fp_pp_path": self.pp_path, "fp_pp_files": list(self.pp_files)}


@register("siesta")
class SiestaLabeler(Labeler):
    PER_TYPE = ("fp_pp_files",)
    KEYS = {
        "fp_params": Field(as_dict, default=dict, doc="ecut, ediff, kspacing, mixingWeight, NumberPulay",
                           aliases=("user_fp_params",)),
        "fp_pp_path": Field(as_str, default=None, doc="directory of the pseudopotential files"),
        "fp_pp_files": Field(list_of(as_str, min_len=1), default=None,
                             doc="one .psf (or .psml) file per type_map entry, in type_map order"),
    }
    outlog = OUTPUT
    errlog = "siesta.err"
    UNCONVERGED_MARK = UNCONVERGED

    @classmethod
    def parse_settings(cls, raw: dict[str, Any], path: str) -> SiestaSettings:
        p = parse_section(raw, cls.KEYS, path)
        params = parse_section(p["fp_params"], FP_PARAMS, join(path, "fp_params"))
        if p["fp_pp_files"] is None:
            raise UserError("missing required key 'fp_pp_files'", join(path, "fp_pp_files"),
                            cls.KEYS["fp_pp_files"].doc)
        pp_path = Path(p["fp_pp_path"] or ".").expanduser()
        for i, name in enumerate(p["fp_pp_files"]):
            if not (pp_path / name).is_file():
                raise UserError(f"{pp_path / name} not found", join(path, f"fp_pp_files[{i}]"),
                                "a pseudopotential file in fp_pp_path")
        return SiestaSettings(params, str(pp_path.resolve()), tuple(p["fp_pp_files"]))

    def input_text(self, frame: dpdata.System) -> str:
        """The .fdf of one frame, laid out as DP-GEN writes it."""
        s: SiestaSettings = self.settings
        counts = dict(zip(frame["atom_names"], frame["atom_numbs"]))
        species = [el for el in self.type_map if counts.get(el, 0) > 0]
        unknown = [el for el in species if el not in atomic_numbers or el == "X"]
        if unknown:
            raise UserError(f"type {unknown[0]!r} is not an element", "type_map",
                            "chemical symbols (SIESTA needs each species' atomic number)")
        lines = _header(frame.get_natoms(), len(species), s.fp_params) + ["", "%block Chemical_Species_label"]
        lines += [f"{i}\t{atomic_numbers[el]}\t{el}" for i, el in enumerate(species, 1)]
        lines += ["%endblock Chemical_Species_label", ""]
        grid = kgrid(frame["cells"][0], s.fp_params.get("kspacing"))
        lines += [*grid, ""] if grid else []
        return "\n".join(lines + _geometry(frame, species)) + "\n"

    def write_inputs(self, frame: dpdata.System, task_dir: Path) -> None:
        s: SiestaSettings = self.settings
        if len(s.pp_files) != len(self.type_map):
            raise UserError(f"{len(s.pp_files)} pseudopotential files for {len(self.type_map)} types",
                            "fp_pp_files", "one per type_map entry, in type_map order")
        task_dir = Path(task_dir)
        self.write_conf(frame, task_dir)
        (task_dir / INPUT).write_text(self.input_text(frame))
        for el, name in zip(self.type_map, s.pp_files):  # all of them, as DP-GEN links them
            relink(task_dir / pp_link_name(el, name), Path(s.pp_path) / name)

    def command(self, base_command: str) -> str:
        return f"{base_command} < {INPUT}"

    def forward_files(self) -> list[str]:
        s: SiestaSettings = self.settings
        return [INPUT, *(pp_link_name(el, name) for el, name in zip(self.type_map, s.pp_files))]

    def backward_files(self) -> list[str]:
        return [OUTPUT, self.errlog]

    def diagnose(self, task_dir: Path) -> Failure | None:
        out = Path(task_dir) / OUTPUT
        if out.is_file() and OUT_OF_TIME in out.read_text(errors="replace"):
            return Failure("crashed", "siesta: OUT_OF_TIME (the wall time ran out)")
        return super().diagnose(task_dir)

    def parse(self, task_dir: Path) -> dpdata.LabeledSystem | Failure:
        failure = self.precheck(task_dir)  # missing/empty output, SCF_NOT_CONV
        if failure is not None:
            return failure
        out = Path(task_dir) / OUTPUT
        text = out.read_text(errors="replace")
        if END_MARK not in text:
            return Failure("crashed", f"{OUTPUT} has no '{END_MARK}': SIESTA stopped early")
        runs = text.count(START_MARK)
        if runs > 1:
            return Failure("parse_error", f"{OUTPUT} holds {runs} SIESTA runs, expected one")
        return self._read(out)

    def _read(self, out: Path) -> dpdata.LabeledSystem | Failure:
        """dpdata's reading of a complete output, with its labels checked for shape and value."""
        try:
            system = dpdata.LabeledSystem(str(out), fmt="siesta/output", type_map=list(self.type_map))
            for key in ("energies", "forces", "virials"):  # dpdata keeps a "NaN" force as text
                if key in system.data:
                    system.data[key] = np.asarray(system.data[key], dtype=float)
        except Exception as exc:  # noqa: BLE001 - any dpdata failure is a parse error of this task
            return Failure("parse_error", f"dpdata siesta/output: {type(exc).__name__}: {exc}")
        natoms = system.get_natoms()
        shapes = {"energies": (1,), "forces": (1, natoms, 3), "virials": (1, 3, 3)}
        for key, shape in shapes.items():  # dpdata leaves a label it did not find empty
            got = np.shape(system.data.get(key, ()))
            if got != shape:
                return Failure("parse_error", f"dpdata siesta/output: {key} of shape {got}, not {shape}")
        return self.checked(system)
