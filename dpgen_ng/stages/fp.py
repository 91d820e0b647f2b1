"""02.fp: select candidates from the deviations, label them, collect the labels as data.SSS;
then judge the iteration (``stages/summarize.py``)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata
import numpy as np

from dpgen_ng.dispatch import TaskSpec
from dpgen_ng.errors import StageError
from dpgen_ng.explore.filters import bad_box, min_distance_table, too_close
from dpgen_ng.explore.pick import Candidates, Picker, picker
from dpgen_ng.explore.select import (
    CANDIDATE,
    SKIPPED,
    SystemSelection,
    Trust,
    budget_of,
    classify,
    classify_adaptive,
    select_system,
)
from dpgen_ng.explore.trajectories import Trajectories
from dpgen_ng.fp import Failure, Labeler, labeler_class
from dpgen_ng.io import atomic_write_json, atomic_write_text, replace_dir
from dpgen_ng.stages import model_devi
from dpgen_ng.stages import train as train_stage
from dpgen_ng.stages.context import LABELS_FILE, SELECTION_FILE, IterContext, read_manifest, write_manifest
from dpgen_ng.stages.summarize import committee, summarize
from dpgen_ng.train import fingerprint
from dpgen_ng.train.fingerprint import FrameSet
from dpgen_ng.train.gate import exploration_warning

log = logging.getLogger("dpgen_ng.fp")


def labeler(ctx: IterContext) -> Labeler:
    p = ctx.params
    return labeler_class(p.fp_style)(p.fp_settings, p.type_map)


@dataclass(frozen=True)
class Frames:
    """The deviation table rows of one system that take part in selection."""

    task: np.ndarray
    row: np.ndarray
    step: np.ndarray
    max_f: np.ndarray
    max_v: np.ndarray

    def order(self) -> np.ndarray:
        """A total order of the frames (task × rows + row) that breaks ties between deviations."""
        return self.task.astype(np.int64) * (int(self.row.max(initial=0)) + 1) + self.row


def _first_frame_copies(table: Any, md_tasks: list[dict[str, Any]]) -> np.ndarray:
    """MD runs of one conf at several T / P start from the same structure: their first frames are
    copies of each other, so only the first run's counts (no structure is labeled twice)."""
    first_of_conf: dict[str, int] = {}
    task, row = table["task"], table["row"]  # read once: an npz column is read on every access
    copies = np.zeros(len(task), dtype=bool)
    for i, t in enumerate(md_tasks):
        owner = first_of_conf.setdefault(t["conf"], i)
        if owner != i:
            copies |= (task == i) & (row == 0)
    return copies


def classify_system(ctx: IterContext, job_index: int, sys_idx: int,
                    fr: Frames) -> tuple[np.ndarray, Trust]:
    """Class codes of a system's frames and the trust levels used (fixed or adapted)."""
    p = ctx.params
    f_lo, f_hi, v_lo, v_hi = p.trust(p.model_devi_jobs[job_index], sys_idx)
    if p.adaptive is None:
        trust = Trust(f_lo, f_hi, v_lo, v_hi)
        return classify(fr.max_f, fr.max_v, trust), trust
    adapt_v = p.adaptive.numb_v > 0 or p.adaptive.perc_v > 0
    if v_hi is None and adapt_v:
        v_hi = float("inf")  # DP-GEN's default upper virial level: none
    codes, used = classify_adaptive(fr.max_f, fr.max_v, fr.order(), f_hi, v_hi, p.adaptive)

    def finite(x: float | None) -> float | None:
        return x if x is not None and np.isfinite(x) else None

    return codes, Trust(used.f_lo, f_hi, finite(used.v_lo), finite(v_hi), True)


