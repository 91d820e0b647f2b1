"""What the report plots, read from a work dir: the status rows, the deviation tables, the
learning curves and the wall time of every step (nothing here draws)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.ledger import LEDGER_PATH, Ledger
from dpgen_ng.record import STAGE_DIRS, iter_name
from dpgen_ng.stages.model_devi import DEVI_TABLE
from dpgen_ng.status import collect_status

STAGES = ("train", "model_devi", "fp")


@dataclass(frozen=True)
class Curve:
    """One committee member's lcurve.out: a column of numbers per header name."""

    model: str
    columns: dict[str, np.ndarray]


@dataclass(frozen=True)
class RunData:
    status: dict[str, Any]
    devi: dict[int, dict[str, np.ndarray]]  # iteration -> system tag -> max force deviations
    curves_iteration: int | None
    curves: tuple[Curve, ...]
    stage_seconds: dict[int, dict[str, float]]  # iteration -> stage -> wall seconds
    seconds_kind: str  # "wall" (step times) or "task" (summed task run times of old runs)


def read_lcurve(path: Path) -> dict[str, np.ndarray]:
    """lcurve.out's columns by name (the header line starting with '# step')."""
    names: list[str] = []
    rows: list[list[float]] = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            words = line[1:].split()
            if words and words[0] == "step":
                names = words
            continue
        try:
            rows.append([float(x) for x in line.split()])
        except ValueError:
            continue
    if not names or not rows:
        return {}
    width = min(len(names), min(len(r) for r in rows))
    table = np.array([r[:width] for r in rows])
    return {names[i]: table[:, i] for i in range(width)}


def _devi(workdir: Path, it: int) -> dict[str, np.ndarray]:
    path = workdir / iter_name(it) / STAGE_DIRS[1] / DEVI_TABLE
    if not path.is_file():
        return {}
    with np.load(path) as t:
        sys_idx, devi = t["sys_idx"], t["max_devi_f"]
    return {f"{s:03d}": devi[sys_idx == s] for s in np.unique(sys_idx)}


def _curves(workdir: Path, iterations: list[int]) -> tuple[int | None, tuple[Curve, ...]]:
    """The learning curves of the last iteration whose models have one."""
    for it in reversed(iterations):
        train = workdir / iter_name(it) / STAGE_DIRS[0]
        found = sorted(train.glob("[0-9][0-9][0-9]/lcurve.out"))
        curves = tuple(Curve(p.parent.name, cols) for p in found if (cols := read_lcurve(p)))
        if curves:
            return it, curves
    return None, ()


def _seconds(workdir: Path) -> tuple[dict[int, dict[str, float]], str]:
    out: dict[int, dict[str, float]] = defaultdict(lambda: dict.fromkeys(STAGES, 0.0))
    if not (workdir / LEDGER_PATH).is_file():
        return {}, "wall"
    with Ledger(workdir) as ledger:
        times = ledger.step_times()
        if times:
            for (it, step), secs in times.items():
                out[it][STAGES[step // 3]] += secs
            return dict(out), "wall"
        for row in ledger.tasks():  # runs from before step times were kept
            if row.seconds is not None and row.stage in STAGES:
                out[row.iteration][row.stage] += row.seconds
    return dict(out), "task"


def collect(workdir: Path) -> RunData:
    workdir = Path(workdir)
    status = collect_status(workdir)
    iterations = [r["iteration"] for r in status["iterations"]]
    it, curves = _curves(workdir, iterations)
    seconds, kind = _seconds(workdir)
    return RunData(status, {i: d for i in iterations if (d := _devi(workdir, i))}, it, curves, seconds,
                   kind)

