"""02.fp: select candidates from the deviations, label them, collect the labels as data.SSS."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import dpdata
import numpy as np

from dpgen_ng.dispatch import TaskSpec
from dpgen_ng.errors import StageError
from dpgen_ng.explore import lammps
from dpgen_ng.explore.filters import bad_box, min_distance_table, too_close
from dpgen_ng.explore.select import CANDIDATE, SKIPPED, Trust, classify, select_system
from dpgen_ng.fp import Failure, Labeler, labeler_class
from dpgen_ng.io import atomic_write_json, atomic_write_text, replace_dir
from dpgen_ng.stages import model_devi
from dpgen_ng.stages.context import IterContext, read_manifest, write_manifest
from dpgen_ng.stages.train import LABELS_FILE

log = logging.getLogger("dpgen_ng.fp")
SELECTION_FILE = "selection.json"


def labeler(ctx: IterContext) -> Labeler:
    p = ctx.params
    return labeler_class(p.fp_style)(p.fp_settings, p.type_map)


def make(ctx: IterContext) -> None:
    p = ctx.params
    job = p.model_devi_jobs[ctx.iteration]
    md_dir, fp_dir = ctx.stage_dir(1), ctx.stage_dir(2)
    fp_dir.mkdir(parents=True, exist_ok=True)
    md_tasks = read_manifest(md_dir)["tasks"]
    table = np.load(md_dir / model_devi.DEVI_TABLE)
    lab = labeler(ctx)
    summary: dict[str, Any] = {}
    fp_tasks: list[dict[str, Any]] = []
    cache: dict[int, dpdata.System] = {}

    def frames(t: int) -> dpdata.System:
        if t not in cache:
            traj = md_dir / md_tasks[t]["path"] / lammps.TRAJ
            cache[t] = dpdata.System(str(traj), fmt="lammps/dump", type_map=list(p.type_map))
        return cache[t]

    # MD runs of one conf at several T / P start from the same structure: their first frames are
    # copies of each other, so only the first run's counts (no structure is labeled twice)
    first_of_conf: dict[str, int] = {}
    copies = np.zeros(len(table["task"]), dtype=bool)
    for i, t in enumerate(md_tasks):
        owner = first_of_conf.setdefault(t["conf"], i)
        if owner != i:
            copies |= (table["task"] == i) & (table["row"] == 0)

    for sys_idx in job.sys_idx:
        f_lo, f_hi, v_lo, v_hi = p.trust(job, sys_idx)
        mask = (table["sys_idx"] == sys_idx) & (table["step"] >= p.model_devi_skip) & ~copies
        codes = classify(table["max_devi_f"][mask], table["max_devi_v"][mask], Trust(f_lo, f_hi, v_lo, v_hi))
        task_idx = table["task"][mask].astype(int)
        rows = table["row"][mask].astype(int)
        steps = table["step"][mask].astype(int)
        cand = np.flatnonzero(codes == CANDIDATE)
        tag = f"{sys_idx:03d}"
        atomic_write_text(fp_dir / f"candidate.{tag}.out", "".join(
            f"{md_tasks[task_idx[i]]['path']} {steps[i]}\n" for i in cand))
        codes[cand[_rejected(p, cand, task_idx, rows, frames)]] = SKIPPED
        sel = select_system(task_idx, rows, codes, ctx.rng("fp", sys_idx), p.fp_task_max,
                            p.fp_accurate_soft_threshold, p.fp_accurate_threshold)
        n = max(sel.n_total, 1)
        for label, count in (("candidate", sel.n_candidate), ("failed", sel.n_failed),
                             ("accurate", sel.n_accurate)):
            log.info("system %s %-9s: %6d in %6d %6.2f %%", tag, label, count, sel.n_total,
                     100.0 * count / n)
        if sel.n_skipped:
            log.info("system %s: %d candidate(s) skipped by the sanity filters", tag, sel.n_skipped)
        if sel.n_total == 0:
            log.warning("system %s: no frames (maybe the model deviation is NaN or every MD task "
                        "failed)", tag)
        log.info("system %s accurate_ratio: %.4f thresholds: %g and %g; fp tasks: %d",
                 tag, sel.accurate_ratio, p.fp_accurate_soft_threshold, p.fp_accurate_threshold,
                 len(sel.picked))
        picked = []
        counter = 0
        for t, r in sel.picked:
            t, r = int(t), int(r)
            traj = frames(t)
            if r >= traj.get_nframes():
                log.warning("%s has no frame %d (truncated trajectory); skipped", md_tasks[t]["path"], r)
                continue
            name = f"task.{tag}.{counter:06d}"
            counter += 1
            task_dir = fp_dir / name
            task_dir.mkdir(exist_ok=True)
            lab.write_inputs(traj.sub_system([r]), task_dir)
            step = int(steps[(task_idx == t) & (rows == r)][0])
            origin = {"sys_idx": sys_idx, "md_task": md_tasks[t]["path"], "step": step}
            atomic_write_json(task_dir / "job.json", origin)
            fp_tasks.append({"path": name, **origin})
            picked.append([md_tasks[t]["path"], step])
        summary[tag] = {
            "accurate": sel.n_accurate, "candidate": sel.n_candidate, "failed": sel.n_failed,
            "skipped": sel.n_skipped, "total": sel.n_total, "accurate_ratio": sel.accurate_ratio,
            "budget": sel.budget, "trust": {"f_lo": f_lo, "f_hi": f_hi, "v_lo": v_lo, "v_hi": v_hi},
            "picked": picked,
        }
    atomic_write_json(fp_dir / SELECTION_FILE, {"iteration": ctx.iteration, "systems": summary})
    write_manifest(fp_dir, fp_tasks, fp_style=p.fp_style)


def _rejected(p, cand: np.ndarray, task_idx: np.ndarray, rows: np.ndarray, frames) -> np.ndarray:  # noqa: ANN001
    """Which candidates (positions in ``cand``) the sanity filters reject."""
    bad = np.zeros(cand.size, dtype=bool)
    if not (p.skip_bad_box or p.min_distance) or not cand.size:
        return bad
    table = min_distance_table(len(p.type_map), p.min_distance)
    for t in np.unique(task_idx[cand]):
        here = task_idx[cand] == t
        traj = frames(int(t))
        r = rows[cand[here]]
        ok = r < traj.get_nframes()
        cells, coords = traj["cells"][r[ok]], traj["coords"][r[ok]]
        verdict = np.zeros(r.size, dtype=bool)
        if p.skip_bad_box:
            verdict[ok] |= bad_box(cells, p.skip_bad_box)
        if p.min_distance:
            verdict[ok] |= too_close(coords, cells, traj["atom_types"], table)
        bad[here] = verdict
    return bad


def run(ctx: IterContext) -> None:
    fp_dir = ctx.stage_dir(2)
    tasks = read_manifest(fp_dir)["tasks"]
    if not tasks:
        return
    lab = labeler(ctx)
    cmd = lab.command(ctx.machines["fp"].command)
    specs = [TaskSpec(t["path"], cmd, tuple(lab.forward_files()), tuple(lab.backward_files()),
                      lab.outlog, lab.errlog) for t in tasks]
    ctx.dispatcher("fp").run(ctx.iteration, "fp", fp_dir, specs, allow_failures=True)


def write_data(out_dir: Path, systems: list[dpdata.System], type_map: tuple[str, ...]) -> int:
    """Write frames to ``out_dir/<formula>/`` (deepmd/npy), replacing it atomically."""
    ms = dpdata.MultiSystems(type_map=list(type_map))
    for s in systems:
        ms.append(s)
    replace_dir(out_dir, lambda tmp: ms.to_deepmd_npy(str(tmp)))
    return ms.get_nframes()


def post(ctx: IterContext) -> None:
    p = ctx.params
    fp_dir = ctx.stage_dir(2)
    tasks = read_manifest(fp_dir)["tasks"]
    lab = labeler(ctx)
    labeled: dict[int, list[dpdata.LabeledSystem]] = {}
    failed: dict[int, list[dpdata.System]] = {}
    records = []
    reasons: Counter[str] = Counter()
    for t in tasks:
        task_dir = fp_dir / t["path"]
        out = lab.result(task_dir)
        origin = {"path": t["path"], "md_task": t["md_task"], "step": t["step"]}
        if isinstance(out, Failure):
            reasons[out.kind] += 1
            records.append({**origin, "status": "failed", "kind": out.kind, "detail": out.detail})
            failed.setdefault(t["sys_idx"], []).append(lab.read_conf(task_dir))
        else:
            labeled.setdefault(t["sys_idx"], []).append(out)
            records.append({**origin, "status": "labeled"})
    n_labeled = 0
    for sys_idx, systems in sorted(labeled.items()):
        n_labeled += write_data(fp_dir / f"data.{sys_idx:03d}", systems, p.type_map)
    # the frames that could not be labeled are kept aside (never trained on), with their reasons
    # in labels.json, e.g. to relabel them with other settings
    for sys_idx, systems in sorted(failed.items()):
        write_data(fp_dir / f"failed.{sys_idx:03d}", systems, p.type_map)
    n_failed = sum(reasons.values())
    atomic_write_json(fp_dir / LABELS_FILE, {
        "labeled": n_labeled, "failed": n_failed, "by_reason": dict(reasons), "tasks": records,
    })
    log.info("iteration %d: %d frame(s) labeled, %d failed %s", ctx.iteration, n_labeled, n_failed,
             dict(reasons) if reasons else "")
    if tasks and n_failed / len(tasks) > p.ratio_failed:
        shown = [f"  {fp_dir / r['path']}: {r['kind']}: {r['detail']}" for r in records
                 if r["status"] == "failed"][:10]
        raise StageError(
            f"{n_failed} of {len(tasks)} fp tasks failed ({dict(reasons)}), above ratio_failed "
            f"{p.ratio_failed}; the {n_labeled} good labels are kept in {fp_dir}/data.*. "
            "Fix the cause or raise ratio_failed, then run again:\n" + "\n".join(shown))
    clean = p.model_devi_clean_traj
    if clean is True:
        model_devi.clean_trajectories(ctx, ctx.iteration)
    elif not isinstance(clean, bool) and clean > 0 and ctx.iteration - clean >= 0:
        model_devi.clean_trajectories(ctx, ctx.iteration - clean)
