"""``dpgen status``: per iteration, the step reached, selection counts, labels added; why it stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dpgen_ng.ledger import LEDGER_PATH, Ledger
from dpgen_ng.record import STEPS, iter_name, read_record


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect_status(workdir: Path) -> dict[str, Any]:
    workdir = Path(workdir)
    last_it, last_step = read_record(workdir)
    stop_reason, n_jobs = "not started", None
    if (workdir / LEDGER_PATH).is_file():
        with Ledger(workdir) as ledger:
            stop_reason = ledger.meta_get("stop_reason") or "unknown"
            n = ledger.meta_get("n_jobs")
            n_jobs = int(n) if n else None
    iterations = []
    it = 0
    while (workdir / iter_name(it)).is_dir():
        d = workdir / iter_name(it)
        if it < last_it:
            step = len(STEPS) - 1
        elif it == last_it:
            step = last_step
        else:
            step = -1
        sel = _read_json(d / "02.fp" / "selection.json") or {}
        labels = _read_json(d / "02.fp" / "labels.json") or {}
        iterations.append({
            "iteration": it,
            "step": step,
            "step_name": STEPS[step] if step >= 0 else "-",
            "train_copied": (d / "00.train" / "copied").exists(),
            "systems": {k: {x: v.get(x, 0) for x in ("accurate", "candidate", "failed", "skipped", "total")}
                        for k, v in sel.get("systems", {}).items()},
            "labeled": labels.get("labeled"),
            "label_failures": labels.get("by_reason", {}),
        })
        it += 1
    if stop_reason == "running":
        stop_reason = "running (or killed: run `dpgen run` again to resume)"
    return {"workdir": str(workdir.resolve()), "n_jobs": n_jobs, "last_record": [last_it, last_step],
            "stop_reason": stop_reason, "iterations": iterations}


def format_status(status: dict[str, Any]) -> str:
    lines = [f"work dir: {status['workdir']}"]
    head = f"{'iter':>6} {'step reached':<18} {'sys':>4} {'accurate':>9} {'candidate':>9} " \
           f"{'failed':>7} {'labeled':>8}  label failures"
    lines += [head, "-" * len(head)]
    for row in status["iterations"]:
        step = f"{row['step']} {row['step_name']}" if row["step"] >= 0 else "-"
        if row["train_copied"]:
            step += " (reused)"
        systems = row["systems"] or {"-": None}
        fails = ", ".join(f"{k} {v}" for k, v in row["label_failures"].items()) or "-"
        labeled = "-" if row["labeled"] is None else str(row["labeled"])
        for i, (name, c) in enumerate(systems.items()):
            counts = (f"{c['accurate']:>9} {c['candidate']:>9} {c['failed']:>7}" if c
                      else f"{'-':>9} {'-':>9} {'-':>7}")
            first = i == 0
            lines.append(f"{row['iteration'] if first else '':>6} {step if first else '':<18} "
                         f"{name:>4} {counts} {labeled if first else '':>8}  {fails if first else ''}")
    lines.append(f"status: {status['stop_reason']}")
    return "\n".join(lines)
