"""Stop the local Shell jobs of an interrupted run: each job's whole process tree.

dpdispatcher's Shell batch starts a job as a background ``bash`` (its job id is that PID) whose
children are the engines; they ignore the terminal's SIGINT, and killing the ``bash`` alone
leaves them running. Here every process below the job is found in /proc and sent SIGTERM,
then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

GRACE_SECONDS = 5.0


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) "
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return kids


def process_tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited already
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _is_job(pid: int) -> bool:
    """Whether the PID is (still) a Shell job: ``bash <job hash>.sub``, not a reused PID."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a.endswith(b".sub") for a in args) and _alive(pid)


def stop_jobs(job_ids: list[str]) -> list[str]:
    """SIGTERM every process of each job (job id = PID of its bash), SIGKILL what is left after
    :data:`GRACE_SECONDS`. Returns the job ids that were running."""
    kids = _children()
    trees = {j: process_tree(int(j), kids) for j in job_ids if j.isdigit() and _is_job(int(j))}
    pids = [p for tree in trees.values() for p in tree]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + GRACE_SECONDS
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
    return list(trees)
