"""End to end on the real engines (dp, lmp, xtb): init_bulk, then 2 iterations of `dpgen run`.

Every engine call goes through a small wrapper (in the machine file's ``command``) that logs a
hash of the task's inputs and its arguments, so the tests can count how often each task ran. The
wrapper can also hold calls of one program back (a ``hold`` file), so that a kill lands at a chosen
point instead of in a race with engines that finish within milliseconds of each other.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLE, load_example, write_json

pytestmark = [pytest.mark.slow, pytest.mark.engine]

WRAPPER = """#!/bin/bash
hold="{hold}"
if [ -f "$hold" ]; then  # "PROGRAM N": calls of PROGRAM after the N-th wait until that hold is lifted
  held=$(cat "$hold")
  read -r prog limit <<< "$held"
  if [[ " $* " == *" $prog "* ]]; then
    n=$( {{ flock 9; echo x >> "$hold.claims"; wc -l < "$hold.claims"; }} 9> "$hold.lock" )
    if [ "$n" -gt "$limit" ]; then
      while [ "$(cat "$hold" 2>/dev/null)" == "$held" ]; do sleep 0.1; done  # gone, or another hold
    fi
  fi
fi
h=$(cat input.json input.lammps conf.lmp conf.xyz 2>/dev/null | md5sum | cut -c1-16)
echo "start $h $*" >> {log}
"$@"; rc=$?
echo "end $h $*" >> {log}
exit $rc
"""


def tiny_param() -> dict:
    p = load_example("param-dpgen.json")
    p["sys_configs"] = [["CH4.POSCAR.01x01x01/01.scale_pert/sys-0004-0001/scale-1.000/00000[1-2]/POSCAR"]]
    p["default_training_param"]["training"].update(numb_steps=100, disp_freq=50, save_freq=100)
    p["model_devi_jobs"] = [
        {"sys_idx": [0], "temps": [300], "trj_freq": 10, "nsteps": 300, "ensemble": "nvt"},
        {"sys_idx": [0], "temps": [600], "trj_freq": 10, "nsteps": 300, "ensemble": "nvt"},
    ]
    p["model_devi_f_trust_lo"] = 0.02
    p["model_devi_f_trust_hi"] = 5.0
    p["fp_task_max"] = 8
    p["fp_accurate_soft_threshold"] = 1.0
    p["fp_accurate_threshold"] = 1.0
    return p


def tiny_init() -> dict:
    i = load_example("init.json")
    i["pert_numb"] = 20
    return i


def setup_workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "CH4.POSCAR", path)
    log = path / "calls.log"
    wrapper = path / "counted"
    wrapper.write_text(WRAPPER.format(log=log, hold=path / "hold"))
    wrapper.chmod(0o755)
    m = load_example("machine.json")
    for stage in ("train", "model_devi", "fp"):
        m[stage]["command"] = f"{wrapper} {m[stage]['command']}"
        m[stage]["check_interval"] = 0.2
        m[stage]["machine"]["remote_root"] = str(path / "remote")
    write_json(path / "machine.json", m)
    write_json(path / "param.json", tiny_param())
    write_json(path / "init.json", tiny_init())
    return path


def dpgen(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dpgen_ng.cli", *args], cwd=cwd, capture_output=True,
                          text=True, **kw)


def calls(workdir: Path) -> collections.Counter:
    """How often each (task inputs, arguments) pair *started*."""
    log = workdir / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return collections.Counter(ln.split(" ", 1)[1] for ln in lines if ln.startswith("start "))


def ended(workdir: Path, program: str) -> int:
    log = workdir / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(1 for ln in lines if ln.startswith("end ") and f" {program} " in ln)


def record(workdir: Path) -> list[str]:
    path = workdir / "record.dpgen"
    return path.read_text().split("\n")[:-1] if path.exists() else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run."""
    work = setup_workdir(tmp_path_factory.mktemp("reference"))
    init = dpgen("init_bulk", "init.json", "machine.json", cwd=work)
    assert init.returncode == 0, init.stderr
    run = dpgen("run", "param.json", "machine.json", cwd=work)
    assert run.returncode == 0, run.stdout + run.stderr
    (work / "run.out").write_text(run.stdout + run.stderr)
    return work


