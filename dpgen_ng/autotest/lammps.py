"""``interaction.type: deepmd``: one DeePMD model evaluated by LAMMPS (``pair_style deepmd``).

A task holds ``conf.lmp`` (written by dpdata, which rotates the cell to lower triangular, as
LAMMPS needs), ``rotation.txt`` (that rotation), ``in.lammps`` and a link to the model. LAMMPS writes the
final energy, pressure tensor and box to ``final.txt`` and the final positions and forces to
``final.dump``; they are rotated back so that structures, forces and stresses are in the frame
of the POSCAR (the elastic constants depend on it).

Relaxations (DP-GEN's mapping): positions with ``minimize``; the cell with ``fix box/relax``
(``iso`` → ``aniso`` → ``tri`` for shape and volume, ``iso`` for volume only). LAMMPS cannot keep
the volume while relaxing the shape, so ``relax_shape`` without ``relax_vol`` relaxes positions
only, as DP-GEN does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata
import numpy as np
from ase.data import atomic_masses, atomic_numbers
from dpdata.formats.lammps.lmp import rotate_to_lower_triangle

from dpgen_ng.fp.base import Failure, JobKind, Relaxed, relax_dofs, unsupported_relax
from dpgen_ng.io import relink

INPUT = "in.lammps"
CONF = "conf.lmp"
ROTATION = "rotation.txt"
FINAL = "final.txt"
DUMP = "final.dump"
LOG = "log.lammps"
OUTLOG, ERRLOG = "lammps.out", "lammps.err"
BAR_PER_EV_A3 = 1.602176634e6


@dataclass(frozen=True)
class Minimize:
    """LAMMPS ``minimize`` arguments (DP-GEN's ``cal_setting`` keys and defaults)."""

    etol: float = 1e-12
    ftol: float = 1e-6
    maxiter: int = 5000
    maxeval: int = 500000


def lower_triangular(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L, R) with ``cell = L @ R``: L is the cell as dpdata writes it for LAMMPS (lower
    triangular, positive diagonal), R the rotation dpdata applied."""
    cell = np.asarray(cell, dtype=float)
    lower, _ = rotate_to_lower_triangle(cell, np.zeros((1, 3)))
    rot = np.linalg.solve(lower, cell)
    if np.linalg.det(rot) < 0:
        raise ValueError("a left-handed cell cannot be given to LAMMPS")
    return lower, rot


def relax_commands(dofs: tuple[bool, bool, bool], m: Minimize) -> list[str]:
    pos, shape, vol = dofs
    if shape and not vol:
        shape = False  # LAMMPS cannot relax the shape at a fixed volume (DP-GEN does the same)
    minimize = [f"minimize        {m.etol:g} {m.ftol:g} {m.maxiter} {m.maxeval}"]
    if not (pos or shape or vol):
        return ["run             0"]
    out = [] if pos else ["fix             frozen all setforce 0.0 0.0 0.0"]
    out.append("min_style       cg")
    if not (shape or vol):
        return out + minimize
    if vol and not shape:
        return out + ["fix             relax all box/relax iso 0.0 vmax 0.001", *minimize]
    for coupling in ("iso", "aniso", "tri"):
        out += [f"fix             relax all box/relax {coupling} 0.0 vmax 0.001", *minimize, "unfix relax"]
    return out


def input_text(type_map: tuple[str, ...], model: str, commands: list[str]) -> str:
    lines = ["clear", "units           metal", "boundary        p p p", "atom_style      atomic",
             "box             tilt large", f"read_data       {CONF}"]
    lines += [f"mass            {i + 1} {atomic_masses[atomic_numbers[el]]:.4f}"
              for i, el in enumerate(type_map)]
    lines += ["neigh_modify    every 1 delay 0 check no",
              f"pair_style      deepmd {model}",
              "pair_coeff      * * " + " ".join(type_map),
              "thermo_style    custom step pe pxx pyy pzz pxy pxz pyz lx ly lz vol",
              "thermo          100", *commands,
              f"write_dump      all custom {DUMP} id type x y z fx fy fz modify sort id format float %.12g",
              f'print           "$(pe:%.12g) $(pxx:%.12g) $(pyy:%.12g) $(pzz:%.12g) $(pxy:%.12g) '
              f'$(pxz:%.12g) $(pyz:%.12g) $(lx:%.12g) $(ly:%.12g) $(lz:%.12g) $(xy:%.12g) $(xz:%.12g) '
              f'$(yz:%.12g)" file {FINAL}']
    return "\n".join(lines) + "\n"


def read_final(task_dir: Path, type_map: tuple[str, ...]) -> dpdata.LabeledSystem | Failure:
    """The final structure, energy, forces and virial, in the frame of the task's POSCAR."""
    final, dump = Path(task_dir) / FINAL, Path(task_dir) / DUMP
    if not final.is_file() or not dump.is_file():
        return Failure("missing_output", f"LAMMPS wrote no {FINAL} / {DUMP}")
    try:
        v = [float(x) for x in final.read_text().split()]
        pe, pxx, pyy, pzz, pxy, pxz, pyz, lx, ly, lz, xy, xz, yz = v
        rows = dump.read_text().splitlines()
        start = next(i for i, r in enumerate(rows) if r.startswith("ITEM: ATOMS")) + 1
        atoms = np.array([[float(x) for x in r.split()] for r in rows[start:] if r.strip()])
        rot = np.loadtxt(Path(task_dir) / ROTATION).reshape(3, 3)
    except (ValueError, StopIteration, OSError) as exc:
        return Failure("parse_error", f"{FINAL}/{DUMP}: {exc}")
    lower = np.array([[lx, 0, 0], [xy, ly, 0], [xz, yz, lz]])
    press = np.array([[pxx, pxy, pxz], [pxy, pyy, pyz], [pxz, pyz, pzz]]) / BAR_PER_EV_A3
    cell = lower @ rot
    volume = abs(np.linalg.det(lower))
    types = atoms[:, 1].astype(int) - 1
    present = sorted(set(types.tolist()))
    data = {
        "atom_names": list(type_map), "atom_numbs": [int(np.sum(types == t)) for t in range(len(type_map))],
        "atom_types": types, "orig": np.zeros(3), "cells": cell[None],
        "coords": (atoms[:, 2:5] @ rot)[None], "energies": np.array([pe]),
        "forces": (atoms[:, 5:8] @ rot)[None], "virials": (rot.T @ press @ rot * volume)[None],
    }
    if not present or not np.all(np.isfinite(v)):
        return Failure("non_finite", "LAMMPS gave NaN or no atoms")
    return dpdata.LabeledSystem(data=data)


def stop_reason(task_dir: Path) -> str:
    log_file = Path(task_dir) / LOG
    text = log_file.read_text(errors="replace") if log_file.is_file() else ""
    found = re.findall(r"Stopping criterion = (.+)", text)
    return found[-1].strip() if found else ""


class DeepmdLammps:
    """Jobs (single point, relaxation) of one DeePMD model in LAMMPS, for ``dpgen test``."""

    name = "deepmd"

    def __init__(self, model: Path, type_map: tuple[str, ...]) -> None:
        self.model = Path(model)
        self.type_map = tuple(type_map)

    def describe(self) -> str:
        return f"deepmd ({self.model.name}, LAMMPS)"

    def jobs(self, options: dict[str, Any]) -> dict[str, JobKind]:
        dofs = relax_dofs(options)
        if dofs[1] and not dofs[2] and not dofs[0]:
            raise unsupported_relax("LAMMPS", dofs)
        minimize = Minimize(**{k: options[k] for k in ("etol", "ftol", "maxiter", "maxeval") if k in options})

        def make(commands: list[str], relax: bool) -> JobKind:
            def write(frame: dpdata.System, task_dir: Path) -> None:
                task_dir = Path(task_dir)
                frame.to("vasp/poscar", str(task_dir / "POSCAR"))
                lmp = frame.copy()
                lmp.apply_type_map(list(self.type_map))  # LAMMPS types in the model's order
                lmp.to("lammps/lmp", str(task_dir / CONF))  # rotated to lower triangular by dpdata
                _, rot = lower_triangular(frame["cells"][0])
                rows = (" ".join(f"{x:.15f}" for x in r) for r in rot)
                (task_dir / ROTATION).write_text("\n".join(rows) + "\n")
                (task_dir / INPUT).write_text(input_text(self.type_map, self.model.name, commands))
                relink(task_dir / self.model.name, self.model.resolve())

            def parse(task_dir: Path) -> Any:
                labels = read_final(Path(task_dir), self.type_map)
                if isinstance(labels, Failure) or not relax:
                    return labels
                reason = stop_reason(Path(task_dir))
                structure = dpdata.System(data={k: labels.data[k] for k in
                                                ("atom_names", "atom_numbs", "atom_types", "orig", "cells",
                                                 "coords")})
                return Relaxed(structure, not reason.startswith("max"), labels)

            return JobKind(write, lambda base: f"{base} -i {INPUT} -log {LOG}",
                           (INPUT, CONF, ROTATION, self.model.name), (FINAL, DUMP, LOG), parse,
                           OUTLOG, ERRLOG)

        return {"single": make(["run             0"], False),
                "relax": make(relax_commands(dofs, minimize), True)}