def _write_tasks(fp_dir: Path, lab: Labeler, sys_idx: int, sel: SystemSelection, fr: Frames,
                 trajs: Trajectories) -> list[dict[str, Any]]:
    """One labeling task per picked frame (``task.SSS.NNNNNN``, in the order of the picks)."""
    tasks: list[dict[str, Any]] = []
    for t, r in sel.picked:
        t, r = int(t), int(r)
        frame = trajs.frame(t, r)
        md_task = trajs.md_tasks[t]["path"]
        if frame is None:
            log.warning("%s has no frame %d (truncated trajectory); skipped", md_task, r)
            continue
        name = f"task.{sys_idx:03d}.{len(tasks):06d}"
        task_dir = fp_dir / name
        task_dir.mkdir(exist_ok=True)
        lab.write_inputs(frame, task_dir)
        step = int(fr.step[(fr.task == t) & (fr.row == r)][0])
        origin = {"sys_idx": sys_idx, "md_task": md_task, "step": step}
        atomic_write_json(task_dir / "job.json", origin, sync=False)  # synced by write_manifest
        tasks.append({"path": name, **origin})
    return tasks


@dataclass
class Staged:
    """One system between classification and picking."""

    sys_idx: int
    frames: Frames
    codes: np.ndarray
    trust: Trust
    features: np.ndarray | None = None  # fingerprints of the candidates, when the strategy needs them

    @property
    def tag(self) -> str:
        return f"{self.sys_idx:03d}"


def _stage_system(ctx: IterContext, job: int, sys_idx: int, table: Any, copies: np.ndarray,
                  trajs: Trajectories) -> Staged:
    """Classify a system's frames, list its candidates, apply the sanity filters."""
    p = ctx.params
    mask = (table["sys_idx"] == sys_idx) & (table["step"] >= p.model_devi_skip) & ~copies
    fr = Frames(table["task"][mask].astype(int), table["row"][mask].astype(int),
                table["step"][mask].astype(int), table["max_devi_f"][mask], table["max_devi_v"][mask])
    codes, trust = classify_system(ctx, job, sys_idx, fr)
    cand = np.flatnonzero(codes == CANDIDATE)
    atomic_write_text(ctx.stage_dir(2) / f"candidate.{sys_idx:03d}.out", "".join(
        f"{trajs.md_tasks[fr.task[i]]['path']} {fr.step[i]}\n" for i in cand))
    codes[cand[_rejected(p, cand, fr.task, fr.row, trajs)]] = SKIPPED
    return Staged(sys_idx, fr, codes, trust)


def _needs_choice(ctx: IterContext, st: Staged) -> bool:
    """Whether the budget leaves a choice to make (fewer picks than candidates)."""
    p = ctx.params
    n_cand = int(np.count_nonzero(st.codes == CANDIDATE))
    budget = budget_of(st.codes, p.fp_task_max, p.fp_accurate_soft_threshold, p.fp_accurate_threshold)
    return 0 < budget < n_cand


def _add_fingerprints(ctx: IterContext, staged: list[Staged], trajs: Trajectories) -> list[np.ndarray]:
    """Fingerprints of the candidates of every system that has a choice to make, and of a seeded
    sample of the training frames, with the first model of the committee (one child process)."""
    groups: dict[str, FrameSet] = {}
    members: dict[int, list[tuple[str, np.ndarray]]] = {}
    for st in staged:
        if not _needs_choice(ctx, st):
            continue
        cand = np.flatnonzero(st.codes == CANDIDATE)
        for t in np.unique(st.frames.task[cand]):
            at = cand[st.frames.task[cand] == t]
            traj = trajs(int(t))
            # a row past a truncated trajectory is skipped when its task is written; it only needs
            # some fingerprint here
            rows = np.minimum(st.frames.row[at], traj.get_nframes() - 1)
            name = f"cand.{st.tag}.{int(t)}"
            groups[name] = FrameSet(traj["coords"][rows], traj["cells"][rows], np.asarray(traj["atom_types"]))
            members.setdefault(st.sys_idx, []).append((name, at))
    if not groups:
        return []
    systems = [sys_dir for _, sys_dir, _ in train_stage.training_data(ctx)]
    known = fingerprint.known_frames(systems, ctx.params.type_map, ctx.rng("fp-known"))
    groups.update({f"known.{i}": fs for i, fs in enumerate(known)})
    t0 = time.monotonic()
    prints = fingerprint.compute(committee(ctx)[0], ctx.params.type_map, groups)
    log.info("fingerprints of %d candidate(s) and %d training frame(s) in %.1f s",
             sum(len(at) for parts in members.values() for _, at in parts),
             sum(len(fs.coords) for fs in known), time.monotonic() - t0)
    for st in staged:
        parts = members.get(st.sys_idx)
        if parts:
            cand = np.flatnonzero(st.codes == CANDIDATE)
            feats = np.zeros((cand.size, prints[parts[0][0]].shape[1]))
            for name, at in parts:
                feats[np.searchsorted(cand, at)] = prints[name]  # cand is sorted, at ⊂ cand
            st.features = feats
    return [prints[f"known.{i}"] for i in range(len(known))]


