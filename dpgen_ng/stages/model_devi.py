"""01.model_devi: LAMMPS MD with the committee; per-frame force/virial deviations."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dpdata
import numpy as np

from dpgen_ng.config.jobs import ExploreJob, job_json
from dpgen_ng.config.param import RunParams
from dpgen_ng.converge.schedule import Slot, next_slot
from dpgen_ng.dispatch import TaskSpec, read_task_rc
from dpgen_ng.dispatch.progress import Watch
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.explore import lammps, remote, template
from dpgen_ng.explore.devi import DeviTable, force_over, iter_model_devi, last_frame_failed, rms_force
from dpgen_ng.io import atomic_write_bytes, atomic_write_json, atomic_write_text, relink, tail
from dpgen_ng.rng import draw_seed
from dpgen_ng.stages.context import IterContext, read_manifest, write_manifest
from dpgen_ng.summary import read_summary

log = logging.getLogger("dpgen_ng.model_devi")
DEVI_TABLE = "model_devi.npz"  # all tasks' deviations in columns (written by post)


def conf_paths(workdir: Path, p: RunParams, sys_idx: int) -> list[Path]:
    """The configurations of ``sys_configs[sys_idx]``: each glob expanded and sorted, in order."""
    found: list[Path] = []
    for pattern in p.sys_configs[sys_idx]:
        full = Path(os.path.join(p.sys_configs_prefix, pattern) if p.sys_configs_prefix else pattern)
        matches = sorted(glob.glob(str(full if full.is_absolute() else Path(workdir) / full)))
        found += [Path(m) for m in matches]
    if not found:
        raise UserError(f"no file matches {list(p.sys_configs[sys_idx])}", f"sys_configs[{sys_idx}]",
                        "globs (relative to the work dir) that match configuration files")
    return found


def read_conf(p: RunParams, conf: Path) -> dpdata.System:
    try:
        return dpdata.System(str(conf), fmt=p.sys_format, type_map=list(p.type_map))
    except Exception as exc:  # noqa: BLE001 - dpdata raises many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read {conf} as {p.sys_format} ({first})", "sys_format") from None


def slot_for(ctx: IterContext) -> Slot | None:
    """What this iteration explores (None: every job is done), from the last iteration's summary."""
    prev = read_summary(ctx.workdir, ctx.iteration - 1) if ctx.iteration else None
    return next_slot(ctx.params, prev, ctx.iteration)


def slot_of(ctx: IterContext) -> Slot:
    """The slot this iteration's make_model_devi chose (kept in its manifest)."""
    m = read_manifest(ctx.stage_dir(1))
    slot = Slot(m.get("job", ctx.iteration), m.get("repeat", 0), m.get("nsteps", 0))
    if slot.job >= len(ctx.params.model_devi_jobs):
        raise UserError(f"iteration {ctx.iteration} explored model_devi_jobs[{slot.job}], which is gone",
                        "model_devi_jobs", "keep the jobs that have run; append new ones at the end")
    return slot


def _task_inputs(ctx: IterContext, job: ExploreJob, slot: Slot, sys_idx: int, graphs: tuple[str, ...],
                 rng: np.random.Generator) -> Iterator[tuple[str, dict[str, Any]]]:
    """(input.lammps text, job.json) of each task of one configuration of ``sys_idx``."""
    p = ctx.params
    if job.template is not None:
        for values in job.template.combinations(sys_idx):
            yield (template.render(job.template, values, graphs, job.trj_freq, p.explore.deviation),
                   {"sys_idx": sys_idx, **values})
        return
    dt = job.dt if job.dt is not None else p.model_devi_dt
    for temp in job.temps:
        for pres in job.press or (None,):
            md = lammps.MdTask(
                ensemble=job.ensemble, temp=temp, press=pres, nsteps=slot.nsteps,
                trj_freq=job.trj_freq, dt=dt, taut=job.taut or p.model_devi_taut,
                taup=job.taup or p.model_devi_taup, masses=p.mass_map, graphs=graphs,
                velocity_seed=draw_seed(rng), nopbc=p.explore.nopbc, deviation=p.explore.deviation,
                neigh_one=p.explore.neigh_one)
            yield lammps.input_text(md), {"sys_idx": sys_idx, "ensemble": job.ensemble, "temp": temp,
                                          "press": pres, "model_devi_dt": dt, "trj_freq": job.trj_freq}


