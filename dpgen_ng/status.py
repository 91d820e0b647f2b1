"""``dpgen status``: per iteration, the step reached, the job explored, selection counts and the
trust levels used, labels added, validation and calibration figures, whether the iteration met
the convergence criteria; and why the run stopped."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dpgen_ng.ledger import LEDGER_PATH, Ledger
from dpgen_ng.record import (
    LABELS_FILE,
    MANIFEST,
    RESUMED_FILE,
    SELECTION_FILE,
    STAGE_DIRS,
    STEPS,
    iter_name,
    read_record,
)
from dpgen_ng.summary import IterationSummary, read_summary, validation_from_json
from dpgen_ng.train.evaluate import VALIDATION_FILE


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _systems_in_progress(d: Path) -> dict[str, Any]:
    """Counts of an iteration whose post_fp has not finished (from its selection file)."""
    sel = _read_json(d / STAGE_DIRS[2] / SELECTION_FILE) or {}
    out = {}
    for tag, s in sel.get("systems", {}).items():
        total = s.get("total", 0)
        out[tag] = {**{k: s.get(k, 0) for k in ("accurate", "candidate", "failed", "skipped")},
                    "total": total, "accurate_ratio": s.get("accurate", 0) / total if total else 0.0,
                    "trust": s.get("trust")}
    return out


def _row(workdir: Path, it: int, step: int) -> dict[str, Any]:
    d = workdir / iter_name(it)
    summary: IterationSummary | None = read_summary(workdir, it)
    row: dict[str, Any] = {"iteration": it, "step": step, "step_name": STEPS[step] if step >= 0 else "-",
                           "train_copied": (d / STAGE_DIRS[0] / "copied").exists(),
                           "resumed": _read_json(d / STAGE_DIRS[0] / RESUMED_FILE) or {}}
    if summary is not None:
        js = summary.as_json()
        row.update(job=summary.job, run=summary.repeat + 1, nsteps=summary.nsteps, systems=js["systems"],
                   labeled=summary.labeled, label_failures=summary.label_failures,
                   validation=js["validation"], calibration=js["calibration"], converged=summary.converged,
                   verdicts=js["verdicts"], warnings=list(summary.warnings))
        return row
    md = _read_json(d / STAGE_DIRS[1] / MANIFEST) or {}
    labels = _read_json(d / STAGE_DIRS[2] / LABELS_FILE) or {}
    val = validation_from_json(_read_json(d / STAGE_DIRS[0] / VALIDATION_FILE))
    row.update(job=md.get("job", it if md else None), run=md.get("repeat", 0) + 1 if md else None,
               nsteps=md.get("nsteps"), systems=_systems_in_progress(d), labeled=labels.get("labeled"),
               label_failures=labels.get("by_reason", {}), validation=asdict(val) if val else None,
               calibration=None, converged=None, verdicts=[], warnings=[])
    return row


def collect_status(workdir: Path) -> dict[str, Any]:
    workdir = Path(workdir)
    last_it, last_step = read_record(workdir)
    stop_reason, stop_kind, n_jobs = "not started", "not_started", None
    if (workdir / LEDGER_PATH).is_file():
        with Ledger(workdir) as ledger:
            stop_reason = ledger.meta_get("stop_reason") or "unknown"
            stop_kind = ledger.meta_get("stop_kind") or ("running" if stop_reason == "running" else "unknown")
            n = ledger.meta_get("n_jobs")
            n_jobs = int(n) if n else None
    iterations = []
    it = 0
    while (workdir / iter_name(it)).is_dir():
        step = len(STEPS) - 1 if it < last_it else last_step if it == last_it else -1
        iterations.append(_row(workdir, it, step))
        it += 1
    if stop_reason == "running":
        stop_reason = "running (or killed: run `dpgen run` again to resume)"
    return {"workdir": str(workdir.resolve()), "n_jobs": n_jobs, "last_record": [last_it, last_step],
            "stop_kind": stop_kind, "stop_reason": stop_reason, "iterations": iterations}


def _pct(s: dict[str, Any], key: str) -> str:
    return f"{100 * s[key] / s['total']:.1f} %" if s.get("total") else "-"


def _trust(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    return f"{t['f_lo']:.3g}{'*' if t.get('adapted') else ''}–{t['f_hi']:.3g}"


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


HEAD = (f"{'iter':>5} {'job':>4} {'run':>3}  {'step reached':<16} {'sys':>4} {'frames':>7} {'accurate':>9} "
        f"{'candidate':>9} {'failed':>8}  {'trust f':<13} {'labeled':>7} {'val F':>7} {'rho':>5}  conv")


LEGEND = ("trust f: force trust levels used (eV/Å; * adapted). val F: committee-mean force RMSE on the\n"
          "held-out set (eV/Å). rho: rank correlation of deviation and true force error on the new labels.")


def format_status(status: dict[str, Any]) -> str:
    lines = [f"work dir: {status['workdir']}", HEAD, "-" * len(HEAD)]
    notes: list[str] = []
    for row in status["iterations"]:
        step = f"{row['step']} {row['step_name']}" if row["step"] >= 0 else "-"
        if row["train_copied"]:
            step += " (reused)"
        val = row.get("validation") or {}
        force = (val.get("mean") or {}).get("force")
        rho = (row.get("calibration") or {}).get("spearman")
        conv = {None: "-", True: "yes", False: "no"}[row.get("converged")]
        labeled = "-" if row["labeled"] is None else str(row["labeled"])
        job = "-" if row.get("job") is None else str(row["job"])
        run = "-" if row.get("run") is None else str(row["run"])
        systems = row["systems"] or {"-": None}
        for i, (name, s) in enumerate(systems.items()):
            first = i == 0
            counts = (f"{s['total']:>7} {_pct(s, 'accurate'):>9} {_pct(s, 'candidate'):>9} "
                      f"{_pct(s, 'failed'):>8}  {_trust(s.get('trust')):<13}" if s
                      else f"{'-':>7} {'-':>9} {'-':>9} {'-':>8}  {'-':<13}")
            it = row["iteration"] if first else ""
            lines.append(
                f"{it:>5} {job if first else '':>4} {run if first else '':>3}  "
                f"{step if first else '':<16} {name:>4} {counts} {labeled if first else '':>7} "
                f"{_fmt(force) if first else '':>7} {_fmt(rho, '.2f') if first else '':>5}  "
                f"{conv if first else ''}")
        for task, steps in row.get("resumed", {}).items():
            notes.append(f"iteration {row['iteration']}: model {task} resumed from the checkpoint of step "
                         f"{', '.join(map(str, steps))} (its job was killed; not bit-identical to an "
                         "uninterrupted training)")
        if row["label_failures"]:
            notes.append(f"iteration {row['iteration']}: label failures "
                         + ", ".join(f"{k} {v}" for k, v in row["label_failures"].items()))
        notes += [f"WARNING {w}" for w in row.get("warnings", [])]
    judged = [r for r in status["iterations"] if r.get("verdicts")]
    if judged:  # the criteria of the last judged iteration (the stop reason has them when it stopped)
        last = judged[-1]
        notes += [f"iteration {last['iteration']}: {v['criterion']} {'holds' if v['holds'] else 'not yet'}"
                  f": {v['figures']}" for v in last["verdicts"]]
    lines += [LEGEND] if any(r.get("verdicts") or r.get("validation") for r in status["iterations"]) else []
    lines += notes
    lines.append(f"status: {status['stop_reason']}")
    return "\n".join(lines)