def _chooser(strategy: Picker, st: Staged, rng: np.random.Generator,
             known: np.ndarray | None) -> Callable[[np.ndarray, int], np.ndarray]:
    """``choose(candidate positions, k)`` for :func:`select_system`, backed by the strategy."""
    order = st.frames.order()

    def choose(idx: np.ndarray, k: int) -> np.ndarray:
        with_features = st.features is not None
        cand = Candidates(st.frames.max_f[idx], st.frames.task[idx], order[idx], st.features,
                          known if with_features else None)
        return strategy.pick(cand, k, rng)

    return choose


def make(ctx: IterContext) -> None:
    p = ctx.params
    slot = model_devi.slot_of(ctx)
    md_dir, fp_dir = ctx.stage_dir(1), ctx.stage_dir(2)
    fp_dir.mkdir(parents=True, exist_ok=True)
    md_tasks = read_manifest(md_dir)["tasks"]
    table = np.load(md_dir / model_devi.DEVI_TABLE)
    trajs = Trajectories(md_dir, md_tasks, p.type_map, ctx.machines["model_devi"].machine)
    try:
        _make(ctx, slot, md_tasks, table, trajs)
    finally:
        trajs.close()


def _make(ctx: IterContext, slot: Any, md_tasks: list[dict[str, Any]], table: Any,
          trajs: Trajectories) -> None:
    p = ctx.params
    fp_dir = ctx.stage_dir(2)
    lab = labeler(ctx)
    strategy = picker(p.fp_pick)
    copies = _first_frame_copies(table, md_tasks)
    staged = [_stage_system(ctx, slot.job, s, table, copies, trajs)
              for s in p.model_devi_jobs[slot.job].sys_idx]
    known = _add_fingerprints(ctx, staged, trajs) if strategy.needs_features else []
    known_all = np.concatenate(known) if known else None
    summary: dict[str, Any] = {}
    fp_tasks: list[dict[str, Any]] = []
    for st in staged:
        fr = st.frames
        choose = _chooser(strategy, st, ctx.rng("fp", st.sys_idx), known_all)
        sel = select_system(fr.task, fr.row, st.codes, p.fp_task_max, p.fp_accurate_soft_threshold,
                            p.fp_accurate_threshold, choose)
        _log_selection(st.tag, sel, st.trust, p)
        tasks = _write_tasks(fp_dir, lab, st.sys_idx, sel, fr, trajs)
        fp_tasks += tasks
        summary[st.tag] = {
            "accurate": sel.n_accurate, "candidate": sel.n_candidate, "failed": sel.n_failed,
            "skipped": sel.n_skipped, "total": sel.n_total, "accurate_ratio": sel.accurate_ratio,
            "budget": sel.budget, "trust": st.trust.__dict__,
            "picked": [[t["md_task"], t["step"]] for t in tasks],
        }
    warning = exploration_warning(ctx.iteration, summary, table["max_devi_f"])
    if warning:
        log.warning("WARNING %s", warning)
    atomic_write_json(fp_dir / SELECTION_FILE, {"iteration": ctx.iteration, "job": slot.job,
                                                "repeat": slot.repeat, "fp_pick": p.fp_pick,
                                                "systems": summary,
                                                "warnings": [warning] if warning else []})
    write_manifest(fp_dir, fp_tasks, fp_style=p.fp_style)


