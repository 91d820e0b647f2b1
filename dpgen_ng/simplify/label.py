"""02.fp of simplify: the picked frames with labels, as ``02.fp/data.000``.

``labeled: true``: the labels come with the data, ``data.000`` links to ``01.model_devi/data.picked``.
``labeled: false``: one task per picked frame for ``fp_style``'s labeler (``task.000.NNNNNN``),
dispatched on the fp machine; the frames it labels become ``data.000`` (failures are kept aside
in ``failed.000`` and listed in ``labels.json``; above ``ratio_failed`` the run stops).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import dpdata

from dpgen_ng.data import expand_systems
from dpgen_ng.dispatch import TaskSpec
from dpgen_ng.errors import StageError
from dpgen_ng.fp import Failure, Labeler, labeler_class
from dpgen_ng.io import replace_dir
from dpgen_ng.simplify.context import (
    FINAL_DATA,
    LABELED_DATA,
    PICKED,
    SimplifyContext,
    link_rel,
    write_json,
)
from dpgen_ng.simplify.dataset import load_pick_data
from dpgen_ng.simplify.devi import frames_of
from dpgen_ng.stages.context import LABELS_FILE, read_manifest, write_manifest
from dpgen_ng.stages.fp import write_data

log = logging.getLogger("dpgen_ng.simplify")


def labeler(ctx: SimplifyContext) -> Labeler:
    p = ctx.params
    return labeler_class(p.fp_style)(p.fp_settings, p.type_map)


def make(ctx: SimplifyContext) -> None:
    fp_dir = ctx.stage_dir(2)
    fp_dir.mkdir(parents=True, exist_ok=True)
    if ctx.params.labeled:
        link_rel(fp_dir / LABELED_DATA, ctx.stage_dir(1) / PICKED)
        write_manifest(fp_dir, [], labeled=True)
        return
    data = load_pick_data(ctx.workdir, ctx.params)
    lab = labeler(ctx)
    tasks = []
    for n, fid in enumerate(frames_of(ctx, ctx.iteration)["picked"]):
        name = f"task.000.{n:06d}"
        (fp_dir / name).mkdir(exist_ok=True)
        lab.write_inputs(data.frame(int(fid)), fp_dir / name)
        write_json(fp_dir / name / "job.json", {"frame": int(fid)})
        tasks.append({"path": name, "frame": int(fid)})
    write_manifest(fp_dir, tasks, fp_style=ctx.params.fp_style)


def run(ctx: SimplifyContext) -> None:
    fp_dir = ctx.stage_dir(2)
    tasks = read_manifest(fp_dir)["tasks"]
    if not tasks:
        return
    lab = labeler(ctx)
    cmd = lab.command(ctx.machines["fp"].command)
    specs = [TaskSpec(t["path"], cmd, tuple(lab.forward_files()), tuple(lab.backward_files()),
                      lab.outlog, lab.errlog) for t in tasks]
    ctx.dispatcher("fp").run(ctx.iteration, "fp", fp_dir, specs, allow_failures=True)


def _collect(ctx: SimplifyContext, tasks: list[dict]) -> None:
    p = ctx.params
    fp_dir = ctx.stage_dir(2)
    lab = labeler(ctx)
    good: list[dpdata.LabeledSystem] = []
    bad: list[dpdata.System] = []
    records, reasons = [], Counter()
    for t in tasks:
        out = lab.result(fp_dir / t["path"])
        if isinstance(out, Failure):
            reasons[out.kind] += 1
            bad.append(lab.read_conf(fp_dir / t["path"]))
            records.append({**t, "status": "failed", "kind": out.kind, "detail": out.detail})
        else:
            good.append(out)
            records.append({**t, "status": "labeled"})
    n_good = write_data(fp_dir / LABELED_DATA, good, p.type_map) if good else 0
    if bad:
        write_data(fp_dir / "failed.000", bad, p.type_map)
    write_json(fp_dir / LABELS_FILE, {"labeled": n_good, "failed": len(bad), "by_reason": dict(reasons),
                                      "tasks": records})
    log.info("iteration %d: %d frame(s) labeled, %d failed %s", ctx.iteration, n_good, len(bad),
             dict(reasons) if reasons else "")
    if tasks and len(bad) / len(tasks) > p.ratio_failed:
        raise StageError(f"{len(bad)} of {len(tasks)} fp tasks failed ({dict(reasons)}), above ratio_failed "
                         f"{p.ratio_failed}; see {fp_dir / LABELS_FILE}. Fix the cause or raise "
                         "ratio_failed, then run again")


def post(ctx: SimplifyContext) -> None:
    tasks = read_manifest(ctx.stage_dir(2))["tasks"]
    if not ctx.params.labeled:
        _collect(ctx, tasks)
    write_final(ctx)


def write_final(ctx: SimplifyContext) -> int:
    """Every labeled pick up to this iteration as ``<workdir>/data.simplified`` (deepmd/npy, one
    directory per formula); returns its number of frames."""
    p = ctx.params
    ms = dpdata.MultiSystems(type_map=list(p.type_map))
    for k in range(ctx.iteration + 1):
        for sys_dir in expand_systems(ctx.stage_dir(2, k) / LABELED_DATA):
            ms.append(dpdata.LabeledSystem(str(sys_dir), fmt="deepmd/npy", type_map=list(p.type_map)))

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        ms.to_deepmd_npy(str(tmp))

    replace_dir(ctx.workdir / FINAL_DATA, fill)
    return ms.get_nframes()
