"""01.model_devi of simplify: iteration 0 picks ``init_pick_number`` frames at random; later
iterations run DeePMD-kit's ``dp model-devi`` with the committee on the previous rest, classify the
frames by the trust levels, and pick ``iter_pick_number`` of the candidates."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.dispatch import TaskSpec
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.explore.devi import read_model_devi
from dpgen_ng.io import atomic_write_text
from dpgen_ng.record import iter_name
from dpgen_ng.simplify import select
from dpgen_ng.simplify.context import (
    ACCURATE,
    EXAMINED,
    FRAMES,
    PICKED,
    REST,
    SimplifyContext,
    link_rel,
    read_json,
    write_json,
)
from dpgen_ng.simplify.dataset import PickData, check_same, load_pick_data, write_frames
from dpgen_ng.simplify.train import graphs

log = logging.getLogger("dpgen_ng.simplify")
TASK = "task.000"
DEVI_OUT = "model_devi.out"
TRUE_OUT = "true_error.out"


def frames_of(ctx: SimplifyContext, iteration: int) -> dict[str, Any]:
    """``frames.json`` of an iteration (ids of its picked / rest / accurate / failed frames)."""
    return read_json(ctx.stage_dir(1, iteration) / FRAMES, f"{iter_name(iteration)} model deviation")


def _data(ctx: SimplifyContext) -> PickData:
    data = load_pick_data(ctx.workdir, ctx.params)
    if ctx.iteration > 0:
        check_same(data, frames_of(ctx, 0)["systems"])
    return data


def _save(ctx: SimplifyContext, data: PickData, sets: dict[str, np.ndarray], counts: dict[str, int]) -> None:
    md_dir = ctx.stage_dir(1)
    for name, ids in ((PICKED, sets["picked"]), (REST, sets["rest"]), (ACCURATE, sets.get("accurate"))):
        if ids is not None:
            write_frames(data, ids, md_dir / name)
    write_json(md_dir / FRAMES, {"iteration": ctx.iteration, "systems": data.describe(), "counts": counts,
                                 **{k: v.tolist() for k, v in sets.items()}})


def _init_pick(ctx: SimplifyContext) -> None:
    data = _data(ctx)
    if data.total == 0:
        raise UserError("pick_data holds no frames", "pick_data", "deepmd/npy systems with frames")
    picked, rest = select.init_pick(data.total, ctx.params.init_pick_number, ctx.rng("simplify-pick"))
    counts = {"examined": data.total, "candidate": data.total, "picked": int(picked.size), "accurate": 0,
              "failed": 0, "rest": int(rest.size)}
    _save(ctx, data, {"picked": picked, "rest": rest}, counts)
    log.info("%s: picked %d of %d frames at random; rest %d", iter_name(ctx.iteration), picked.size,
             data.total, rest.size)


def make(ctx: SimplifyContext) -> None:
    md_dir = ctx.stage_dir(1)
    md_dir.mkdir(parents=True, exist_ok=True)
    if ctx.iteration == 0:
        _init_pick(ctx)
        return
    task = md_dir / TASK
    for g in graphs(ctx):
        link_rel(md_dir / g.name, g)
        link_rel(task / g.name, md_dir / g.name)
    link_rel(md_dir / EXAMINED, ctx.stage_dir(1, ctx.iteration - 1) / REST)
    link_rel(task / EXAMINED, md_dir / EXAMINED)


def command(dp: str, models: list[str], real_error: bool) -> str:
    """DeePMD-kit's model deviation of the examined frames (``dp model-devi`` appends to its
    output: a rerun starts from an empty file); with ``real_error`` also the committee's real
    error against the labels."""
    base = f"{dp} model-devi -m {' '.join(models)} -s {EXAMINED}"
    cmd = f"rm -f {DEVI_OUT} && {base} -o {DEVI_OUT}"
    if real_error:
        cmd += f" && rm -f {TRUE_OUT} && {base} --real_error -o {TRUE_OUT}"
    return cmd


def run(ctx: SimplifyContext) -> None:
    if ctx.iteration == 0:
        return
    p = ctx.params
    models = [g.name for g in graphs(ctx)]
    outputs = (DEVI_OUT, TRUE_OUT) if p.true_error else (DEVI_OUT,)
    spec = TaskSpec(TASK, command(ctx.machines["model_devi"].command, models, p.true_error),
                    (*models, EXAMINED), outputs, "model_devi.log", "model_devi.err")
    ctx.dispatcher("model_devi").run(ctx.iteration, "model_devi", ctx.stage_dir(1), [spec])


def split_blocks(path: Path) -> dict[str, Path]:
    """``dp model-devi`` writes one block per system ("# <system path>", then "# step ..." and the
    rows); each block goes to ``<name>.<system dir name>.out`` beside ``path``: {system: file}."""
    blocks: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines():
        words = line.lstrip("#").split()
        if line.startswith("#") and words and words[0] != "step":
            name = Path(words[0]).name
            blocks[name] = []
        elif name is not None and line.strip():
            blocks[name].append(line)
    out = {}
    for sys_name, lines in blocks.items():
        out[sys_name] = path.with_name(f"{path.stem}.{sys_name}.out")
        atomic_write_text(out[sys_name], "\n".join(lines) + "\n")
    return out


def column(path: Path, name: str) -> np.ndarray:
    """One column of a model deviation file by its header name (``devi_e``: DeePMD-kit ≥ 2.2.2)."""
    lines = path.read_text().splitlines()
    header = lines[0].lstrip("#").split() if lines and lines[0].startswith("#") else []
    if name not in header:
        raise StageError(f"{path} has no {name} column (DeePMD-kit ≥ 2.2.2 writes it)")
    rows = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    return np.loadtxt(rows, ndmin=2)[:, header.index(name)] if rows else np.zeros(0)


def _read(path: Path, data: PickData, ids: np.ndarray) -> dict[str, np.ndarray]:
    """``max_devi_f`` and ``devi_e`` of each examined frame, in the order of ``ids``."""
    files = split_blocks(path)
    f_parts, e_parts = [], []
    for s, local in data.split(ids).items():
        block = files.get(f"sys.{s:03d}")
        if block is None:
            raise StageError(f"{path} has no deviation of system sys.{s:03d}")
        devi = read_model_devi(block)
        if len(devi) != local.size or not np.array_equal(devi.step, np.arange(local.size)):
            raise StageError(f"{block}: {len(devi)} rows for the {local.size} frames of sys.{s:03d}")
        f_parts.append(devi.max_devi_f)
        e_parts.append(column(block, "devi_e"))
    return {"max_devi_f": np.concatenate(f_parts), "devi_e": np.concatenate(e_parts)}


def post(ctx: SimplifyContext) -> None:
    if ctx.iteration == 0:
        return
    p = ctx.params
    data = _data(ctx)
    ids = np.asarray(frames_of(ctx, ctx.iteration - 1)["rest"], dtype=np.int64)
    task = ctx.stage_dir(1) / TASK
    cols = _read(task / DEVI_OUT, data, ids)
    if p.true_error:
        err = _read(task / TRUE_OUT, data, ids)
        cols.update(err_f=err["max_devi_f"], err_e=err["devi_e"])
    codes = select.classify(select.criteria(p, cols))
    out = select.pick(ids, codes, p.iter_pick_number, ctx.rng("simplify-pick"))
    counts = out.counts()
    _save(ctx, data, {"examined": ids, "picked": out.picked, "rest": out.rest, "accurate": out.accurate,
                      "failed": out.failed}, counts)
    total = sum(len(frames_of(ctx, k)["picked"]) for k in range(ctx.iteration + 1))
    log.info("%s: picked %d of %d candidates; accurate %d, failed %d, rest %d (picked in all: %d)",
             iter_name(ctx.iteration), counts["picked"], counts["candidate"], counts["accurate"],
             counts["failed"], counts["rest"], total)
    if out.converged and out.failed.size:
        raise StageError(f"{iter_name(ctx.iteration)}: no candidate but {out.failed.size} failed frame(s) "
                         f"(model deviation ≥ trust_hi): refine the training or raise "
                         f"model_devi_f_trust_hi ({p.f_trust.hi:g})")
