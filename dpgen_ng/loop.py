"""The iteration loop: read record.dpgen, run the next step, append the record, repeat."""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable
from pathlib import Path

from dpgen_ng import failpoint
from dpgen_ng.config.machine import MachineSettings
from dpgen_ng.config.param import RunParams
from dpgen_ng.converge.schedule import StopReason, after_iteration, exhausted, next_slot
from dpgen_ng.errors import UserError
from dpgen_ng.interrupt import Interrupted
from dpgen_ng.ledger import Ledger
from dpgen_ng.record import STEPS, append_record, iter_name, next_step, read_record
from dpgen_ng.stages import fp, model_devi, train
from dpgen_ng.stages.context import IterContext
from dpgen_ng.summary import read_summary

log = logging.getLogger("dpgen_ng.loop")

STEP_FUNCS: tuple[Callable[[IterContext], None], ...] = (
    train.make, train.run, train.post,
    model_devi.make, model_devi.run, model_devi.post,
    fp.make, fp.run, fp.post,
)
assert len(STEP_FUNCS) == len(STEPS)


class WorkdirLock:
    """One ``dpgen run`` (or ``dpgen test``) per work dir at a time (an advisory lock, released if
    the process dies). The two commands have separate locks: a model can be tested while the run
    goes on."""

    def __init__(self, workdir: Path, command: str = "run") -> None:
        self.command = command
        self.path = Path(workdir) / ".dpgen" / ("lock" if command == "run" else f"{command}.lock")

    def __enter__(self) -> WorkdirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "w")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise UserError(f"another dpgen {self.command} is working in this directory",
                            str(self.path.parent.parent), "wait for it to finish or stop it") from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def _stop_before(workdir: Path, params: RunParams, it: int, step: int) -> StopReason | None:
    """Whether the run ends before step ``step`` of iteration ``it``: after an iteration's post_fp
    (converged, or a job at max_iter with fatal_at_max), or when no job is left to explore."""
    prev = read_summary(workdir, it - 1) if it > 0 else None
    if step == 0 and prev is not None:
        return after_iteration(params, prev)
    if step == 3 and next_slot(params, prev, it) is None:
        return exhausted(params, prev, it)
    return None


def _set_stop(ledger: Ledger, kind: str, text: str) -> None:
    ledger.meta_set("stop_kind", kind)
    ledger.meta_set("stop_reason", text)


def run_loop(workdir: Path, params: RunParams, machines: MachineSettings) -> StopReason:
    """Run steps until the run converges or the jobs run out. Returns why it stopped."""
    workdir = Path(workdir).resolve()
    with WorkdirLock(workdir), Ledger(workdir) as ledger:
        ledger.meta_set("n_jobs", str(len(params.model_devi_jobs)))
        _set_stop(ledger, "running", "running")
        last = read_record(workdir)
        if last != (0, -1):
            log.info("resuming after iteration %d step %d (%s)", last[0], last[1], STEPS[last[1]])
        while True:
            it, step = next_step(last)
            stop = _stop_before(workdir, params, it, step)
            if stop is not None:
                _set_stop(ledger, stop.kind, stop.text)
                (log.info if stop.exit_code == 0 else log.error)(stop.text)
                return stop
            ctx = IterContext(workdir, it, params, machines, ledger)
            t0, wall0 = time.monotonic(), time.time()
            log.info("%s %d %s", iter_name(it), step, STEPS[step])
            try:
                STEP_FUNCS[step](ctx)
            except Interrupted as exc:
                exc.where = f"{iter_name(it)} step {step} ({STEPS[step]})"
                _set_stop(ledger, "interrupted", f"interrupted ({exc.name}) in {exc.where}")
                raise
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                _set_stop(ledger, "error", f"stopped in {iter_name(it)} step {step} ({STEPS[step]}): {first}")
                raise
            failpoint.reach(f"before-record:{it}:{step}")
            append_record(workdir, it, step)
            ledger.step_done(it, step, wall0, time.time())
            log.debug("%s %s took %.1f s", iter_name(it), STEPS[step], time.monotonic() - t0)
            last = (it, step)
