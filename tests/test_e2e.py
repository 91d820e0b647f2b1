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
import re
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
hold="${{E2E_HOLD:-{hold}}}"  # a copied run sets its own (its tasks keep the same command)
log="${{E2E_CALLS:-{log}}}"
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
echo "start $h $*" >> "$log"
"$@"; rc=$?
echo "end $h $*" >> "$log"
exit $rc
"""


NUMB_MODELS = 2  # a committee of two keeps the suite's time down; the examples train four


def tiny_param() -> dict:
    p = load_example("param-dpgen.json")
    p["numb_models"] = NUMB_MODELS
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
        for k in range(NUMB_MODELS):
            assert (train / f"{k:03d}" / "frozen_model.pb").is_file()
            model = (train / f"{k:03d}" / "frozen_model.pb").resolve()
            assert (train / f"graph.{k:03d}.pb").resolve() == model
        seeds = {json.loads((train / f"{k:03d}" / "input.json").read_text())["training"]["seed"]
                 for k in range(NUMB_MODELS)}
        assert len(seeds) == NUMB_MODELS  # distinct models
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
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(work))
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
    """The finished run, rolled back to iteration 0's make_model_devi with nothing to take back
    from (the archive goes): everything from iteration 0's MD on runs again, killed twice."""
    work = copy_run(reference, tmp_path / "killed")
    assert dpgen("rollback", str(work), "0:3", cwd=tmp_path).returncode == 0
    shutil.rmtree(work / ".dpgen" / "rollback")

    # 1: in iteration 0's run_model_devi, once one MD task has finished and another has not
    _run_and_kill(work, "lmp 1", lambda: record(work)[-1:] == ["0 3"] and ended(work, "lmp") >= 1)
    assert record(work)[-1] == "0 3"
    # 2: in iteration 1's run_train, once one model is trained and frozen
    _run_and_kill(work, "freeze 1", lambda: record(work)[-1:] == ["1 0"] and ended(work, "freeze") >= 1)
    assert record(work)[-1] == "1 0"

    # an edit of keys that do not change any task's inputs must not throw finished work away
    # (DP-GEN loses finished fp tasks on such a restart: dpgen#1678)
    param = json.loads((work / "param.json").read_text())
    param.update(ratio_failed=0.3, _note="edited between the kill and the restart")
    write_json(work / "param.json", param)
    final = dpgen("run", "param.json", "machine.json", cwd=work, env=env(work))
    assert final.returncode == 0, final.stdout + final.stderr
    assert record(work) == record(reference)

    # no task ran twice, and only tasks of the uninterrupted run ran: every MD, label and later
    # training (the last training of iteration 2 too)
    counted = calls(work)
    assert max(counted.values()) == 1, [k for k, v in counted.items() if v > 1]
    assert set(counted) <= set(calls(reference))
    for program, n in (("lmp", 4), ("xtb", 16), ("freeze", 2 * NUMB_MODELS)):
        assert sum(1 for k in counted if f" {program} " in k or k.endswith(f" {program}")) >= n, program

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


def copy_run(src: Path, dest: Path) -> Path:
    """A finished run copied elsewhere with its own remote root and an empty calls.log. The
    commands stay as they are (they are part of every task's id): the wrapper of ``src`` runs,
    told by :func:`env` to log and hold in the copy."""
    shutil.copytree(src, dest, symlinks=True)
    m = json.loads((dest / "machine.json").read_text())
    for stage in ("train", "model_devi", "fp"):
        m[stage]["machine"]["remote_root"] = str(dest / "remote")
    write_json(dest / "machine.json", m)
    (dest / "calls.log").write_text("")
    return dest


def env(work: Path) -> dict[str, str]:
    return {**os.environ, "E2E_CALLS": str(work / "calls.log"), "E2E_HOLD": str(work / "hold")}


def labeled_data(work: Path) -> dict[str, bytes]:
    """Every labeled frame and every frozen model of a run, by path."""
    files = [*work.glob("iter.*/02.fp/data.*/**/*.npy"), *work.glob("iter.*/00.train/[0-9]*/frozen_model.pb")]
    return {str(p.relative_to(work)): p.read_bytes() for p in sorted(files)}


