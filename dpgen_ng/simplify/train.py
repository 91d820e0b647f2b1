"""00.train of simplify: a committee trained on ``init_data_sys`` plus every frame picked so far.

As ``dpgen run``'s training (same DeePMD-kit inputs, seeds, commands and resume), on other data:
the labeled picks of earlier iterations (``iter.*/02.fp/data.000``). Iteration 0 trains nothing:
its models would examine nothing (DP-GEN trains them on ``init_data_sys`` and never uses them).
"""

from __future__ import annotations

import logging
from pathlib import Path

from dpgen_ng.config.simplify import SimplifyParams
from dpgen_ng.data import auto_batch_size, expand_systems
from dpgen_ng.dispatch import TaskSpec
from dpgen_ng.errors import StageError
from dpgen_ng.io import atomic_write_json
from dpgen_ng.record import STAGE_DIRS, iter_name
from dpgen_ng.simplify.context import LABELED_DATA, SimplifyContext, link_rel
from dpgen_ng.stages.context import read_manifest, write_manifest
from dpgen_ng.train import deepmd
from dpgen_ng.train.warmstart import iter0_dirs

log = logging.getLogger("dpgen_ng.simplify")


def training_data(ctx: SimplifyContext) -> list[tuple[str, Path, int | str]]:
    """(link name under 00.train, deepmd/npy dir, batch size spec) of every training system."""
    p = ctx.params
    out: list[tuple[str, Path, int | str]] = []
    for i, entry in enumerate(p.init_data_sys):
        spec = p.init_batch_size if isinstance(p.init_batch_size, str) else p.init_batch_size[i]
        for j, sys_dir in enumerate(expand_systems(ctx.resolve(entry, p.init_data_prefix))):
            out.append((f"data.init/init.{i:03d}.{j:03d}", sys_dir, spec))
    spec = p.sys_batch_size if isinstance(p.sys_batch_size, str) else p.sys_batch_size[0]
    for k in range(ctx.iteration):
        for sys_dir in expand_systems(ctx.stage_dir(2, k) / LABELED_DATA):
            out.append((f"data.iters/iter.{k:06d}.{sys_dir.name}", sys_dir, spec))
    return out


def _starts(ctx: SimplifyContext) -> tuple[str, list[list[Path]]]:
    """``dp train`` flag and, per model, the checkpoint files it starts from (none: from scratch).
    With ``training_init_model`` each model starts from the same model of the previous
    iteration; iteration 1 from ``training_iter0_model_path`` when given."""
    p, it = ctx.params, ctx.iteration
    b = p.backend
    if not p.warm_start.init_model or (it == 1 and not p.warm_start.iter0_model_path):
        return "", [[] for _ in range(p.numb_models)]
    if it == 1:
        dirs = iter0_dirs(ctx.workdir, p.warm_start, p.numb_models)
    else:
        dirs = [ctx.stage_dir(0, it - 1) / f"{k:03d}" for k in range(p.numb_models)]
    return f" --init-model old/{deepmd.CKPT}", [[d / f for f in b.ckpt_files] for d in dirs]


def _link_old(task_dir: Path, files: list[Path]) -> list[str]:
    for f in files:
        if not f.is_file():
            raise StageError(f"{f} is missing: the model cannot start from it (training_init_model)")
        link_rel(task_dir / "old" / f.name, f)
    return [f"old/{f.name}" for f in files]


def make(ctx: SimplifyContext) -> None:
    train_dir = ctx.stage_dir(0)
    train_dir.mkdir(parents=True, exist_ok=True)
    if ctx.iteration == 0:
        write_manifest(train_dir, [], note="iteration 0 only picks at random: no models")
        return
    p = ctx.params
    systems, sizes = [], []
    for name, sys_dir, spec in training_data(ctx):
        link_rel(train_dir / name, sys_dir)
        systems.append(f"../{name}")
        sizes.append(auto_batch_size(sys_dir, spec))
    if not systems:
        raise StageError(f"{train_dir}: no training data (nothing picked and no init_data_sys)")
    rng = ctx.rng("train")
    base = p.training_param()
    flag, old_files = _starts(ctx)
    tasks, forward = [], {}
    for k in range(p.numb_models):
        task = f"{k:03d}"
        jinput = deepmd.training_input(base, p.type_map, systems, sizes, rng)
        if p.activation is not None:
            deepmd.apply_activation(jinput, p.activation[k])
        (train_dir / task).mkdir(exist_ok=True)
        atomic_write_json(train_dir / task / deepmd.INPUT, jinput)
        forward[task] = _link_old(train_dir / task, old_files[k])
        tasks.append(task)
    write_manifest(train_dir, tasks, systems=systems, batch_sizes=sizes, init_flag=flag, old_files=forward)
    log.info("iteration %d: %d %s models on %d systems (%s)", ctx.iteration, len(tasks), p.train_backend,
             len(systems), "from scratch" if not flag else "from the previous models")


def run(ctx: SimplifyContext) -> None:
    train_dir = ctx.stage_dir(0)
    manifest = read_manifest(train_dir)
    if not manifest["tasks"]:
        return
    p = ctx.params
    b = p.backend
    cmd = deepmd.task_command(ctx.machines["train"], b, manifest.get("init_flag", ""), p.dp_compress,
                              from_scratch=p.training_resume == "from_scratch")
    old = manifest.get("old_files", {})
    specs = [TaskSpec(t, cmd, (deepmd.INPUT, *old.get(t, ())), b.backward(p.dp_compress), deepmd.LOG,
                      "train.err", watch=deepmd.watch(train_dir / t)) for t in manifest["tasks"]]
    common = [d for d in ("data.init", "data.iters")
              if (train_dir / d).is_dir() and any((train_dir / d).iterdir())]
    ctx.dispatcher("train").run(ctx.iteration, "train", train_dir, specs, common)


def graph_paths(workdir: Path, params: SimplifyParams, iteration: int) -> list[Path]:
    """The committee of an iteration (``iter.*/00.train/graph.NNN.pb``)."""
    train_dir = Path(workdir) / iter_name(iteration) / STAGE_DIRS[0]
    return [train_dir / params.backend.graph(k) for k in range(params.numb_models)]


def graphs(ctx: SimplifyContext) -> list[Path]:
    return graph_paths(ctx.workdir, ctx.params, ctx.iteration)


def post(ctx: SimplifyContext) -> None:
    train_dir = ctx.stage_dir(0)
    manifest = read_manifest(train_dir)
    if not manifest["tasks"]:
        return
    p = ctx.params
    model = p.backend.compressed if p.dp_compress else p.backend.model
    for k, link in enumerate(graphs(ctx)):
        target = train_dir / f"{k:03d}" / model
        if not target.is_file():
            raise StageError(f"model {target} is missing after training")
        link_rel(link, target)
    for t in manifest["tasks"]:
        steps = deepmd.resumed_steps(train_dir / t)
        if steps:
            log.warning("WARNING iteration %d: model %s resumed from the checkpoint of step %s after its "
                        "job was killed (training_resume: from_scratch would start it over)",
                        ctx.iteration, t, ", ".join(map(str, steps)))
