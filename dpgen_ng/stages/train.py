"""00.train: a committee of DeePMD models trained on the initial data plus all earlier labels."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dpgen_ng.config.param import RunParams
from dpgen_ng.data import auto_batch_size, expand_systems, nframes
from dpgen_ng.dispatch import TaskSpec
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.io import atomic_write_json, relink
from dpgen_ng.record import STAGE_DIRS
from dpgen_ng.stages import model_devi
from dpgen_ng.stages.context import LABELS_FILE, RESUMED_FILE, IterContext, read_manifest, write_manifest
from dpgen_ng.stages.summarize import evaluate_committee
from dpgen_ng.summary import read_summary
from dpgen_ng.train import deepmd, warmstart
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


def _systems(ctx: IterContext, train_dir: Path) -> tuple[list[str], list[int], list[int]]:
    """Link every training system under 00.train/data.{init,iters}; return paths, batch sizes and
    frame counts."""
    systems: list[str] = []
    sizes: list[int] = []
    frames: list[int] = []
    for kind in ("data.init", "data.iters"):
        (train_dir / kind).mkdir(parents=True, exist_ok=True)
    for name, sys_dir, spec in training_data(ctx):
        _relink(train_dir / name, sys_dir.resolve())
        systems.append(f"../{name}")
        sizes.append(auto_batch_size(sys_dir, spec))
        frames.append(nframes(sys_dir))
    return systems, sizes, frames


def trained_iteration(ctx: IterContext, iteration: int) -> int:
    """The iteration whose trainings made ``iteration``'s models (it differs when they were copied)."""
    while iteration > 0:
        copied = ctx.iter_path(iteration) / STAGE_DIRS[0] / COPIED
        if not copied.is_file():
            break
        iteration = int(json.loads(copied.read_text())["from_iteration"])
    return iteration


def _starts(ctx: IterContext) -> tuple[str, str, list[list[Path]]]:
    """How this iteration's models start: (kind, dp train flag, per model the files to put in
    ``old/``); kind "scratch" has neither."""
    p, it, w = ctx.params, ctx.iteration, ctx.params.warm_start
    b = p.backend
    if w.from_previous(it):
        prev = ctx.iter_path(trained_iteration(ctx, it - 1)) / STAGE_DIRS[0]
        dirs = [prev / f"{k:03d}" for k in range(p.numb_models)]
        return f"init_model from {prev.parent.name}", f" --init-model old/{deepmd.CKPT}", \
            [[d / f for f in b.ckpt_files] for d in dirs]
    if it == 0 and w.iter0_model_path and (w.init_model or w.reusing(0)):
        dirs = warmstart.iter0_dirs(ctx.workdir, w, p.numb_models)
        return "init_model from training_iter0_model_path", f" --init-model old/{deepmd.CKPT}", \
            [[d / f for f in b.ckpt_files] for d in dirs]
    if it == 0 and w.init_frozen_model:
        return "init_frz_model", f" --init-frz-model old/init{b.suffix}", \
            [[ctx.resolve(m)] for m in w.init_frozen_model]
    if it == 0 and w.finetune_model:
        return "finetune", f" --finetune old/init{b.finetune_suffix}", \
            [[ctx.resolve(m)] for m in w.finetune_model]
    return "scratch", "", [[] for _ in range(p.numb_models)]


def _link_old(task_dir: Path, files: list[Path], kind: str, backend: deepmd.Backend) -> list[str]:
    """Link a model's starting files into ``task_dir/old`` (names as dp expects them); links
    left by an earlier make of this step go first (``old/`` holds nothing but these links)."""
    old = task_dir / "old"
    for stale in old.iterdir() if old.is_dir() else ():
        if stale.is_symlink():
            stale.unlink()
    out = []
    for f in files:
        if not f.is_file():
            raise StageError(f"{f} is missing: the model cannot start from it ({kind})")
        if kind == "init_frz_model":
            name = f"init{backend.suffix}"
        elif kind == "finetune":
            name = f"init{backend.finetune_suffix}"
        else:
            name = f.name
        old.mkdir(parents=True, exist_ok=True)
        _relink(old / name, f.resolve())
        out.append(f"old/{name}")
    return out


