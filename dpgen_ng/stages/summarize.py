"""The last act of post_fp: the iteration's summary, its committee's figures, the verdicts.

It reads what the steps wrote (selection, labels, the training's fit), evaluates the committee on
the held-out set and on the new labels, asks the convergence criteria, and writes
``summary.json``. Run again after a kill, it writes the same summary (the evaluation is reused).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from dpgen_ng.converge.criteria import judge
from dpgen_ng.data import expand_systems
from dpgen_ng.stages import model_devi
from dpgen_ng.stages.context import LABELS_FILE, SELECTION_FILE, IterContext
from dpgen_ng.summary import (
    IterationSummary,
    SystemSummary,
    Trust,
    read_summaries,
    write_summary,
)
from dpgen_ng.train.evaluate import CALIBRATION_FILE, VALIDATION_FILE, evaluate, validation_systems
from dpgen_ng.train.gate import FIT_FILE

log = logging.getLogger("dpgen_ng.summary")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def committee(ctx: IterContext) -> list[Path]:
    return [ctx.stage_dir(0) / ctx.params.backend.graph(k) for k in range(ctx.params.numb_models)]


def evaluate_committee(ctx: IterContext, labels: list[Path]):  # noqa: ANN201 - (Validation, Calibration)
    p = ctx.params
    held_out = validation_systems(ctx.workdir, p.validation_data_prefix, p.validation_data_sys)
    return evaluate(committee(ctx), p.type_map, held_out, labels, ctx.stage_dir(0) / VALIDATION_FILE,
                    ctx.stage_dir(2) / CALIBRATION_FILE)


def summarize(ctx: IterContext) -> IterationSummary:
    p = ctx.params
    slot = model_devi.slot_of(ctx)
    fp_dir = ctx.stage_dir(2)
    selection = _json(fp_dir / SELECTION_FILE)
    labels = _json(fp_dir / LABELS_FILE)
    by_system = labels.get("by_system", {})
    systems = {tag: SystemSummary(s["accurate"], s["candidate"], s["failed"], s["skipped"],
                                  Trust(**s["trust"]), by_system.get(tag, 0))
               for tag, s in selection.get("systems", {}).items()}
    label_dirs = [d for tag in sorted(by_system) for d in expand_systems(fp_dir / f"data.{tag}")]
    validation, calibration = evaluate_committee(ctx, label_dirs)
    warnings = tuple(_json(ctx.stage_dir(0) / FIT_FILE).get("warnings", [])) + \
        tuple(selection.get("warnings", []))
    base = IterationSummary(
        iteration=ctx.iteration, job=slot.job, repeat=slot.repeat, nsteps=slot.nsteps, systems=systems,
        labeled=labels.get("labeled", 0), label_failures=dict(labels.get("by_reason", {})),
        validation=validation, calibration=calibration, warnings=warnings,
    )
    verdicts, converged = judge(p.convergence, base, read_summaries(ctx.workdir, ctx.iteration))
    summary = replace(base, verdicts=verdicts, converged=converged)
    if validation is not None:
        m = validation.mean
        log.info("iteration %d: committee on %d held-out frames: force RMSE %.3g eV/Å, energy RMSE %s",
                 ctx.iteration, validation.nframes, m.force or float("nan"),
                 "n/a" if m.energy is None else f"{m.energy:.3g} eV/atom")
    if calibration is not None and calibration.spearman is not None:
        log.info("iteration %d: deviation vs true force error on the %d new labels: rank correlation "
                 "%.2f, true error / deviation %.2f", ctx.iteration, calibration.nframes,
                 calibration.spearman, calibration.error_over_devi or float("nan"))
    for v in verdicts:
        log.info("iteration %d: %s %s: %s", ctx.iteration, v.criterion, "holds" if v.holds else "not yet",
                 v.figures)
    write_summary(ctx.workdir, summary)
    return summary
