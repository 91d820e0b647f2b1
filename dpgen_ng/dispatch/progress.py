"""Live progress while a stage's jobs run: tasks done / total and, read from the tails of the
files the engines already write, how far each running task is (training step, MD step).

A terminal gets a bar (rich); anything else (CI, nohup, a batch job) a plain log line at most
every ``DPGEN_PROGRESS_SECONDS`` (30 s). Tails are read only when something is shown, from the
directory the job runs in: locally, or over the SSH context's open SFTP channel (a few hundred
bytes per task, at most :data:`MAX_TAILS` tasks a time); other contexts show task counts only.
"""

from __future__ import annotations

import logging
import os
import posixpath
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("dpgen_ng.progress")

TAIL_BYTES = 512
MAX_TAILS = 32  # running tasks whose files are read per update; the rest count as their mean
DEFAULT_SECONDS = 30.0


@dataclass(frozen=True)
class Watch:
    """A file a running task appends to, whose last line starts with the step reached
    (``lcurve.out`` of ``dp train``, ``model_devi.out`` of LAMMPS), and the last step."""

    file: str
    total: int


def last_step(text: str) -> int | None:
    """The first number of the last complete data line (comment lines start with '#')."""
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines = lines[:-1]  # still being written
    for line in reversed(lines):
        words = line.split()
        if words and not words[0].startswith("#"):
            try:
                return int(float(words[0]))
            except ValueError:
                return None
    return None


def read_tail(context: Any, work_base: Path, task_path: str, name: str) -> str | None:
    """The last bytes of a file in a running task's directory, or None where that is not cheap."""
    kind = type(context).__name__
    try:
        if kind == "LocalContext":
            return _tail_local(Path(context.remote_root) / task_path / name)
        if kind == "LazyLocalContext":
            return _tail_local(Path(work_base) / task_path / name)
        if kind == "SSHContext":
            with context.sftp.open(posixpath.join(context.remote_root, task_path, name), "rb") as fh:
                size = fh.stat().st_size
                fh.seek(max(0, size - TAIL_BYTES))
                return fh.read(TAIL_BYTES).decode(errors="replace")
    except (OSError, EOFError, AttributeError):
        return None
    return None


def _tail_local(path: Path) -> str | None:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - TAIL_BYTES))
        return fh.read().decode(errors="replace")


@dataclass(frozen=True)
class Running:
    """A task of a job that has not ended: where its files are and what to watch."""

    context: Any
    work_base: Path
    path: str
    watch: Watch | None


class Meter:
    """Shows one stage's progress; ``update`` is called after every poll of the scheduler."""

    def __init__(self, stage: str, total: int, done: int, stream: Any = None) -> None:
        self.stage, self.total, self.done0 = stage, total, done
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = float(os.environ.get("DPGEN_PROGRESS_SECONDS", DEFAULT_SECONDS))
        self.t0 = time.monotonic()
        self.last_shown = self.t0
        self.f0 = done / total if total else 1.0  # what was done before this process waited
        self._bar: Any = None
        self._task: Any = None

    def _fractions(self, running: list[Running]) -> list[tuple[int, int]]:
        """(step, total) of up to MAX_TAILS watched running tasks."""
        out = []
        for r in running[:MAX_TAILS]:
            if r.watch is None:
                continue
            text = read_tail(r.context, r.work_base, r.path, r.watch.file)
            step = last_step(text) if text else None
            out.append((min(step or 0, r.watch.total), r.watch.total))
        return out

    def update(self, done: int, running: Iterable[Running]) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last_shown < self.every:
            return
        self.last_shown = now
        running = list(running)
        steps = self._fractions(running)
        partial = sum(s / t for s, t in steps if t) / len(steps) * len(running) if steps else 0.0
        frac = (done + partial) / self.total if self.total else 1.0
        eta = ""
        if frac > self.f0 and now > self.t0:
            left = int((now - self.t0) * (1 - frac) / (frac - self.f0))
            eta = f" · ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        shown = ", ".join(f"{s}/{t}" for s, t in steps[:6]) + (" …" if len(steps) > 6 else "")
        what = "steps" if steps else ""
        text = (f"{self.stage}: {done}/{self.total} task(s) done, {len(running)} running"
                + (f" ({what} {shown})" if what else "") + f", {100 * frac:.0f} %{eta}")
        if self.tty:
            self._draw(done + partial, text)
        else:
            log.info("%s", text)

    def _draw(self, completed: float, text: str) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._bar = Progress(BarColumn(bar_width=30), TextColumn("{task.description}"),
                                 console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.stage, total=self.total)
        self._bar.update(self._task, completed=completed, description=text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