def read_inputs(workdir: Path, p: RunParams) -> tuple[list[Path], list[Any]]:
    """The initial data (deepmd/npy dirs) and every configuration the jobs explore (dpdata
    Systems), read as `dpgen run` will: a path that leads nowhere is a UserError now."""
    data = [d for _, found in init_data(workdir, p) for d in found]
    warmstart.check_files(workdir, p.warm_start, p.numb_models, p.backend)
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
    p = ctx.params
    systems, sizes, frames = _systems(ctx, train_dir)
    rng = ctx.rng("train")
    base = p.training_param()
    kind, flag, old_files = _starts(ctx)
    reuse = p.warm_start.reuse if p.warm_start.reusing(ctx.iteration) else None
    ratio = None
    if reuse is not None:
        first_new = next((i for i, s in enumerate(systems)
                          if s.startswith(f"../data.iters/iter.{ctx.iteration - 1:06d}.")), len(systems))
        ratio = warmstart.old_ratio(reuse, sum(frames[:first_new]), sum(frames[first_new:]))
    tasks, forward = [], {}
    for k in range(p.numb_models):
        task = f"{k:03d}"
        jinput = deepmd.training_input(base, p.type_map, systems, sizes, rng)
        if p.explore.activation is not None:
            deepmd.apply_activation(jinput, p.explore.activation[k])
        if reuse is not None:
            warmstart.apply_reuse(jinput, reuse, first_new, len(systems), ratio)
        atomic_write_json(train_dir / task / deepmd.INPUT, jinput)
        forward[task] = _link_old(train_dir / task, old_files[k], kind, p.backend)
        tasks.append(task)
    write_manifest(train_dir, tasks, copied=False, systems=systems, batch_sizes=sizes,
                   start=kind, init_flag=flag, old_files=forward, reuse_old_ratio=ratio)
    log.info("iteration %d: %d %s models on %d systems (%s%s)", ctx.iteration, len(tasks), p.train_backend,
             len(systems), "from scratch" if kind == "scratch" else kind,
             "" if ratio is None else f", old data sampled with probability {ratio:.3f}")


def run(ctx: IterContext) -> None:
    train_dir = ctx.stage_dir(0)
    manifest = read_manifest(train_dir)
    if manifest.get("copied"):
        return
    p = ctx.params
    b = p.backend
    cmd = deepmd.task_command(ctx.machines["train"], b, manifest.get("init_flag", ""), p.dp_compress,
                              from_scratch=p.training_resume == "from_scratch",
                              skip_neighbor_stat=p.skip_neighbor_stat)
    old = manifest.get("old_files", {})
    specs = [TaskSpec(t, cmd, (deepmd.INPUT, *old.get(t, ())), b.backward(p.dp_compress), deepmd.LOG,
                      "train.err", watch=deepmd.watch(train_dir / t)) for t in manifest["tasks"]]
    common = [d for d in ("data.init", "data.iters") if any((train_dir / d).iterdir())]
    ctx.dispatcher("train").run(ctx.iteration, "train", train_dir, specs, common)


def post(ctx: IterContext) -> None:
    train_dir = ctx.stage_dir(0)
    manifest = read_manifest(train_dir)
    p = ctx.params
    b = p.backend
    model = b.compressed if p.dp_compress else b.model
    for k in range(p.numb_models):
        link = train_dir / b.graph(k)
        if manifest.get("copied"):
            target = (ctx.iter_path(ctx.iteration - 1) / "00.train" / link.name).resolve()
        else:
            target = (train_dir / f"{k:03d}" / model).resolve()
        if not target.is_file():
            raise StageError(f"model {target} is missing after training")
        _relink(link, target)
    _check_fit(ctx, manifest.get("copied", False))
    _note_resumed(ctx, manifest)
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
                        ctx.iteration, f_hi, p.backend.graph(0))
    for w in report["warnings"]:
        log.warning("WARNING %s", w)
    atomic_write_json(train_dir / FIT_FILE, report)


def _note_resumed(ctx: IterContext, manifest: dict[str, Any]) -> None:
    """Models whose training was restarted from a checkpoint (a killed job): said once here, kept
    in ``resumed.json`` for ``dpgen status``. DeePMD-kit does not restore its data-sampling state
    on a restart, so such a model is not bit-identical to an uninterrupted one."""
    train_dir = ctx.stage_dir(0)
    resumed = {t: steps for t in manifest.get("tasks", []) if (steps := deepmd.resumed_steps(train_dir / t))}
    if resumed:
        for t, steps in resumed.items():
            log.warning("WARNING iteration %d: model %s resumed from the checkpoint of step %s after "
                        "its job was killed; it is not bit-identical to an uninterrupted training "
                        "(training_resume: from_scratch would start it over)", ctx.iteration, t,
                        ", ".join(map(str, steps)))
        atomic_write_json(train_dir / RESUMED_FILE, resumed)
    else:
        (train_dir / RESUMED_FILE).unlink(missing_ok=True)


def _validate_final(ctx: IterContext) -> None:
    """The final models explore nothing: their held-out figures are taken here."""
    validation, _ = evaluate_committee(ctx, [])
    if validation is not None:
        log.info("final models (iteration %d) on %d held-out frames: force RMSE %.3g eV/Å",
                 ctx.iteration, validation.nframes, validation.mean.force or float("nan"))
