"""Dispatch to real schedulers: a real Slurm and a real sshd on 127.0.0.1 (tests/infra), and
PBS / LSF through small emulators (tests/infra/fakesched.sh) — no PBS or LSF server can be
installed here, so their qsub/qstat/qdel and bsub/bjobs/bkill are stand-ins that really run the
job script in the background and print what dpdispatcher parses."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from dpgen_ng.config.machine import parse_stage
from dpgen_ng.dispatch import Dispatcher, TaskSpec
from dpgen_ng.dispatch.progress import Watch
from dpgen_ng.errors import StageError
from dpgen_ng.ledger import Ledger
from tests.conftest import EXAMPLE, INFRA, SCHED_DIR, write_json
from tests.test_e2e import NUMB_MODELS, calls, ended, record, setup_workdir

pytestmark = pytest.mark.cluster
VENV_BIN = Path(sys.executable).parent


def counting_sbatch(path: Path) -> Path:
    """A directory with an ``sbatch`` that logs each call and then runs the real one."""
    d = path / "bin"
    d.mkdir(parents=True, exist_ok=True)
    log = path / "sbatch.log"
    (d / "sbatch").write_text(f'#!/bin/bash\necho "$PWD $*" >> {log}\nexec /usr/bin/sbatch "$@"\n')
    (d / "sbatch").chmod(0o755)
    return d


def sbatch_calls(path: Path) -> int:
    log = path / "sbatch.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def remote_profile(sched: dict) -> dict:
    """SSH to the loopback sshd of tests/infra with its key."""
    return {"hostname": sched["SCHED_SSH_HOST"], "port": int(sched["SCHED_SSH_PORT"]),
            "username": sched["SCHED_SSH_USER"], "key_filename": sched["SCHED_SSH_KEY"],
            "look_for_keys": False, "timeout": 10}


def slurm_machine(work: Path, sched: dict, ssh: bool) -> dict:
    m = json.loads((EXAMPLE / ("machine-ssh-slurm.json" if ssh else "machine-slurm.json")).read_text())
    remote = f"{sched['SCHED_REMOTE_ROOT']}/{uuid.uuid4().hex}" if ssh else str(work / "remote")
    for stage in ("train", "model_devi", "fp"):
        sec = m[stage]
        sec["command"] = f"{work / 'counted'} " + {"train": str(VENV_BIN / "dp"),
                                                    "model_devi": str(VENV_BIN / "lmp"),
                                                    "fp": "xtb"}[stage]
        sec["machine"]["remote_root"] = remote
        sec["machine"]["retry_count"] = 1
        if ssh:
            sec["machine"]["remote_profile"] = remote_profile(sched)
        sec["resources"]["queue_name"] = sched["SCHED_SLURM_PARTITION"]
        sec["resources"]["source_list"] = [str(VENV_BIN / "activate")]
        sec["check_interval"] = 0.5
    m["fp"]["resources"]["group_size"] = 3
    return m


def one_job_param(work: Path) -> None:
    p = json.loads((work / "param.json").read_text())
    p["model_devi_jobs"] = p["model_devi_jobs"][:1]
    write_json(work / "param.json", p)


def n_jobs(n_tasks: int, group: int) -> int:
    return math.ceil(n_tasks / group) if n_tasks else 0


@pytest.mark.slow
def test_methane_on_slurm_killed_while_jobs_run_then_reattached(sched, tmp_path):
    work = setup_workdir(tmp_path / "w")
    one_job_param(work)
    write_json(work / "machine.json", slurm_machine(work, sched, ssh=False))
    env = dict(os.environ, PATH=f"{counting_sbatch(tmp_path)}:{os.environ['PATH']}")
    init = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "init_bulk", "init.json", "machine.json"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    after_init = sbatch_calls(tmp_path)
    assert after_init == n_jobs(21, 3)

    proc = subprocess.Popen([sys.executable, "-m", "dpgen_ng.cli", "run", "param.json", "machine.json"],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300

    def train_jobs_recorded() -> bool:
        if not (work / ".dpgen" / "ledger.sqlite").exists():
            return False
        with Ledger(work) as led:
            rows = led.tasks(iteration=0, stage="train")
        return len(rows) == NUMB_MODELS and all(r.job_id for r in rows)

    # kill dpgen once the training jobs are on Slurm (their ids recorded) and none has ended
    while not (train_jobs_recorded() and ended(work, "train") == 0):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    squeue = subprocess.run(["squeue", "-h", "-o", "%i %t"], capture_output=True, text=True).stdout
    assert len(squeue.split("\n")) >= 2  # the jobs outlive dpgen

    param = json.loads((work / "param.json").read_text())
    param["ratio_failed"] = 0.5  # an unrelated edit before the restart (dpgen#1678)
    write_json(work / "param.json", param)
    final = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "run", "param.json", "machine.json"],
                           cwd=work, env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert record(work)[-1] == "1 2"
    n_fp = len(json.loads((work / "iter.000000" / "02.fp" / "tasks.json").read_text())["tasks"])
    expected = after_init + NUMB_MODELS + n_jobs(2, 2) + n_jobs(n_fp, 3) + NUMB_MODELS
    assert sbatch_calls(tmp_path) == expected  # re-attached: no job submitted twice
    assert max(calls(work).values()) == 1  # no task ran twice
    with Ledger(work) as led:
        train = led.tasks(iteration=0, stage="train")
        assert len(train) == NUMB_MODELS
        assert all(t.job_id and t.state == "finished" and t.runs == 1 for t in train)


@pytest.mark.slow
def test_methane_over_ssh_on_slurm(sched, tmp_path):
    work = setup_workdir(tmp_path / "w")
    one_job_param(work)
    write_json(work / "machine.json", slurm_machine(work, sched, ssh=True))
    for cmd in (["init_bulk", "init.json", "machine.json"], ["run", "param.json", "machine.json"]):
        out = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", *cmd], cwd=work, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert record(work)[-1] == "1 2"
    labels = json.loads((work / "iter.000000" / "02.fp" / "labels.json").read_text())
    assert labels["labeled"] > 0 and labels["failed"] == 0
    assert (work / "iter.000001" / "00.train" / f"graph.{NUMB_MODELS - 1:03d}.pb").resolve().is_file()
    assert max(calls(work).values()) == 1


# ----- dispatcher-level cluster tests (tiny shell tasks) -------------------------------------


def shell_tasks(base: Path, bodies: list[str]) -> list[TaskSpec]:
    specs = []
    for i, body in enumerate(bodies):
        d = base / f"task.{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "in.txt").write_text(f"{i}\n")
        specs.append(TaskSpec(d.name, body, ("in.txt",), ("out.txt",), "log", "err"))
    return specs


def slurm_stage(tmp_path: Path, sched: dict, retry_count: int = 1, ssh: bool = False,
                batch: str = "Slurm"):
    machine = {"batch_type": batch, "context_type": "SSHContext" if ssh else "LocalContext",
               "remote_root": (f"{sched['SCHED_REMOTE_ROOT']}/{uuid.uuid4().hex}" if ssh
                               else str(tmp_path / "remote")), "retry_count": retry_count}
    if ssh:
        machine["remote_profile"] = remote_profile(sched)
    return parse_stage({"command": "bash", "machine": machine,
                        "resources": {"queue_name": sched.get("SCHED_SLURM_PARTITION", ""), "group_size": 1},
                        "check_interval": 0.3}, "fp", "fp")


def test_scancelled_job_is_retried_and_a_failing_task_is_reported(sched, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{counting_sbatch(tmp_path)}:{os.environ['PATH']}")
    base = tmp_path / "stage"
    specs = shell_tasks(base, ["sleep 4; echo ok > out.txt", "echo ok > out.txt",
                               "echo bad-input >&2; exit 7"])
    st = slurm_stage(tmp_path, sched, retry_count=1)
    cancelled = []

    def cancel_first_job() -> None:
        with Ledger(tmp_path) as led:
            for _ in range(200):
                row = next((r for r in led.tasks() if r.path.endswith("task.000") and r.job_id), None)
                if row is not None:
                    time.sleep(1.0)
                    subprocess.run(["scancel", row.job_id], check=True)
                    cancelled.append(row.job_id)
                    return
                time.sleep(0.1)

    killer = threading.Thread(target=cancel_first_job)
    killer.start()
    with Ledger(tmp_path) as led:
        res = Dispatcher(tmp_path, st, led).run(0, "fp", base, specs, allow_failures=True)
        killer.join()
        assert cancelled
        assert [r.rc for r in res] == [0, 0, 7]
        assert (base / "task.000" / "out.txt").read_text() == "ok\n"
        assert "bad-input" in (base / "task.002" / "err").read_text()
        # 3 jobs + the cancelled one again + the failing one again (retry_count 1)
        assert sbatch_calls(tmp_path) == 5
        assert led.get(res[0].task_id).job_id != cancelled[0]  # the ledger has the new job id
        assert led.get(res[2].task_id).state == "failed"
    # when the stage needs every task, the failure stops it with dir, exit code and stderr
    base2 = tmp_path / "stage2"
    specs2 = shell_tasks(base2, ["echo ok > out.txt", "echo broken-model >&2; exit 3"])
    with Ledger(tmp_path) as led, pytest.raises(StageError) as info:
        Dispatcher(tmp_path, slurm_stage(tmp_path, sched, retry_count=0), led).run(0, "train", base2, specs2)
    msg = str(info.value)
    assert str(base2 / "task.001") in msg and "exit code 3" in msg and "broken-model" in msg


def test_ratio_unfinished_gives_up_on_stragglers(sched, tmp_path):
    base = tmp_path / "stage"
    specs = shell_tasks(base, ["echo ok > out.txt"] * 3 + ["sleep 300; echo late > out.txt"])
    st = slurm_stage(tmp_path, sched)
    st = dataclasses.replace(st, resources={**st.resources, "strategy": {"ratio_unfinished": 0.25}})
    t0 = time.monotonic()
    with Ledger(tmp_path) as led:
        res = Dispatcher(tmp_path, st, led).run(0, "fp", base, specs, allow_failures=True)
    assert time.monotonic() - t0 < 120
    assert [r.rc for r in res[:3]] == [0, 0, 0] and res[3].rc is None
    assert "ratio_unfinished" in (res[3].reason or "")


def _sshd_pids() -> tuple[int, list[int]]:
    master = int((SCHED_DIR / "ssh" / "sshd.pid").read_text())
    children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return master, [int(c) for c in children]


def test_sshd_restart_while_polling(sched, tmp_path):
    base = tmp_path / "stage"
    specs = shell_tasks(base, ["sleep 6; echo ok > out.txt", "sleep 6; echo ok > out.txt"])
    st = slurm_stage(tmp_path, sched, ssh=True)
    restarted: list[bool] = []
    errors: list[str] = []  # an exception in the thread would otherwise be lost

    def restart_sshd() -> None:
        try:
            with Ledger(tmp_path) as led:  # wait until both jobs are submitted: dpgen is polling
                while sum(1 for r in led.tasks() if r.job_id) < 2:
                    time.sleep(0.1)
            master, children = _sshd_pids()
            for pid in [*children, master]:
                os.kill(pid, signal.SIGTERM)
            time.sleep(2.0)
            deadline = time.time() + 20  # the old sshd may hold the port a moment longer
            config = str(SCHED_DIR / "ssh" / "sshd_config")
            while True:
                up = subprocess.run(["setsid", "/usr/sbin/sshd", "-f", config], capture_output=True,
                                    text=True)
                if up.returncode == 0:
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"sshd did not start again: {up.stderr.strip()}")
                time.sleep(0.5)
            restarted.append(True)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))

    thread = threading.Thread(target=restart_sshd)
    thread.start()
    try:
        with Ledger(tmp_path) as led:
            res = Dispatcher(tmp_path, st, led).run(0, "fp", base, specs)
    finally:
        thread.join()
        # the rest of the suite (and the down script) must find the new sshd by its pid
        new_master = int((SCHED_DIR / "ssh" / "sshd.pid").read_text())
        pids = (SCHED_DIR / "pids").read_text().splitlines()
        (SCHED_DIR / "pids").write_text("\n".join(f"sshd {new_master}" if p.startswith("sshd ") else p
                                                  for p in pids) + "\n")
    assert not errors, errors
    assert restarted and [r.rc for r in res] == [0, 0]
    assert (base / "task.001" / "out.txt").read_text() == "ok\n"


@pytest.mark.parametrize("flavor", ["pbs", "lsf"])
def test_pbs_and_lsf_through_emulators(flavor, tmp_path, monkeypatch):
    """PBS/LSF cannot be installed here: qsub/qstat/qdel and bsub/bjobs/bkill are emulated by
    tests/infra/fakesched.sh, which really runs each job script."""
    fake = tmp_path / "fake" / flavor
    fake.mkdir(parents=True)
    for cmd in {"pbs": ("qsub", "qstat", "qdel"), "lsf": ("bsub", "bjobs", "bkill")}[flavor]:
        (fake / cmd).symlink_to(INFRA / "fakesched.sh")
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKESCHED_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("FAKESCHED_DELAY", "1")
    batch = {"pbs": "PBS", "lsf": "LSF"}[flavor]
    st = slurm_stage(tmp_path, {}, retry_count=1, batch=batch)
    base = tmp_path / "stage"
    specs = shell_tasks(base, ["echo ok-$(cat in.txt) > out.txt", "echo ok-$(cat in.txt) > out.txt",
                               "echo nope >&2; exit 5"])
    with Ledger(tmp_path) as led:
        res = Dispatcher(tmp_path, st, led).run(0, "fp", base, specs, allow_failures=True)
        assert [r.rc for r in res] == [0, 0, 5]
        assert (base / "task.001" / "out.txt").read_text() == "ok-1\n"
        assert all(led.get(r.task_id).job_id for r in res)
    submitted = len([d for d in (tmp_path / "state" / flavor).iterdir() if d.name.isdigit()])
    assert submitted == 4  # three jobs, and the failing one once more (retry_count 1)


def test_progress_reads_the_remote_tail_over_ssh(sched, tmp_path, monkeypatch, caplog):
    """The step in a running task's lcurve.out on the cluster side reaches the progress line
    (over the SSH context's SFTP channel). The task only ends once that line was logged: it waits
    for a file the log handler writes into its remote directory."""
    import logging

    monkeypatch.setenv("DPGEN_PROGRESS_SECONDS", "0.5")
    base = tmp_path / "stage"
    body = ('echo "7 0.1" > lcurve.out; i=0; while [ ! -f go ] && [ $i -lt 600 ]; do sleep 0.1; '
            'i=$((i + 1)); done; if [ -f go ]; then echo released; else echo timeout; fi > out.txt')
    specs = [dataclasses.replace(s, watch=Watch("lcurve.out", 10)) for s in shell_tasks(base, [body])]
    st = slurm_stage(tmp_path, sched, ssh=True)
    remote = Path(st.machine["remote_root"])
    seen: list[str] = []

    class Release(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "steps 7/10" in record.getMessage() and not seen:
                seen.append(record.getMessage())
                for task in remote.glob("*/task.000"):
                    (task / "go").write_text("")

    handler = Release()
    logging.getLogger("dpgen_ng.progress").addHandler(handler)
    caplog.set_level(logging.INFO, logger="dpgen_ng.progress")
    try:
        with Ledger(tmp_path) as led:
            res = Dispatcher(tmp_path, st, led).run(0, "train", base, specs)
    finally:
        logging.getLogger("dpgen_ng.progress").removeHandler(handler)
    assert [r.rc for r in res] == [0]
    assert seen and seen[0].startswith("train: 0/1 task(s) done, 1 running (steps 7/10)"), seen
    assert (base / "task.000" / "out.txt").read_text() == "released\n"  # not the task's own limit