def test_layout_record_and_status(reference):
    w = reference
    steps = [f"{i} {s}" for i in range(2) for s in range(9)] + ["2 0", "2 1", "2 2"]
    assert record(w) == steps
    data = w / "CH4.POSCAR.01x01x01" / "02.md" / "sys-0004-0001" / "deepmd"
    assert (data / "type_map.raw").read_text().split() == ["H", "C"]
    assert np.load(data / "set.000" / "energy.npy").shape[0] == 21
    for it in range(3):
        train = w / f"iter.{it:06d}" / "00.train"
        for k in range(4):
            assert (train / f"{k:03d}" / "frozen_model.pb").is_file()
            model = (train / f"{k:03d}" / "frozen_model.pb").resolve()
            assert (train / f"graph.{k:03d}.pb").resolve() == model
        seeds = {json.loads((train / f"{k:03d}" / "input.json").read_text())["training"]["seed"]
                 for k in range(4)}
        assert len(seeds) == 4  # four distinct models
    systems = json.loads((w / "iter.000002" / "00.train" / "tasks.json").read_text())["systems"]
    assert systems[0].startswith("../data.init/")
    assert {s.split("/")[2][:11] for s in systems[1:]} == {"iter.000000", "iter.000001"}
    for it in range(2):
        md = w / f"iter.{it:06d}" / "01.model_devi"
        for t in range(2):
            devi = (md / f"task.000.{t:06d}" / "model_devi.out").read_text().splitlines()
            assert devi[0].startswith("#") and len(devi) == 1 + 31  # every trj_freq steps, 0..300
        fp = w / f"iter.{it:06d}" / "02.fp"
        sel = json.loads((fp / "selection.json").read_text())["systems"]["000"]
        assert sel["total"] == 62
        assert sel["accurate"] + sel["candidate"] + sel["failed"] == 62
        labels = json.loads((fp / "labels.json").read_text())
        assert labels["labeled"] == len(sel["picked"]) > 0
        assert (fp / "task.000.000000" / "conf.engrad").is_file()
        assert (fp / "data.000").is_dir()
    status = dpgen("status", str(w), cwd=w)
    assert status.returncode == 0
    assert "status: finished: all 2 model_devi_jobs explored" in status.stdout
    assert status.stdout.count("8 post_fp") == 2
    # every task ran exactly once
    assert max(calls(w).values()) == 1
    # a second `dpgen run` has nothing left to do and runs nothing
    again = dpgen("run", "param.json", "machine.json", cwd=w)
    assert again.returncode == 0 and max(calls(w).values()) == 1


def _run_and_kill(work: Path, hold: str, when) -> None:
    """Run dpgen with the wrapper holding back calls of a program (``hold``: "PROGRAM N"), kill
    dpgen (SIGKILL) once ``when()`` holds, then release the held calls.

    Without the hold, the two MD tasks of a job (para_deg 2) end within milliseconds of each other
    and dpgen moves on at once, so "one task ended and another not" was a window a poll could miss.
    """
    gate = work / "hold"
    assert not gate.exists()
    (work / "hold.claims").unlink(missing_ok=True)
    gate.write_text(hold + "\n")  # each call of this function holds another program: a new hold
    proc = subprocess.Popen([sys.executable, "-m", "dpgen_ng.cli", "run", "param.json", "machine.json"],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while not when():
            assert proc.poll() is None, "dpgen run ended before the kill point"
            assert time.monotonic() < deadline, "kill point never reached"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # only dpgen itself: its scheduler jobs go on running
        proc.wait()
        gate.unlink()  # the held engine calls run now, with nobody watching them


def test_sigkill_mid_run_step_then_resume(reference, tmp_path):
    work = setup_workdir(tmp_path / "killed")
    assert dpgen("init_bulk", "init.json", "machine.json", cwd=work).returncode == 0

    # 1: in iteration 0's run_model_devi, once one MD task has finished and another has not
    _run_and_kill(work, "lmp 1", lambda: record(work)[-1:] == ["0 3"] and ended(work, "lmp") >= 1)
    assert record(work)[-1] == "0 3"
    # 2: in iteration 1's run_train, once one model is trained and frozen
    _run_and_kill(work, "freeze 1", lambda: record(work)[-1:] == ["1 0"] and ended(work, "freeze") >= 5)
    assert record(work)[-1] == "1 0"

    # an edit of keys that do not change any task's inputs must not throw finished work away
    # (DP-GEN loses finished fp tasks on such a restart: dpgen#1678)
    param = json.loads((work / "param.json").read_text())
    param.update(ratio_failed=0.3, _note="edited between the kill and the restart")
    write_json(work / "param.json", param)
    final = dpgen("run", "param.json", "machine.json", cwd=work)
    assert final.returncode == 0, final.stdout + final.stderr
    assert record(work) == record(reference)

    # no task ran twice, and exactly the same tasks ran as in the uninterrupted run
    counted = calls(work)
    assert max(counted.values()) == 1, [k for k, v in counted.items() if v > 1]
    assert set(counted) == set(calls(reference))

    # same selection and the same labeled data
    for it in range(2):
        a = json.loads((work / f"iter.{it:06d}" / "02.fp" / "selection.json").read_text())
        b = json.loads((reference / f"iter.{it:06d}" / "02.fp" / "selection.json").read_text())
        assert a == b
        da, db = (w / f"iter.{it:06d}" / "02.fp" / "data.000" for w in (work, reference))
        files = sorted(p.relative_to(da) for p in da.rglob("*.npy"))
        assert files == sorted(p.relative_to(db) for p in db.rglob("*.npy")) and files
        for f in files:
            assert np.array_equal(np.load(da / f), np.load(db / f)), f
