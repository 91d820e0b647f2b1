"""The report's figures, drawn with matplotlib's object API (no pyplot state, no display)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from dpgen_ng.report.data import STAGES, RunData

PANELS = 12  # systems per deviation figure
COLORS = {"accurate": "#4c9a2a", "candidate": "#e0a800", "failed": "#c0392b"}


@dataclass(frozen=True)
class Picture:
    """A PNG of the report: its file name, a title and one line saying what it shows."""

    name: str
    title: str
    caption: str


def _save(fig: Figure, out: Path, name: str) -> None:
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)


def _fractions(systems: dict) -> tuple[float, float, float]:
    total = sum(s["total"] for s in systems.values())
    if not total:
        return 0.0, 0.0, 0.0
    return tuple(sum(s[k] for s in systems.values()) / total  # type: ignore[return-value]
                 for k in ("accurate", "candidate", "failed"))


def deviation_histograms(run: RunData, out: Path) -> Iterator[Picture]:
    rows = {r["iteration"]: r for r in run.status["iterations"]}
    for it, by_sys in sorted(run.devi.items()):
        tags = sorted(by_sys)
        for part in range(0, len(tags), PANELS):
            chunk = tags[part:part + PANELS]
            ncol = min(3, len(chunk))
            nrow = -(-len(chunk) // ncol)
            fig = Figure(figsize=(4.2 * ncol, 3.0 * nrow))
            for k, tag in enumerate(chunk):
                ax = fig.add_subplot(nrow, ncol, k + 1)
                devi = by_sys[tag]
                devi = devi[np.isfinite(devi) & (devi > 0)]
                s = (rows.get(it, {}).get("systems") or {}).get(tag) or {}
                trust = s.get("trust") or {}
                if devi.size:
                    lo, hi = float(devi.min()), float(devi.max())
                    for level in (trust.get("f_lo"), trust.get("f_hi")):
                        if level:
                            lo, hi = min(lo, level), max(hi, level)
                    bins = np.geomspace(lo / 1.05, hi * 1.05, 40)
                    ax.hist(devi, bins=bins, color="#5577aa")
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
                for name, level, style in (("trust_lo", trust.get("f_lo"), "--"),
                                           ("trust_hi", trust.get("f_hi"), ":")):
                    if level:
                        ax.axvline(level, color="k", linestyle=style, label=f"{name} {level:.3g}")
                total = s.get("total") or 0
                pct = {k: 100 * s.get(k, 0) / total if total else 0.0
                       for k in ("accurate", "candidate", "failed")}
                ax.set_title(f"system {tag}: acc {pct['accurate']:.1f} % · cand "
                             f"{pct['candidate']:.1f} % · fail {pct['failed']:.1f} %", fontsize=9)
                ax.set_xlabel("max force deviation (eV/Å)")
                ax.set_ylabel("frames")
                if trust.get("f_lo"):
                    ax.legend(fontsize=7)
            suffix = f"_{part // PANELS}" if len(tags) > PANELS else ""
            name = f"devi_iter{it:03d}{suffix}.png"
            fig.suptitle(f"iteration {it}: max force deviation per frame", fontsize=11)
            _save(fig, out, name)
            yield Picture(name, f"Iteration {it}: model deviation",
                          "Histogram of the max force deviation per frame (log scale) with the trust "
                          "levels used; frames below trust_lo are accurate, at or above trust_hi failed.")


def ratios(run: RunData, out: Path) -> Iterator[Picture]:
    rows = [r for r in run.status["iterations"] if r["systems"]]
    if not rows:
        return
    its = [r["iteration"] for r in rows]
    fr = np.array([_fractions(r["systems"]) for r in rows]) * 100
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot()
    bottom = np.zeros(len(its))
    for k, name in enumerate(("accurate", "candidate", "failed")):
        ax.bar(its, fr[:, k], bottom=bottom, color=COLORS[name], label=name)
        bottom += fr[:, k]
    ax.set_xlabel("iteration")
    ax.set_ylabel("% of frames")
    ax.set_xticks(its)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, out, "ratios.png")
    yield Picture("ratios.png", "Accurate / candidate / failed frames",
                  "Share of explored frames per iteration, all systems together.")


def labels(run: RunData, out: Path) -> Iterator[Picture]:
    rows = [r for r in run.status["iterations"] if r.get("labeled") is not None]
    if not rows:
        return
    its = [r["iteration"] for r in rows]
    added = np.array([r["labeled"] for r in rows])
    kinds = sorted({k for r in rows for k in r.get("label_failures") or {}})
    fig = Figure(figsize=(10, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    ax.bar(its, added, color="#5577aa", label="added")
    ax2 = ax.twinx()
    ax2.plot(its, np.cumsum(added), "o-", color="k", label="total")
    ax.set_xlabel("iteration")
    ax.set_ylabel("labels added")
    ax2.set_ylabel("labels in total")
    ax.set_xticks(its)
    ax2.set_ylim(0, max(1, int(added.sum())) * 1.1)
    ax.set_title("labels", fontsize=10)
    bx = fig.add_subplot(1, 2, 2)
    bottom = np.zeros(len(its))
    for kind in kinds:
        counts = np.array([(r.get("label_failures") or {}).get(kind, 0) for r in rows])
        bx.bar(its, counts, bottom=bottom, label=kind)
        bottom += counts
    if not kinds:
        bx.text(0.5, 0.5, "no label failed", ha="center", va="center", transform=bx.transAxes)
    else:
        bx.legend(fontsize=8)
    bx.set_xticks(its)
    bx.set_xlim(ax.get_xlim())
    bx.set_xlabel("iteration")
    bx.set_ylabel("failed labels")
    bx.set_title("label failures by kind", fontsize=10)
    _save(fig, out, "labels.png")
    yield Picture("labels.png", "Labels", "Labels added per iteration (bars) and in total (line); "
                  "labeling failures by kind.")


def learning_curves(run: RunData, out: Path) -> Iterator[Picture]:
    if not run.curves:
        return
    wanted = [c for c in ("rmse_e_trn", "rmse_e_val", "rmse_f_trn", "rmse_f_val")
              if any(c in cv.columns for cv in run.curves)]
    if not wanted:
        return
    fig = Figure(figsize=(10, 3.6))
    for k, what in enumerate(("rmse_e", "rmse_f")):
        ax = fig.add_subplot(1, 2, k + 1)
        for cv in run.curves:
            for col in (f"{what}_trn", f"{what}_val"):
                if col in cv.columns and col in wanted:
                    y = cv.columns[col]
                    ok = np.isfinite(y) & (y > 0)
                    ax.plot(cv.columns["step"][ok], y[ok], "-" if col.endswith("trn") else "--",
                            label=f"model {cv.model} {col[-3:]}")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("energy RMSE (eV/atom)" if what == "rmse_e" else "force RMSE (eV/Å)")
        ax.legend(fontsize=7)
    fig.suptitle(f"learning curves of iteration {run.curves_iteration}", fontsize=11)
    _save(fig, out, "lcurve.png")
    yield Picture("lcurve.png", f"Learning curves (iteration {run.curves_iteration})",
                  "lcurve.out of every committee member: training (solid) and validation (dashed) RMSE.")


def validation(run: RunData, out: Path) -> Iterator[Picture]:
    rows = [r for r in run.status["iterations"] if (r.get("validation") or {}).get("mean")]
    if not rows:
        return
    its = [r["iteration"] for r in rows]
    fig = Figure(figsize=(10, 3.6))
    for k, (what, unit) in enumerate((("force", "eV/Å"), ("energy", "eV/atom"))):
        ax = fig.add_subplot(1, 2, k + 1)
        mean = [r["validation"]["mean"].get(what) for r in rows]
        if all(v is None for v in mean):
            continue
        n_models = max(len(r["validation"]["models"]) for r in rows)
        for m in range(n_models):
            ys = [(r["validation"]["models"][m].get(what) if m < len(r["validation"]["models"]) else None)
                  for r in rows]
            ax.plot(its, [np.nan if y is None else y for y in ys], ".", color="0.6",
                    label="each model" if m == 0 else None)
        ax.plot(its, [np.nan if y is None else y for y in mean], "o-", color="k", label="committee mean")
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{what} RMSE ({unit})")
        ax.set_xticks(its)
        ax.legend(fontsize=8)
    fig.suptitle(f"held-out validation ({rows[-1]['validation']['nframes']} frames)", fontsize=11)
    _save(fig, out, "validation.png")
    yield Picture("validation.png", "Validation", "RMSE of every committee member and of the committee "
                  "mean on the held-out set, after each iteration's training.")


def calibration(run: RunData, out: Path) -> Iterator[Picture]:
    rows = [r for r in run.status["iterations"] if (r.get("calibration") or {}).get("bins")]
    if not rows:
        return
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.add_subplot()
    top = 0.0
    for r in rows:
        b = r["calibration"]["bins"]
        x, y = [v["mean_devi"] for v in b], [v["mean_error"] for v in b]
        top = max(top, *x, *y)
        rho = r["calibration"].get("spearman")
        ax.plot(x, y, "o-", label=f"iteration {r['iteration']}" + (f" (rho {rho:.2f})" if rho is not None
                                                                   else ""))
    ax.plot([0, top * 1.1], [0, top * 1.1], ":", color="k", label="error = deviation")
    ax.set_xlabel("mean max force deviation (eV/Å)")
    ax.set_ylabel("mean true max force error (eV/Å)")
    ax.legend(fontsize=8)
    _save(fig, out, "calibration.png")
    yield Picture("calibration.png", "Deviation vs true error", "On each iteration's new labels: the "
                  "committee's max force deviation (binned) against its true max force error.")


def wall_time(run: RunData, out: Path) -> Iterator[Picture]:
    if not run.stage_seconds:
        return
    its = sorted(run.stage_seconds)
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.add_subplot()
    bottom = np.zeros(len(its))
    for stage in STAGES:
        secs = np.array([run.stage_seconds[i].get(stage, 0.0) for i in its]) / 60
        ax.bar(its, secs, bottom=bottom, label=stage)
        bottom += secs
    ax.set_xticks(its)
    ax.set_xlabel("iteration")
    kind = "wall time of make/run/post" if run.seconds_kind == "wall" else "summed task run time"
    ax.set_ylabel("minutes")
    ax.set_title(kind, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, out, "walltime.png")
    yield Picture("walltime.png", "Time per stage", f"Per iteration and stage: {kind}.")


ALL = (ratios, deviation_histograms, labels, validation, calibration, learning_curves, wall_time)
