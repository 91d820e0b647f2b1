"""Relaxation and MD jobs driven by ASE (``dpgen_ng.ase_driver``) for labelers whose code
has no usable driver of its own here (EMT) or whose native MD keeps no forces (xtb)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dpdata
from ase import io

from dpgen_ng.ase_driver import RESULT, TRAJ
from dpgen_ng.fp.base import CONF_FILE, Failure, JobKind, Relaxed, relax_dofs

DRIVER = "driver.json"


def read_frames(task_dir: Path, type_map: tuple[str, ...]) -> dpdata.LabeledSystem | Failure:
    path = Path(task_dir) / TRAJ
    if not path.is_file() or path.stat().st_size == 0:
        return Failure("missing_output", f"no {TRAJ} in {task_dir}")
    try:
        frames = io.read(path, ":", format="extxyz")
    except Exception as exc:  # noqa: BLE001
        return Failure("parse_error", f"{TRAJ}: {type(exc).__name__}: {exc}")
    if not frames:
        return Failure("parse_error", f"{TRAJ} holds no frame")
    out = dpdata.LabeledSystem(frames[0], fmt="ase/structure", type_map=list(type_map))
    for atoms in frames[1:]:
        out.append(dpdata.LabeledSystem(atoms, fmt="ase/structure", type_map=list(type_map)))
    return out


def complete_md(frames: dpdata.LabeledSystem, nsteps: int) -> dpdata.LabeledSystem | Failure:
    """An AIMD counts only when every step is there (DP-GEN collects only complete runs)."""
    if frames.get_nframes() != nsteps:
        return Failure("parse_error", f"incomplete AIMD: {frames.get_nframes()} of {nsteps} steps")
    return frames


def ase_jobs(calc: str, calc_params: dict[str, Any], options: dict[str, Any],
             type_map: tuple[str, ...], checked, modes: tuple[str, ...],  # noqa: ANN001
             python: str | None = None) -> dict[str, JobKind]:
    """JobKinds for ``modes`` run by the ASE driver with calculator ``calc``.

    The driver runs under ``python`` when given, else under machine.json's command (which must
    then be a Python that imports dpgen_ng, e.g. the venv's ``python3``).
    """

    def make(mode: str) -> JobKind:
        def write(frame: dpdata.System, task_dir: Path) -> None:
            frame.to("vasp/poscar", str(Path(task_dir) / CONF_FILE))
            opts = {k: v for k, v in options.items() if k not in ("command", "python")}
            if mode == "relax":
                opts["dofs"] = list(relax_dofs(options))
            spec = {"calc": calc, "mode": mode, "options": opts, "calc_params": calc_params}
            (Path(task_dir) / DRIVER).write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")

        def parse(task_dir: Path) -> Any:
            frames = read_frames(task_dir, type_map)
            if isinstance(frames, Failure):
                return frames
            if mode == "single":
                return checked(frames)
            result = json.loads((Path(task_dir) / RESULT).read_text())
            if mode == "relax":
                contcar = Path(task_dir) / "CONTCAR"
                if not contcar.is_file():
                    return Failure("missing_output", "no CONTCAR")
                relaxed = dpdata.System(str(contcar), fmt="vasp/poscar", type_map=list(type_map))
                final = checked(frames.sub_system([frames.get_nframes() - 1]))
                return Relaxed(relaxed, bool(result.get("converged", False)),
                               None if isinstance(final, Failure) else final)
            return complete_md(frames, int(options.get("md_nstep", 10)))

        outputs = [TRAJ, RESULT, "driver.log"] + (["CONTCAR", "relax.log"] if mode == "relax" else [])
        return JobKind(write, lambda base: f"{python or base} -m dpgen_ng.ase_driver {DRIVER}",
                       (CONF_FILE, DRIVER), tuple(outputs), parse, "driver.log", "driver.err")

    return {mode: make(mode) for mode in modes}
