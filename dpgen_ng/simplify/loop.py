"""The simplify loop: DP-GEN's nine steps per iteration, ``record.dpgen`` for resume, and the stop.

The run stops (exit code 0) when nothing is left to pick: an iteration finds no candidate, or
every frame is picked or accurate (then the next iteration still trains the committee on all the
picks, as DP-GEN does), or ``stop_iter`` is reached (that iteration trains the last committee).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpgen_ng.config.machine import MachineSettings
from dpgen_ng.config.simplify import NO_FP, SimplifyParams, resolve
from dpgen_ng.data import expand_systems
from dpgen_ng.errors import UserError
from dpgen_ng.interrupt import Interrupted
from dpgen_ng.ledger import Ledger
from dpgen_ng.loop import WorkdirLock
from dpgen_ng.record import RECORD_NAME, STEPS, append_record, iter_name, next_step, read_record
from dpgen_ng.simplify import devi, label, train
from dpgen_ng.simplify.context import FINAL_DATA, FRAMES, SUMMARY, SimplifyContext, write_json
from dpgen_ng.simplify.dataset import system_paths
from dpgen_ng.train.gate import check_sel

log = logging.getLogger("dpgen_ng.simplify")

STEP_FUNCS: tuple[Callable[[SimplifyContext], None], ...] = (
    train.make, train.run, train.post,
    devi.make, devi.run, devi.post,
    label.make, label.run, label.post,
)
assert len(STEP_FUNCS) == len(STEPS)


@dataclass(frozen=True)
class Stop:
    kind: str  # converged | stop_iter | error
    text: str
    models: int | None = None  # the iteration whose committee is the last one (None: none trained)
    exit_code: int = 0


def _frames(workdir: Path, it: int) -> dict[str, Any]:
    return json.loads((workdir / iter_name(it) / "01.model_devi" / FRAMES).read_text())


def stop_before(workdir: Path, params: SimplifyParams, it: int, step: int) -> Stop | None:
    """Whether the run ends before step ``step`` of iteration ``it`` (read from disk: a resumed run
    stops where the first one did)."""
    if it == 0:
        return None
    if step == 3:
        if params.stop_iter is not None and it >= params.stop_iter:
            return Stop("stop_iter", f"stop_iter {params.stop_iter} reached: {iter_name(it)} trained the "
                                     "last committee", it)
        if not _frames(workdir, it - 1)["rest"]:
            return Stop("converged", f"converged: no frame left to examine after {iter_name(it - 1)} "
                                     f"(every frame is picked or accurate); {iter_name(it)} trained the "
                                     "last committee on all the picks", it)
    if step == 6 and _frames(workdir, it)["counts"]["candidate"] == 0:
        return Stop("converged", f"converged: no candidate in {iter_name(it)} (every frame left is "
                                 "below the lower trust levels)", it)
    return None


def iteration_rows(workdir: Path) -> list[dict[str, Any]]:
    """One row per iteration that has picked: its counts and the frames picked in all so far."""
    rows, total, it = [], 0, 0
    while (workdir / iter_name(it) / "01.model_devi" / FRAMES).is_file():
        counts = _frames(workdir, it)["counts"]
        total += counts["picked"]
        rows.append({"iteration": it, **counts, "picked_total": total})
        it += 1
    return rows


def write_summary(workdir: Path, params: SimplifyParams, stop: Stop | None) -> None:
    """``simplify.json``: per iteration counts, why the run stopped, where the results are."""
    out: dict[str, Any] = {"kind": "simplify", "iterations": iteration_rows(workdir),
                           "stop": None if stop is None else {"kind": stop.kind, "reason": stop.text},
                           "data": FINAL_DATA}
    if stop is not None and stop.models is not None:
        out["models"] = [str(g.relative_to(workdir)) for g in train.graph_paths(workdir, params, stop.models)]
    write_json(workdir / SUMMARY, out)


def _check_workdir(workdir: Path) -> None:
    if (workdir / RECORD_NAME).exists() and not (workdir / SUMMARY).exists():
        raise UserError("this work dir holds a `dpgen run` (record.dpgen without simplify.json)",
                        str(workdir), "a new work dir for dpgen simplify")


def preflight(workdir: Path, params: SimplifyParams) -> None:
    """Before anything is written: ``sel`` against the neighbour counts of the data."""
    data = system_paths(workdir, params)
    for entry in params.init_data_sys:
        data += expand_systems(resolve(workdir, entry, params.init_data_prefix))
    check_sel(params.default_training_param, params.type_map, data, [])


def check_machine(machines: MachineSettings) -> None:
    """The model deviation is DeePMD-kit's ``dp model-devi`` (as in DP-GEN's simplify), not LAMMPS."""
    words = machines["model_devi"].command.split()
    prog = Path(words[0]).name if words else ""
    if prog.startswith("lmp") or prog == "lammps":
        raise UserError(f"model_devi.command is '{machines['model_devi'].command}', but dpgen simplify runs "
                        "'<command> model-devi'", "model_devi.command",
                        "DeePMD-kit's dp, e.g. \"dp\" (see examples/methane/machine-simplify.json)")


def _notes(params: SimplifyParams) -> None:
    for key in params.no_effect:
        log.info("note: %s has no effect in dpgen simplify (nor in DP-GEN's)", key)
    if params.labeled and params.fp_style != NO_FP:
        log.info("note: labeled is true: fp_style %s is not used", params.fp_style)


def _step(ctx: SimplifyContext, step: int) -> None:
    log.info("%s %d %s", iter_name(ctx.iteration), step, STEPS[step])
    wall0 = time.time()
    try:
        STEP_FUNCS[step](ctx)
    except Interrupted as exc:
        exc.where = f"{iter_name(ctx.iteration)} step {step} ({STEPS[step]})"
        raise
    append_record(ctx.workdir, ctx.iteration, step)
    ctx.ledger.step_done(ctx.iteration, step, wall0, time.time())


def run_simplify(params: SimplifyParams, workdir: Path, machines: MachineSettings) -> int:
    """Run (or resume) ``dpgen simplify`` in ``workdir``; returns the exit code (0: stopped as
    planned). A stage that cannot complete raises :class:`StageError` (state kept for a rerun)."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    _check_workdir(workdir)
    check_machine(machines)
    _notes(params)
    with WorkdirLock(workdir, "simplify"), Ledger(workdir) as ledger:
        last = read_record(workdir)
        if last == (0, -1):
            preflight(workdir, params)
            write_summary(workdir, params, None)
        else:
            log.info("resuming after %s step %d (%s)", iter_name(last[0]), last[1], STEPS[last[1]])
        while True:
            it, step = next_step(last)
            stop = stop_before(workdir, params, it, step)
            if stop is not None:
                write_summary(workdir, params, stop)
                n = sum(r["picked"] for r in iteration_rows(workdir))
                log.info("%s; %d frame(s) picked in all: %s", stop.text, n, workdir / FINAL_DATA)
                return stop.exit_code
            try:
                _step(SimplifyContext(workdir, it, params, machines, ledger), step)
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                write_summary(workdir, params, Stop("error", f"stopped in {iter_name(it)} step {step} "
                                                             f"({STEPS[step]}): {first}"))
                raise
            if step in (5, 8):
                write_summary(workdir, params, None)
            last = (it, step)
