"""00.train: a committee of DeePMD models trained on the initial data plus all earlier labels."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dpgen_ng.config.param import RunParams
from dpgen_ng.data import auto_batch_size, expand_systems
from dpgen_ng.dispatch import TaskSpec
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.io import atomic_write_json, relink
from dpgen_ng.record import STAGE_DIRS
from dpgen_ng.stages import model_devi
from dpgen_ng.stages.context import LABELS_FILE, IterContext, read_manifest, write_manifest
from dpgen_ng.stages.summarize import evaluate_committee
from dpgen_ng.summary import read_summary
from dpgen_ng.train import deepmd
from dpgen_ng.train.gate import FIT_FILE, check_sel, fit_report

log = logging.getLogger("dpgen_ng.train")
COPIED = "copied"


def _relink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` with a relative symlink (the work dir can be moved)."""
    relink(link, os.path.relpath(target, link.parent))


def _should_copy(ctx: IterContext) -> int | None:
    """The number of new labels when training is skipped (too few), else None."""
    if ctx.iteration == 0:
        return None
    prev = read_summary(ctx.workdir, ctx.iteration - 1)
    if prev is not None:
        added = prev.labeled
    else:  # a work dir from before summaries existed
        labels = ctx.iter_path(ctx.iteration - 1) / STAGE_DIRS[2] / LABELS_FILE
        added = json.loads(labels.read_text())["labeled"] if labels.is_file() else 0
    return added if added < max(1, ctx.params.fp_task_min) else None


def init_data(workdir: Path, p: RunParams) -> list[tuple[int, list[Path]]]:
    """The systems of each ``init_data_sys`` entry (index, deepmd/npy dirs); none is an error."""
    out = []
    for i, entry in enumerate(p.init_data_sys):
        path = Path(os.path.join(p.init_data_prefix, entry) if p.init_data_prefix else entry).expanduser()
        root = path if path.is_absolute() else Path(workdir) / path
        found = expand_systems(root)
        if not found:
            raise UserError(f"no deepmd/npy data (no type.raw) under {root}",
                            f"init_data_sys[{i}]", "a directory made by init_bulk or dpdata")
        out.append((i, found))
    return out


def training_data(ctx: IterContext) -> Iterator[tuple[str, Path, str]]:
    """Every system this iteration trains on: (link name under 00.train, deepmd/npy dir, batch
    size spec): the initial data, then the labels of every earlier iteration."""
    p = ctx.params
    for i, found in init_data(ctx.workdir, p):
        spec = p.init_batch_size if isinstance(p.init_batch_size, str) else p.init_batch_size[i]
        for j, sys_dir in enumerate(found):
            yield f"data.init/init.{i:03d}.{j:03d}", sys_dir, spec
    for k in range(ctx.iteration):
        fp_dir = ctx.iter_path(k) / STAGE_DIRS[2]
        for data_dir in sorted(fp_dir.glob("data.[0-9][0-9][0-9]")):
            sys_idx = int(data_dir.name.split(".")[1])
            spec = p.sys_batch_size if isinstance(p.sys_batch_size, str) else p.sys_batch_size[sys_idx]
            for sys_dir in expand_systems(data_dir):
                yield f"data.iters/iter.{k:06d}.{data_dir.name}.{sys_dir.name}", sys_dir, spec


def _systems(ctx: IterContext, train_dir: Path) -> tuple[list[str], list[int]]:
    """Link every training system under 00.train/data.{init,iters}; return paths and batch sizes."""
    systems: list[str] = []
    sizes: list[int] = []
    for kind in ("data.init", "data.iters"):
        (train_dir / kind).mkdir(parents=True, exist_ok=True)
    for name, sys_dir, spec in training_data(ctx):
        _relink(train_dir / name, sys_dir.resolve())
        systems.append(f"../{name}")
        sizes.append(auto_batch_size(sys_dir, spec))
    return systems, sizes


def read_inputs(workdir: Path, p: RunParams) -> tuple[list[Path], list[Any]]:
    """The initial data (deepmd/npy dirs) and every configuration the jobs explore (dpdata
    Systems), read as `dpgen run` will: a path that leads nowhere is a UserError now."""
    data = [d for _, found in init_data(workdir, p) for d in found]
    sys_ids = sorted({s for job in p.model_devi_jobs for s in job.sys_idx})
    confs = [model_devi.read_conf(p, c) for s in sys_ids for c in model_devi.conf_paths(workdir, p, s)]
    return data, confs


