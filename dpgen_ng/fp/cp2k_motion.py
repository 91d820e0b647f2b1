"""CP2K relaxations (GEO_OPT / CELL_OPT) and AIMD (NVT, CSVR thermostat).

Both use the labeler's input (defaults + ``user_fp_params``) with a different RUN_TYPE and a
MOTION section; results are read from CP2K's own trajectory files: ``DPGEN-pos-1.xyz`` (positions,
energy in the comment line), ``DPGEN-frc-1.xyz`` (forces) and, for relaxations, ``DPGEN-1.cell``
(the cell at full precision: the output's ``CELL|`` lines have three decimals). The stress is the
output's ``STRESS|`` block.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dpdata
import numpy as np
from ase.units import Bohr, Hartree

from dpgen_ng.fp.ase_jobs import complete_md
from dpgen_ng.fp.base import Failure, Relaxed, relax_dofs, unsupported_relax

POS = "DPGEN-pos-1.xyz"
FRC = "DPGEN-frc-1.xyz"
CELL = "DPGEN-1.cell"
EV_PER_A_IN_AU = Hartree / Bohr
EV_PER_A3_IN_GPA = 160.21766208
# "[a.u.]" since CP2K 2023, "(a.u.)" before
ENERGY = re.compile(r"ENERGY\| Total FORCE_EVAL \( \w+ \) energy [\[(]a\.u\.[\])]:\s+(\S+)")
SAME_ENERGY_HA = 1e-7  # the trajectory prints E with 10 decimals; a re-evaluation differs by ~1e-11


def relax_section(options: dict[str, Any], periodic_cell: bool) -> tuple[str, dict[str, Any]]:
    """GEO_OPT (positions) or CELL_OPT (positions, shape and volume); nothing else here."""
    dofs = relax_dofs(options)
    cell = periodic_cell and (dofs[1] or dofs[2])
    if dofs not in ((True, False, False), (True, True, True)) and cell:
        raise unsupported_relax("cp2k", dofs)
    kind = "CELL_OPT" if cell else "GEO_OPT"
    motion = {kind: {"MAX_ITER": int(options.get("relax_steps", 200)),
                     "MAX_FORCE": float(options.get("relax_fmax", 0.05)) / EV_PER_A_IN_AU},
              "PRINT": {name: {"EACH": {kind: 1}} for name in ("TRAJECTORY", "FORCES", "CELL")}}
    return kind, motion


def md_section(options: dict[str, Any]) -> dict[str, Any]:
    return {"MD": {"ENSEMBLE": "NVT", "STEPS": int(options.get("md_nstep", 10)),
                   "TIMESTEP": float(options.get("md_dt", 1.0)),
                   "TEMPERATURE": float(options.get("md_temp", 300.0)),
                   "THERMOSTAT": {"TYPE": "CSVR", "CSVR": {"TIMECON": 100}}},
            "PRINT": {"TRAJECTORY": {"EACH": {"MD": 1}}, "FORCES": {"EACH": {"MD": 1}}}}


def read_xyz_frames(path: Path) -> list[tuple[list[str], np.ndarray, str]]:
    """(symbols, positions, comment) per frame of a plain xyz trajectory."""
    lines = Path(path).read_text().splitlines()
    frames, i = [], 0
    while i < len(lines) and lines[i].strip():
        n = int(lines[i].split()[0])
        block = lines[i + 2 : i + 2 + n]
        if len(block) < n:
            break  # a frame cut short by a crash
        symbols = [ln.split()[0] for ln in block]
        xyz = np.array([[float(x) for x in ln.split()[1:4]] for ln in block])
        frames.append((symbols, xyz, lines[i + 1]))
        i += 2 + n
    return frames


def read_cell_file(path: Path) -> np.ndarray | None:
    """The last cell of CP2K's ``.cell`` trajectory: step, time, Ax Ay Az Bx … Cz, volume."""
    if not path.is_file():
        return None
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not rows or len(rows[-1]) < 11:
        return None
    return np.array(rows[-1][2:11], dtype=float).reshape(3, 3)


def read_stress_gpa(text: str) -> np.ndarray | None:
    """The last analytical stress tensor (GPa) in the ``STRESS|`` block format of CP2K ≥ 2023."""
    lines = text.splitlines()
    found = None
    for i, line in enumerate(lines):
        if "STRESS| Analytical stress tensor [GPa]" in line and i + 4 < len(lines):
            rows = [lines[i + 2 + k].split()[2:5] for k in range(3)]
            found = np.array(rows, dtype=float)
    return found


