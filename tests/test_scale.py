"""Hundreds of tasks: a kill in the middle of a 500-task stage resumes without running anything twice.

The stage runs in a child process on dpdispatcher's real Shell batch + LocalContext (jobs of 25
tasks). The child kills itself (SIGKILL, ``DPGEN_NG_KILL_AT``) right after a job's id reached the
ledger and before dpdispatcher's recovery file was written, so the next run must take that job
id from the ledger; jobs a killed run started keep running, and the next run re-attaches to them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpgen_ng.ledger import Ledger

N_TASKS = 500
GROUP = 25

DRIVE = """
import json, sys
from pathlib import Path
from dpgen_ng.config.machine import parse_stage
from dpgen_ng.dispatch import Dispatcher, TaskSpec
from dpgen_ng.ledger import Ledger
from dpgen_ng.log import setup_logging

work = Path(sys.argv[1])
base = work / "fp"
setup_logging(work)
settings = parse_stage({
    "command": "bash",
    "machine": {"batch_type": "Shell", "context_type": "LocalContext", "local_root": "./",
                "remote_root": str(work / "remote"), "retry_count": 0},
    "resources": {"group_size": %(group)d, "para_deg": 1},
    "check_interval": 0.3,
}, "fp", "fp")
runs = work / "runs.log"
specs = [TaskSpec(f"task.{i:04d}", f"sleep 0.2; echo {i} >> {runs}; cat in.txt > out.txt",
                  ("in.txt",), ("out.txt",)) for i in range(%(n)d)]
with Ledger(work) as ledger:
    res = Dispatcher(work, settings, ledger).run(0, "fp", base, specs)
print(json.dumps([r.rc for r in res]))
"""


def _drive(work: Path, kill_at: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DPGEN_NG_KILL_AT"}
    if kill_at:
        env["DPGEN_NG_KILL_AT"] = kill_at
    code = DRIVE % {"group": GROUP, "n": N_TASKS}
    return subprocess.run([sys.executable, "-c", code, str(work)], env=env, capture_output=True,
                          text=True, timeout=600)


def _wait_for_a_finished_task(work: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((work / "remote").glob("*/task.*/dpgen_task.rc")):
            return
        time.sleep(0.1)
    raise AssertionError("no task of the killed run finished")


@pytest.mark.slow
def test_kill_mid_500_task_stage_resumes_without_running_a_task_twice(tmp_path):
    base = tmp_path / "fp"
    for i in range(N_TASKS):
        (base / f"task.{i:04d}").mkdir(parents=True)
        (base / f"task.{i:04d}" / "in.txt").write_text(f"{i}\n")
    # 1: killed right after the first job's id reached the ledger (no recovery file yet)
    first = _drive(tmp_path, "after-submit:1")
    assert first.returncode == -9, first.stderr
    # 2: takes that job id from the ledger, submits more jobs, is killed after the 10th of them
    second = _drive(tmp_path, "after-submit:10")
    assert second.returncode == -9, second.stderr
    log = (tmp_path / "dpgen.log").read_text()
    assert "1 job id(s) taken from the ledger" in log
    _wait_for_a_finished_task(tmp_path)
    # 3: re-attaches to the 11 running jobs, submits the other 9, harvests everything
    third = _drive(tmp_path, None)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout.splitlines()[-1]) == [0] * N_TASKS
    runs = (tmp_path / "runs.log").read_text().split()
    assert sorted(map(int, runs)) == list(range(N_TASKS))  # each task ran exactly once
    assert all((base / f"task.{i:04d}" / "out.txt").read_text() == f"{i}\n" for i in range(N_TASKS))
    with Ledger(tmp_path) as ledger:
        rows = ledger.tasks(0, "fp")
    assert len(rows) == N_TASKS and {r.state for r in rows} == {"finished"}
    assert {r.runs for r in rows} == {1}
    jobs = {r.job_id for r in rows}
    assert len(jobs) == N_TASKS // GROUP  # one submission per job: none was submitted again


def test_status_does_not_import_the_stages():
    """`dpgen status` must answer at once on a large run: it reads the record, the ledger and the
    JSON files the stages leave, without importing the engine (param parsing, dpdata, dispatch)."""
    code = ("import sys, dpgen_ng.status, dpgen_ng.cli; "
            "print([m for m in ('dpgen_ng.config.param', 'dpgen_ng.stages.context', 'dpdata', "
            "'dpdispatcher', 'deepmd') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