def preflight(workdir: Path, p: RunParams, announce: Callable[[], None] = lambda: None) -> None:
    """The iteration-0 gate before anything is written: the inputs can be read, then
    (``announce`` first: it takes seconds) ``sel`` against their neighbour counts."""
    data, confs = read_inputs(workdir, p)
    announce()
    check_sel(p.default_training_param, p.type_map, data, confs)


def make(ctx: IterContext) -> None:
    train_dir = ctx.stage_dir(0)
    train_dir.mkdir(parents=True, exist_ok=True)
    added = _should_copy(ctx)
    if added is not None:
        log.info("iteration %d: previous iteration added %d label(s) (< fp_task_min %d): "
                 "models are reused, not retrained", ctx.iteration, added, max(1, ctx.params.fp_task_min))
        atomic_write_json(train_dir / COPIED, {"from_iteration": ctx.iteration - 1, "labels": added})
        write_manifest(train_dir, [], copied=True)
        return
    (train_dir / COPIED).unlink(missing_ok=True)
    systems, sizes = _systems(ctx, train_dir)
    rng = ctx.rng("train")
    base = ctx.params.training_param()
    tasks = []
    for k in range(ctx.params.numb_models):
        task = f"{k:03d}"
        jinput = deepmd.training_input(base, ctx.params.type_map, systems, sizes, rng)
        atomic_write_json(train_dir / task / deepmd.INPUT, jinput)
        tasks.append(task)
    write_manifest(train_dir, tasks, copied=False, systems=systems, batch_sizes=sizes)
    log.info("iteration %d: %d models on %d systems", ctx.iteration, len(tasks), len(systems))


def run(ctx: IterContext) -> None:
    train_dir = ctx.stage_dir(0)
    manifest = read_manifest(train_dir)
    if manifest.get("copied"):
        return
    cmd = deepmd.command(ctx.machines["train"].command)
    specs = [TaskSpec(t, cmd, (deepmd.INPUT,), deepmd.BACKWARD, deepmd.LOG, "train.err",
                      watch=deepmd.watch(train_dir / t)) for t in manifest["tasks"]]
    common = [d for d in ("data.init", "data.iters") if any((train_dir / d).iterdir())]
    ctx.dispatcher("train").run(ctx.iteration, "train", train_dir, specs, common)


def post(ctx: IterContext) -> None:
    train_dir = ctx.stage_dir(0)
    manifest = read_manifest(train_dir)
    n = ctx.params.numb_models
    for k in range(n):
        link = train_dir / f"graph.{k:03d}.pb"
        if manifest.get("copied"):
            target = (ctx.iter_path(ctx.iteration - 1) / "00.train" / link.name).resolve()
        else:
            target = (train_dir / f"{k:03d}" / deepmd.MODEL).resolve()
        if not target.is_file():
            raise StageError(f"model {target} is missing after training")
        _relink(link, target)
    _check_fit(ctx, manifest.get("copied", False))
    if ctx.iteration > 0 and model_devi.slot_for(ctx) is None:
        _validate_final(ctx)


def _check_fit(ctx: IterContext, copied: bool) -> None:
    """Each model's fit to its training data (lcurve.out); the iteration-0 gate warns on a bad one."""
    if copied:
        return
    train_dir = ctx.stage_dir(0)
    p = ctx.params
    job = p.model_devi_jobs[0]
    f_hi = min(p.trust(job, s)[1] for s in job.sys_idx)
    report = fit_report([train_dir / f"{k:03d}" / "lcurve.out" for k in range(p.numb_models)],
                        ctx.iteration, f_hi)
    for w in report["warnings"]:
        log.warning("WARNING %s", w)
    atomic_write_json(train_dir / FIT_FILE, report)


def _validate_final(ctx: IterContext) -> None:
    """The final models explore nothing: their held-out figures are taken here."""
    validation, _ = evaluate_committee(ctx, [])
    if validation is not None:
        log.info("final models (iteration %d) on %d held-out frames: force RMSE %.3g eV/Å",
                 ctx.iteration, validation.nframes, validation.mean.force or float("nan"))
