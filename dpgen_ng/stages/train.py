"""00.train: a committee of DeePMD models trained on the initial data plus all earlier labels."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from dpgen_ng.data import auto_batch_size, expand_systems
from dpgen_ng.dispatch import TaskSpec
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.io import atomic_write_json, relink
from dpgen_ng.stages.context import IterContext, read_manifest, write_manifest
from dpgen_ng.train import deepmd

log = logging.getLogger("dpgen_ng.train")
COPIED = "copied"
LABELS_FILE = "labels.json"  # written by post_fp, read here to decide whether to retrain


def _relink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` with a relative symlink (the work dir can be moved)."""
    relink(link, os.path.relpath(target, link.parent))


def _should_copy(ctx: IterContext) -> int | None:
    """The number of new labels when training is skipped (too few), else None."""
    if ctx.iteration == 0:
        return None
    labels = ctx.iter_path(ctx.iteration - 1) / "02.fp" / LABELS_FILE
    added = json.loads(labels.read_text())["labeled"] if labels.is_file() else 0
    return added if added < max(1, ctx.params.fp_task_min) else None


def _systems(ctx: IterContext, train_dir: Path) -> tuple[list[str], list[int]]:
    """Link every training system under 00.train/data.{init,iters}; return paths and batch sizes."""
    p = ctx.params
    systems: list[str] = []
    sizes: list[int] = []
    for kind in ("data.init", "data.iters"):
        (train_dir / kind).mkdir(parents=True, exist_ok=True)
    prefix = p.init_data_prefix
    for i, entry in enumerate(p.init_data_sys):
        root = ctx.resolve(os.path.join(prefix, entry) if prefix else entry)
        found = expand_systems(root)
        if not found:
            raise UserError(f"no deepmd/npy data (no type.raw) under {root}",
                            f"init_data_sys[{i}]", "a directory made by init_bulk or dpdata")
        spec = p.init_batch_size if isinstance(p.init_batch_size, str) else p.init_batch_size[i]
        for j, sys_dir in enumerate(found):
            name = f"init.{i:03d}.{j:03d}"
            _relink(train_dir / "data.init" / name, sys_dir.resolve())
            systems.append(f"../data.init/{name}")
            sizes.append(auto_batch_size(sys_dir, spec))
    for k in range(ctx.iteration):
        fp_dir = ctx.iter_path(k) / "02.fp"
        for data_dir in sorted(fp_dir.glob("data.[0-9][0-9][0-9]")):
            sys_idx = int(data_dir.name.split(".")[1])
            spec = p.sys_batch_size if isinstance(p.sys_batch_size, str) else p.sys_batch_size[sys_idx]
            for sys_dir in expand_systems(data_dir):
                name = f"iter.{k:06d}.{data_dir.name}.{sys_dir.name}"
                _relink(train_dir / "data.iters" / name, sys_dir.resolve())
                systems.append(f"../data.iters/{name}")
                sizes.append(auto_batch_size(sys_dir, spec))
    return systems, sizes


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
    specs = [TaskSpec(t, cmd, (deepmd.INPUT,), deepmd.BACKWARD, deepmd.LOG, "train.err")
             for t in manifest["tasks"]]
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