def make(ctx: IterContext) -> None:
    p = ctx.params
    slot = slot_for(ctx)
    if slot is None:
        raise StageError(f"iteration {ctx.iteration} has no exploration job left")
    job = p.model_devi_jobs[slot.job]
    md_dir = ctx.stage_dir(1)
    (md_dir / "confs").mkdir(parents=True, exist_ok=True)
    graphs = []
    for k in range(p.numb_models):
        name = p.backend.graph(k)
        relink(md_dir / name, os.path.relpath((ctx.stage_dir(0) / name).resolve(), md_dir))
        graphs.append(f"../{name}")
    rng = ctx.rng("model_devi")
    tasks = []
    for sys_idx in job.sys_idx:
        counter = 0
        for c, conf in enumerate(conf_paths(ctx.workdir, p, sys_idx)):
            system = read_conf(p, conf)
            if p.explore.nopbc:
                system.remove_pbc()  # a box around the molecule with a vacuum margin (as DP-GEN)
            conf_file = md_dir / "confs" / f"{sys_idx:03d}.{c:04d}.lmp"
            system.to("lammps/lmp", str(conf_file))
            conf_bytes = conf_file.read_bytes()
            for text, info in _task_inputs(ctx, job, slot, sys_idx, tuple(graphs), rng):
                name = f"task.{sys_idx:03d}.{counter:06d}"
                counter += 1
                task_dir = md_dir / name
                task_dir.mkdir(exist_ok=True)
                # flushed to disk together by write_manifest
                atomic_write_bytes(task_dir / lammps.CONF, conf_bytes, sync=False)
                atomic_write_text(task_dir / lammps.INPUT, text, sync=False)
                atomic_write_json(task_dir / "job.json", {**info, "conf": str(conf)}, sync=False)
                tasks.append({"path": name, "sys_idx": sys_idx, "conf": str(conf)})
    atomic_write_json(md_dir / "cur_job.json", {**job_json(job), "nsteps": slot.nsteps})
    write_manifest(md_dir, tasks, job=slot.job, repeat=slot.repeat, nsteps=slot.nsteps)
    again = f", repeat {slot.repeat}" if slot.repeat else ""
    length = f"{slot.nsteps} steps" if job.template is None else "the template's length"
    log.info("iteration %d: model_devi_jobs[%d]%s: %d MD task(s) of %s for systems %s",
             ctx.iteration, slot.job, again, len(tasks), length, list(job.sys_idx))


def run(ctx: IterContext) -> None:
    md_dir = ctx.stage_dir(1)
    manifest = read_manifest(md_dir)
    base = ctx.machines["model_devi"].command
    # DP-GEN machine files sometimes spell the input out ("lmp -i input.lammps -v restart 0")
    names_input = any(tok in ("-i", "-in") for tok in base.split())
    cmd = f"{base} -log {lammps.LOG}" if names_input else f"{base} -in {lammps.INPUT} -log {lammps.LOG}"
    watch = Watch(lammps.DEVI, int(manifest["nsteps"])) if manifest.get("nsteps") else None
    machine = ctx.machines["model_devi"].machine
    if remote.keeps_remote(machine, ctx.params.explore.f_avg_relative):
        # the trajectories stay on the machine: only their frame index comes back
        where = remote.keep_dir(machine, ctx.ledger, str(md_dir.relative_to(ctx.workdir)))
        remote.write_location(md_dir, machine, where)
        specs = [TaskSpec(t["path"], remote.keep_command(cmd, f"{where}/{t['path']}"),
                          (lammps.CONF, lammps.INPUT), (lammps.DEVI, remote.INDEX, lammps.LOG),
                          "lmp.out", "lmp.err", watch=watch) for t in manifest["tasks"]]
    else:
        (md_dir / remote.LOCATION_FILE).unlink(missing_ok=True)
        specs = [TaskSpec(t["path"], cmd, (lammps.CONF, lammps.INPUT),
                          (lammps.DEVI, lammps.TRAJ, lammps.LOG), "lmp.out", "lmp.err", watch=watch)
                 for t in manifest["tasks"]]
    common = [ctx.params.backend.graph(k) for k in range(ctx.params.numb_models)]
    # An MD run that blows up (lost atoms, NaN) is signal, not an error: post keeps its frames,
    # and running it again would blow up the same way.
    ctx.dispatcher("model_devi").run(ctx.iteration, "model_devi", md_dir, specs, common,
                                     allow_failures=True, retry_failures=False)


