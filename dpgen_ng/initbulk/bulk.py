"""init_bulk stages on DP-GEN's layout: place (supercell) → scale/perturb → label → collect.

``<POSCAR name>.<AAxBBxCC>/00.place_ele/sys-*/POSCAR``, ``01.scale_pert/sys-*/scale-S/00000k/POSCAR``,
label tasks in ``02.md/sys-*/scale-S/00000k/`` (single points until the AIMD stage lands) and the
collected training data in ``02.md/sys-*/deepmd`` — the paths DP-GEN params point at.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import dpdata

from dpgen_ng.config.init import InitBulkParams
from dpgen_ng.config.machine import MachineSettings
from dpgen_ng.dispatch import Dispatcher, TaskSpec
from dpgen_ng.errors import StageError
from dpgen_ng.fp import Failure, labeler_class
from dpgen_ng.initbulk.perturb import perturbed_frames
from dpgen_ng.ledger import Ledger
from dpgen_ng.rng import stage_rng

log = logging.getLogger("dpgen_ng.init_bulk")


def sys_name(system: dpdata.System) -> str:
    return "sys-" + "-".join(f"{n:04d}" for n in system["atom_numbs"])


def place(params: InitBulkParams, out: Path) -> tuple[str, dpdata.System]:
    """Read the POSCAR, build the supercell, write ``00.place_ele/sys-*/POSCAR``."""
    system = dpdata.System(str(params.poscar), fmt="vasp/poscar", type_map=list(params.elements))
    extra = set(system["atom_names"]) - set(params.elements)
    if extra:
        raise StageError(f"{params.poscar} has elements {sorted(extra)} not in 'elements'")
    system = system.replicate(params.super_cell)
    name = sys_name(system)
    path = out / "00.place_ele" / name
    path.mkdir(parents=True, exist_ok=True)
    system.to("vasp/poscar", str(path / "POSCAR"))
    return name, system


def scale_perturb(params: InitBulkParams, out: Path, name: str, system: dpdata.System) -> list[Path]:
    """Write every scaled/perturbed structure; return their directories in order."""
    dirs = []
    for s_idx, scale in enumerate(params.scale):
        rng = stage_rng(params.seed, 0, "init_bulk", s_idx)
        cell = system["cells"][0] * scale
        coords = system["coords"][0] * scale
        frames = perturbed_frames(cell, coords, params.pert_numb, params.pert_box, params.pert_atom, rng)
        for k, (c, x) in enumerate(frames):
            d = out / "01.scale_pert" / name / f"scale-{scale:.3f}" / f"{k:06d}"
            d.mkdir(parents=True, exist_ok=True)
            frame = system.copy()
            frame.data["cells"] = c[None]
            frame.data["coords"] = x[None]
            frame.to("vasp/poscar", str(d / "POSCAR"))
            dirs.append(d)
    log.info("%s: %d structure(s) in %s", name, len(dirs), out / "01.scale_pert" / name)
    return dirs


def make_labels(params: InitBulkParams, out: Path, name: str, command: str) -> list[TaskSpec]:
    """Write a single-point label task for every perturbed structure."""
    lab = labeler_class(params.fp_style)(params.fp_settings, params.elements)
    md_root = out / "02.md" / name
    specs = []
    for pos in sorted((out / "01.scale_pert" / name).glob("scale-*/[0-9]*/POSCAR")):
        rel = Path(pos.parent.parent.name) / pos.parent.name
        task_dir = md_root / rel
        task_dir.mkdir(parents=True, exist_ok=True)
        frame = dpdata.System(str(pos), fmt="vasp/poscar", type_map=list(params.elements))
        lab.write_inputs(frame, task_dir)
        specs.append(TaskSpec(str(rel), lab.command(command), tuple(lab.forward_files()),
                              tuple(lab.backward_files()), lab.outlog, lab.errlog))
    if not specs:
        raise StageError(f"nothing to label under {out / '01.scale_pert' / name}: run stage 2 first")
    return specs


def label_and_collect(params: InitBulkParams, out: Path, name: str, specs: list[TaskSpec],
                      machines: MachineSettings, workdir: Path) -> dict[str, int]:
    """Run the label tasks, collect the good frames to ``02.md/sys-*/deepmd``."""
    lab = labeler_class(params.fp_style)(params.fp_settings, params.elements)
    md_root = out / "02.md" / name
    with Ledger(workdir) as ledger:
        Dispatcher(workdir, machines["fp"], ledger).run(0, "init_label", md_root, specs,
                                                       allow_failures=True)
    good, failed = [], []
    for spec in specs:
        task_dir = md_root / spec.path
        res = lab.result(task_dir)
        if isinstance(res, Failure):
            failed.append(f"{task_dir}: {res.kind}: {res.detail}")
        else:
            good.append(res)
    for f in failed:
        log.warning("label failed: %s", f)
    if not good:
        raise StageError(f"every label of {name} failed; first: {failed[0] if failed else '-'}")
    ms = dpdata.LabeledSystem()
    for g in good[: params.coll_ndata]:
        ms.append(g)
    dest = md_root / "deepmd"
    tmp = md_root / ".deepmd.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    ms.to("deepmd/npy", str(tmp), set_size=max(ms.get_nframes(), 1))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log.info("%s: %d frame(s) collected in %s (%d label(s) failed)", name, ms.get_nframes(), dest,
             len(failed))
    return {"labeled": ms.get_nframes(), "failed": len(failed)}


def init_bulk(params: InitBulkParams, workdir: Path, machines: MachineSettings | None) -> dict:
    """Run the requested stages; return a report of what was made."""
    workdir = Path(workdir).resolve()
    out = workdir / params.out_dir_name()
    name, system = place(params, out)
    report: dict = {"out_dir": str(out), "system": name, "natoms": int(system.get_natoms())}
    if 2 in params.stages:
        report["structures"] = len(scale_perturb(params, out, name, system))
    if 4 in params.stages:
        command = machines["fp"].command if machines is not None else params.fp_style
        specs = make_labels(params, out, name, command)
        if machines is None:
            log.info("no MACHINE given: %d label task(s) written, not run (as DP-GEN does)", len(specs))
            return report
        report.update(label_and_collect(params, out, name, specs, machines, workdir))
        report["data"] = str(out / "02.md" / name / "deepmd")
    return report