def read_virial(text: str, cell: np.ndarray) -> np.ndarray | None:
    """The virial (eV) from the last stress tensor in ``text``, for the given cell."""
    stress = read_stress_gpa(text)
    return None if stress is None else stress * abs(np.linalg.det(cell)) / EV_PER_A3_IN_GPA


def _system(frame_like: dpdata.System, symbols: list[str], xyz: np.ndarray,
            cell: np.ndarray) -> dpdata.System:
    names = frame_like["atom_names"]
    out = frame_like.copy()
    out.data["atom_types"] = np.array([names.index(s) for s in symbols])
    out.data["atom_numbs"] = [int(np.sum(out.data["atom_types"] == t)) for t in range(len(names))]
    out.data["coords"] = xyz[None]
    out.data["cells"] = cell[None]
    return out


def _comment_energy(comment: str) -> float | None:
    m = re.search(r"E\s*=\s*(\S+)", comment)
    return float(m.group(1)) if m else None


def final_labels(task_dir: Path, structure: dpdata.System, comment: str, text: str,
                 unconverged_mark: str) -> dpdata.LabeledSystem | None:
    """The labels of the relaxed structure, from the last force evaluation, or None.

    Only when that evaluation is of the last trajectory frame (same energy: CP2K re-evaluates at
    the minimum after converging, or the run stopped at MAX_ITER right after the step), its SCF
    converged, and its forces were written."""
    energies = list(ENERGY.finditer(text))
    frc = Path(task_dir) / FRC
    e_frame = _comment_energy(comment)
    if not energies or e_frame is None or not frc.is_file():
        return None
    last = energies[-1]
    e_last = float(last.group(1))
    forces = read_xyz_frames(frc)
    if not forces or abs(e_last - e_frame) > SAME_ENERGY_HA:
        return None
    e_forces = _comment_energy(forces[-1][2])
    if e_forces is None or abs(e_forces - e_last) > SAME_ENERGY_HA:
        return None
    scf = text.rfind("SCF WAVEFUNCTION OPTIMIZATION", 0, last.start())
    if unconverged_mark in text[max(scf, 0) : last.start()]:
        return None
    data = dict(structure.data, energies=np.array([e_last * Hartree]),
                forces=(forces[-1][1] * EV_PER_A_IN_AU)[None])
    virial = read_virial(text[last.start() :], structure["cells"][0])
    if virial is not None:
        data["virials"] = virial[None]
    return dpdata.LabeledSystem(data=data)


def parse_relax(task_dir: Path, conf: dpdata.System, output_name: str,
                unconverged_mark: str) -> Relaxed | Failure:
    text = (Path(task_dir) / output_name).read_text(errors="replace")
    pos = Path(task_dir) / POS
    if not pos.is_file():
        return Failure("missing_output", f"no {POS}")
    frames = read_xyz_frames(pos)
    cell = read_cell_file(Path(task_dir) / CELL)
    if not frames or cell is None:
        return Failure("parse_error", f"no final structure in {POS} or no cell in {CELL}")
    symbols, xyz, comment = frames[-1]
    structure = _system(conf, symbols, xyz, cell)
    return Relaxed(structure, "OPTIMIZATION COMPLETED" in text,
                   final_labels(task_dir, structure, comment, text, unconverged_mark))


def parse_md(task_dir: Path, conf: dpdata.System, nsteps: int) -> dpdata.LabeledSystem | Failure:
    pos, frc = Path(task_dir) / POS, Path(task_dir) / FRC
    if not pos.is_file() or not frc.is_file():
        return Failure("missing_output", f"no {POS} / {FRC}")
    positions, forces = read_xyz_frames(pos), read_xyz_frames(frc)
    n = min(len(positions), len(forces))
    if n == 0:
        return Failure("parse_error", "empty CP2K trajectory")
    cell = conf["cells"][0]
    out = None
    for (symbols, xyz, comment), (_, f, _) in zip(positions[1:n], forces[1:n]):  # frame 0 = the start
        energy = _comment_energy(comment)
        if energy is None:
            return Failure("parse_error", f"no energy in {POS}: {comment!r}")
        s = _system(conf, symbols, xyz, cell)
        data = dict(s.data, energies=np.array([energy * Hartree]),
                    forces=(f * EV_PER_A_IN_AU)[None])
        frame = dpdata.LabeledSystem(data=data)
        if out is None:
            out = frame
        else:
            out.append(frame)
    if out is None:
        return Failure("parse_error", "the CP2K MD has no step after the start")
    return complete_md(out, nsteps)
