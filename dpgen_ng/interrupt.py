"""SIGINT / SIGTERM: unwind cleanly, then one line saying where the run stopped.

The first signal raises :class:`Interrupted` in the main thread (a ``BaseException``, so no
``except Exception`` swallows it); files are written atomically and the ledger commits per
update, so unwinding leaves nothing half-written. A second signal while unwinding leaves at once.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):  # noqa: N818 - not an error: the user asked to stop
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.where = ""  # filled in by whoever knows where the run stood
        self.stopped: list[tuple[str, str]] = []  # (stage, job id) of local jobs stopped
        self.left: list[tuple[str, str, str]] = []  # (stage, job id, batch type) left running

    def line(self) -> str:
        """The one line a user sees."""
        where = f" in {self.where}" if self.where else ""
        return f"interrupted ({self.name}){where}: {jobs_line(self.left, self.stopped)}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _again(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write(f"interrupted again ({signal.Signals(signum).name}): leaving at once\n")
    os._exit(128 + signum)


def _first(signum: int, frame: FrameType | None) -> None:
    for s in SIGNALS:
        signal.signal(s, _again)
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`."""
    old = {s: signal.signal(s, _first) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def jobs_line(left: list[tuple[str, str, str]], stopped: list[tuple[str, str]]) -> str:
    """What happened to the jobs of an interrupted command: ``stopped`` were local Shell jobs
    (stage, job id); ``left`` still run under a scheduler or on a remote machine (stage, job id,
    batch type)."""
    parts = [f"stopped {len(ids)} local {stage} job(s) (Shell, PID {_ids(ids)})"
             for (stage, _), ids in _grouped([(s, j, "Shell") for s, j in stopped]).items()]
    parts += [f"{len(ids)} {stage} job(s) still running under {kind} (job ids {_ids(ids)})"
              for (stage, kind), ids in _grouped(left).items()]
    if not parts:
        return "no job was running; the same command resumes from there"
    then = (["runs their unfinished tasks again"] if stopped else []) + \
        (["re-attaches to " + ("the running ones" if stopped else "them")] if left else [])
    return "; ".join(parts) + "; the same command resumes and " + " and ".join(then)


def _grouped(jobs: list[tuple[str, str, str]]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for stage, job, kind in jobs:
        out.setdefault((stage, kind), []).append(job)
    return out


def _ids(ids: list[str]) -> str:
    return " ".join(ids[:8]) + (" …" if len(ids) > 8 else "")