def _log_selection(tag: str, sel: SystemSelection, trust: Trust, p) -> None:  # noqa: ANN001
    n = max(sel.n_total, 1)
    for label, count in (("candidate", sel.n_candidate), ("failed", sel.n_failed),
                         ("accurate", sel.n_accurate)):
        log.info("system %s %-9s: %6d in %6d %6.2f %%", tag, label, count, sel.n_total, 100.0 * count / n)
    if trust.adapted:
        log.info("system %s adapted trust_lo: %.4g eV/Å (trust_hi %.4g)", tag, trust.f_lo, trust.f_hi)
    if sel.n_skipped:
        log.info("system %s: %d candidate(s) skipped by the sanity filters", tag, sel.n_skipped)
    if sel.n_total == 0:
        log.warning("system %s: no frames (maybe the model deviation is NaN or every MD task failed)", tag)
    log.info("system %s accurate_ratio: %.4f thresholds: %g and %g; fp tasks: %d", tag,
             sel.accurate_ratio, p.fp_accurate_soft_threshold, p.fp_accurate_threshold, len(sel.picked))


def _rejected(p, cand: np.ndarray, task_idx: np.ndarray, rows: np.ndarray,  # noqa: ANN001
              trajs: Trajectories) -> np.ndarray:
    """Which candidates (positions in ``cand``) the sanity filters reject."""
    bad = np.zeros(cand.size, dtype=bool)
    if not (p.skip_bad_box or p.min_distance) or not cand.size:
        return bad
    table = min_distance_table(len(p.type_map), p.min_distance)
    for t in np.unique(task_idx[cand]):
        here = task_idx[cand] == t
        traj = trajs(int(t))
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


def collect_labels(ctx: IterContext) -> None:
    """Parse every task's labels into ``data.SSS`` (failures aside in ``failed.SSS``), write
    ``labels.json``; stop when the failures exceed ``ratio_failed`` (the good labels are kept)."""
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
            if p.explore.nopbc:  # the data says so: DeePMD trains it without periodic images
                out.nopbc = True
            labeled.setdefault(t["sys_idx"], []).append(out)
            records.append({**origin, "status": "labeled"})
    by_system = {}
    for sys_idx, systems in sorted(labeled.items()):
        by_system[f"{sys_idx:03d}"] = write_data(fp_dir / f"data.{sys_idx:03d}", systems, p.type_map)
    n_labeled = sum(by_system.values())
    # the frames that could not be labeled are kept aside (never trained on), with their reasons
    # in labels.json, e.g. to relabel them with other settings
    for sys_idx, systems in sorted(failed.items()):
        write_data(fp_dir / f"failed.{sys_idx:03d}", systems, p.type_map)
    n_failed = sum(reasons.values())
    atomic_write_json(fp_dir / LABELS_FILE, {
        "labeled": n_labeled, "failed": n_failed, "by_reason": dict(reasons), "by_system": by_system,
        "tasks": records,
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


def iteration_to_clean(clean: bool | int, iteration: int) -> int | None:
    """Whose trajectories go once this iteration's labels are in (DP-GEN's model_devi_clean_traj):
    true: this iteration's; an integer n: those of iteration - n, so the last n stay."""
    if clean is True:
        return iteration
    if not isinstance(clean, bool) and clean > 0 and iteration - clean >= 0:
        return iteration - clean
    return None


def post(ctx: IterContext) -> None:
    collect_labels(ctx)
    gone = iteration_to_clean(ctx.params.model_devi_clean_traj, ctx.iteration)
    if gone is not None:
        model_devi.clean_trajectories(ctx, gone)
    summarize(ctx)  # last: a summary on disk means this post_fp has finished its work