def test_report_of_a_finished_run(reference, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "report"
    res = dpgen("report", str(reference), "-o", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"report: {out / 'report.html'}"
    page = (out / "report.html").read_text()
    shown = re.findall(r"<img src='([^']+)'", page)
    pngs = {p.name for p in out.glob("*.png")}
    assert set(shown) == pngs and len(shown) == len(set(shown))
    assert {"ratios.png", "devi_iter000.png", "devi_iter001.png", "labels.png", "lcurve.png",
            "walltime.png"} <= pngs
    for name in pngs:
        img = imread(out / name)
        assert img.shape[0] >= 250 and img.shape[1] >= 400, name
        assert float(img[..., :3].std()) > 0.05, f"{name} is blank"
    assert "status: finished: all 2 model_devi_jobs explored" in page
    assert "learning curves of iteration 2" not in page  # the title is in the PNG, not the page
    assert (reference / "record.dpgen").read_text().count("\n") == 21  # the run is not touched


def test_report_images_load_in_a_headless_browser(reference, tmp_path):
    """Debian's chromium opens report.html from disk (offline) and every image decodes."""
    out = tmp_path / "report"
    assert dpgen("report", str(reference), "-o", str(out), cwd=tmp_path).returncode == 0
    probe = ("<script>window.addEventListener('load', () => { const bad = [...document.images].filter("
             "i => !i.complete || i.naturalWidth === 0); document.body.setAttribute('data-images', "
             "document.images.length); document.body.setAttribute('data-broken', bad.length); });"
             "</script></body>")
    check = out / "check.html"
    check.write_text((out / "report.html").read_text().replace("</body>", probe))
    browser = shutil.which("chromium")
    assert browser, "chromium is not installed (make setup installs it)"
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                          "--no-first-run", "--disable-background-networking", "--disable-component-update",
                          "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
                          "--virtual-time-budget=5000", "--dump-dom", check.as_uri()],
                         capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body, res.stderr[-2000:]
    n = len(list(out.glob("*.png")))
    assert f'data-images="{n}"' in body.group(0) and 'data-broken="0"' in body.group(0), body.group(0)


def test_rollback_then_rerun_reuses_every_finished_task(reference, tmp_path):
    w = copy_run(reference, tmp_path / "rolled")
    before = labeled_data(w)
    listing = sorted(str(p.relative_to(w)) for p in w.rglob("*"))

    dry = dpgen("rollback", str(w), "1:make_fp", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would be moved to .dpgen/rollback/001" in dry.stdout
    assert sorted(str(p.relative_to(w)) for p in w.rglob("*")) == listing  # nothing changed

    res = dpgen("rollback", str(w), "1:6", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert record(w)[-1] == "1 5"
    assert not (w / "iter.000002").exists() and not (w / "iter.000001" / "02.fp").exists()
    archive = w / ".dpgen" / "rollback" / "001"
    assert (archive / "iter.000002" / "00.train" / "000" / "frozen_model.pb").is_file()
    assert "iter.000001 step 6 (make_fp)" in dpgen("status", str(w), cwd=w).stdout

    again = dpgen("run", "param.json", "machine.json", cwd=w, env=env(w))
    assert again.returncode == 0, again.stdout + again.stderr
    assert record(w) == record(reference)
    assert calls(w) == collections.Counter(), "a finished task ran again"  # all taken back
    assert "taken back from the rollback archive" in again.stderr
    assert labeled_data(w) == before


def test_rollback_refuses_a_step_not_reached(reference, tmp_path):
    w = copy_run(reference, tmp_path / "ahead")
    res = dpgen("rollback", str(w), "2:5", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("error: iter.000002 step 5 (post_model_devi) "
                                                         "has not finished yet")
    bad = dpgen("rollback", str(w), "one", cwd=tmp_path)
    assert bad.returncode == 2 and "ITER[:STEP]" in bad.stderr
    assert record(w) == record(reference) and not (w / ".dpgen" / "rollback").exists()


def _processes_of(work: Path) -> list[int]:
    """PIDs of processes started for this run (the wrapper's environment names its calls.log)."""
    mark = f"E2E_CALLS={work / 'calls.log'}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0") and int(environ.parent.name) != os.getpid():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_sigint_stops_the_local_jobs_in_one_line_and_the_rerun_finishes(reference, tmp_path):
    """Ctrl-C as a terminal sends it (to the whole process group) while fp jobs run under the
    local Shell batch: dpgen stops them (engines ignore the terminal's SIGINT and would run on
    unwatched), says so in one line and exits 130; the next `dpgen run` labels the same frames."""
    w = copy_run(reference, tmp_path / "interrupted")
    assert dpgen("rollback", str(w), "1:6", cwd=tmp_path).returncode == 0
    # the labels are not in the archive any more (iteration 2's models still are): xtb runs
    shutil.rmtree(w / ".dpgen" / "rollback" / "001" / "iter.000001" / "02.fp")
    (w / "hold").write_text("xtb 0\n")  # every xtb call waits until the hold goes
    proc = subprocess.Popen([sys.executable, "-m", "dpgen_ng.cli", "run", "param.json", "machine.json"],
                            cwd=w, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env(w))
    deadline = time.monotonic() + 300
    claims = w / "hold.claims"
    while not (claims.exists() and claims.read_text().count("x") >= 2):  # para_deg 2: two calls
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(1.0)  # let the ledger record the submission
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted (SIGINT) in iter.000001 step 7 (run_fp): stopped 1 local fp "
                           "job(s) (Shell, PID "), last
    assert last.endswith("; the same command resumes and runs their unfinished tasks again"), last
    assert _processes_of(w) == [], "a job of the interrupted run is still running"
    assert record(w)[-1] == "1 6"
    assert "interrupted (SIGINT) in iter.000001 step 7" in dpgen("status", str(w), cwd=w).stdout
    (w / "hold").unlink()
    final = dpgen("run", "param.json", "machine.json", cwd=w, env=env(w))
    assert final.returncode == 0, final.stdout + final.stderr
    assert record(w) == record(reference)
    assert max(calls(w).values()) == 1  # the stopped calls never reached xtb
    ref = labeled_data(reference)
    assert {k: v for k, v in labeled_data(w).items() if "02.fp" in k} == \
        {k: v for k, v in ref.items() if "02.fp" in k}
