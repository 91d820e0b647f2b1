"""CP2K relaxations (GEO_OPT / CELL_OPT) and AIMD (NVT, CSVR thermostat) for init_bulk.

Both use the labeler's input (defaults + ``user_fp_params``) with a different RUN_TYPE and a
MOTION section; results are read from CP2K's own trajectory files: ``DPGEN-pos-1.xyz`` (positions,
energy in the comment line) and ``DPGEN-frc-1.xyz`` (forces), and the cell from the output.
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
EV_PER_A_IN_AU = Hartree / Bohr


def relax_section(options: dict[str, Any], periodic_cell: bool) -> tuple[str, dict[str, Any]]:
    """GEO_OPT (positions) or CELL_OPT (positions, shape and volume); nothing else here."""
    dofs = relax_dofs(options)
    cell = periodic_cell and (dofs[1] or dofs[2])
    if dofs not in ((True, False, False), (True, True, True)) and cell:
        raise unsupported_relax("cp2k", dofs)
    kind = "CELL_OPT" if cell else "GEO_OPT"
    motion = {kind: {"MAX_ITER": int(options.get("relax_steps", 200)),
                     "MAX_FORCE": float(options.get("relax_fmax", 0.05)) / EV_PER_A_IN_AU},
              "PRINT": {"TRAJECTORY": {"EACH": {kind: 1}}}}
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


def last_cell(output: str) -> np.ndarray | None:
    rows = re.findall(r"CELL\| Vector ([abc]) \[angstrom\]:?\s+(\S+)\s+(\S+)\s+(\S+)", output)
    if len(rows) < 3:
        return None
    last = {name: [float(x) for x in vals] for name, *vals in rows[-3:]}
    return np.array([last["a"], last["b"], last["c"]])


def _system(frame_like: dpdata.System, symbols: list[str], xyz: np.ndarray,
            cell: np.ndarray) -> dpdata.System:
    names = frame_like["atom_names"]
    out = frame_like.copy()
    out.data["atom_types"] = np.array([names.index(s) for s in symbols])
    out.data["atom_numbs"] = [int(np.sum(out.data["atom_types"] == t)) for t in range(len(names))]
    out.data["coords"] = xyz[None]
    out.data["cells"] = cell[None]
    return out


def parse_relax(task_dir: Path, conf: dpdata.System, output_name: str) -> Relaxed | Failure:
    text = (Path(task_dir) / output_name).read_text(errors="replace")
    pos = Path(task_dir) / POS
    if not pos.is_file():
        return Failure("missing_output", f"no {POS}")
    frames = read_xyz_frames(pos)
    cell = last_cell(text)
    if not frames or cell is None:
        return Failure("parse_error", "no final structure or cell in the CP2K output")
    symbols, xyz, _ = frames[-1]
    return Relaxed(_system(conf, symbols, xyz, cell), "OPTIMIZATION COMPLETED" in text)


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
        m = re.search(r"E\s*=\s*(\S+)", comment)
        if m is None:
            return Failure("parse_error", f"no energy in {POS}: {comment!r}")
        s = _system(conf, symbols, xyz, cell)
        data = dict(s.data, energies=np.array([float(m.group(1)) * Hartree]),
                    forces=(f * EV_PER_A_IN_AU)[None])
        frame = dpdata.LabeledSystem(data=data)
        if out is None:
            out = frame
        else:
            out.append(frame)
    if out is None:
        return Failure("parse_error", "the CP2K MD has no step after the start")
    return complete_md(out, nsteps)