def post(ctx: IterContext) -> None:
    """Gather every task's deviations into one columnar table (``model_devi.npz``): the files are
    read in blocks of rows, and the table streamed to disk from them (memory: the three columns
    read, see :class:`~dpgen_ng.explore.devi.DeviTable`)."""
    md_dir = ctx.stage_dir(1)
    manifest = read_manifest(md_dir)
    table = DeviTable()
    broken = []
    for i, t in enumerate(manifest["tasks"]):
        task_dir = md_dir / t["path"]
        devi_path = task_dir / lammps.DEVI
        info = read_task_rc(task_dir)
        rc = None if info is None else info.rc
        if info is None or lammps.DEVI in info.missing or not devi_path.is_file():
            broken.append(f"{task_dir}: exit code {rc}, no {lammps.DEVI}; "
                          f"log: {tail(task_dir / lammps.LOG, 2) or tail(task_dir / 'lmp.err', 2)}")
            continue
        parts = iter_model_devi(devi_path)  # read as the table takes them, a block at a time
        if ctx.params.explore.f_avg_relative:  # over the RMS force (read if there are deviations)
            parts = force_over(parts, lambda task_dir=task_dir: _rms_force(task_dir))
        if rc != 0:
            parts = last_frame_failed(parts)  # the frame at the blow-up is not trustworthy
        n = table.add(i, t["sys_idx"], parts)
        if rc != 0:
            log.warning("%s: LAMMPS stopped with exit code %s after %d frame(s); they are kept "
                        "(the last one is treated as failed)", task_dir, rc, n)
    if broken and len(broken) == len(manifest["tasks"]):
        raise StageError("every MD task failed:\n  " + "\n  ".join(broken[:10]))
    for b in broken:
        log.warning("MD task without deviations: %s", b)
    tmp = md_dir / f".{DEVI_TABLE}.tmp.npz"
    table.save(tmp)
    os.replace(tmp, md_dir / DEVI_TABLE)


def _rms_force(task_dir: Path) -> float:
    try:
        return rms_force(task_dir / lammps.TRAJ)
    except (OSError, ValueError) as exc:
        raise StageError(f"model_devi_f_avg_relative: {exc}") from None


def clean_trajectories(ctx: IterContext, iteration: int) -> None:
    md_dir = ctx.iter_path(iteration) / "01.model_devi"
    if not md_dir.is_dir():
        return
    for traj in md_dir.glob(f"task.*/{lammps.TRAJ}"):
        traj.unlink()
    where = remote.read_location(md_dir)
    if where is not None:  # kept on the MD machine: removed there
        try:
            link = remote.RemoteFiles(ctx.machines["model_devi"].machine)
        except Exception as exc:  # noqa: BLE001 - cleaning must not stop the run
            log.warning("could not reach the MD machine to remove %s: %s", where["dir"], exc)
            return
        try:
            link.remove(where["dir"])
        finally:
            link.close()
