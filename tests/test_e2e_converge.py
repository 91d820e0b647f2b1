"""Convergence end to end on the real engines (dp, lmp, xtb) with tiny settings: a run that
repeats a job up to max_iter, moves on and stops because it converged — picking its labels by
farthest-point sampling (``fp_pick: fps``), killed once after the first picks were made and once
after the last iteration was judged, both times before the record line was written, and resumed
to the same picks and the same stop; a job that hits max_iter with fatal_at_max; and the sel gate.

The trust levels are set per job so that the outcome does not hang on how good 100-step models
are: job 0 (trust_lo 0.001 eV/Å) can never be accurate, job 1 (trust_lo 4 eV/Å) always is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dpgen_ng.failpoint import ENV as KILL_AT
from dpgen_ng.summary import read_summary
from tests.test_e2e import calls, dpgen, record, setup_workdir, write_json

pytestmark = [pytest.mark.slow, pytest.mark.engine]

NEVER = {"model_devi_f_trust_lo": 0.001, "model_devi_f_trust_hi": 5.0}
ALWAYS = {"model_devi_f_trust_lo": 4.0, "model_devi_f_trust_hi": 5.0}
VALID = "valid/CH4.POSCAR.01x01x01/02.md/sys-0004-0001/deepmd"
INIT_DATA = "CH4.POSCAR.01x01x01"


def job(**extra) -> dict:
    return {"sys_idx": [0], "temps": [300], "trj_freq": 10, "nsteps": 300, "ensemble": "nvt", **extra}


@pytest.fixture(scope="module")
def init_data(tmp_path_factory) -> Path:
    """The initial data (init_bulk with xtb), made once for this module's work dirs."""
    work = setup_workdir(tmp_path_factory.mktemp("init"))
    made = dpgen("init_bulk", "init.json", "machine.json", cwd=work)
    assert made.returncode == 0, made.stderr
    return work / INIT_DATA


def converge_workdir(path: Path, init_data: Path, jobs: list[dict], validation: bool = True,
                     **extra) -> Path:
    """The e2e work dir (2 models) with a copy of ``init_data``, ``jobs``, a fixed-levels criterion
    and, with ``validation``, a held-out set made by init_bulk (xtb MD) and a validation criterion."""
    work = setup_workdir(path)
    shutil.copytree(init_data, work / INIT_DATA)
    p = json.loads((work / "param.json").read_text())
    p.update(numb_models=2, model_devi_jobs=jobs, fp_task_max=4,
             convergence=[{"type": "fixed-levels", "conv_accuracy": 0.9}], **extra)
    if validation:
        init = json.loads((work / "init.json").read_text())
        valid = dict(init, stages=[2, 3, 4], pert_numb=2, pert_atom=0.05, md_nstep=5, md_temp=300,
                     md_dt=0.5, seed=11, from_poscar_path="../CH4.POSCAR")
        write_json(work / "valid.json", valid)
        made = dpgen("init_bulk", "valid.json", "machine.json", "-w", "valid", cwd=work)
        assert made.returncode == 0, made.stderr
        p["validation_data_sys"] = [VALID]
        p["convergence"].append({"type": "validation", "force_rmse": 100.0})
    write_json(work / "param.json", p)
    return work


def run_killed_at(work: Path, point: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{KILL_AT: point})
    return subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "run", "param.json", "machine.json"],
                          cwd=work, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def converged(tmp_path_factory, init_data) -> dict:
    """Job 0 twice (max_iter 2, not fatal), then job 1, which converges; labels picked by FPS.
    The first `dpgen run` is killed (SIGKILL, by the failpoint) once make_fp of iteration 0 has
    picked its frames and before its record line is written; the second once post_fp of
    iteration 2 has finished and before its record line is written; the third resumes."""
    work = converge_workdir(tmp_path_factory.mktemp("converged"), init_data,
                            [job(max_iter=2, fatal_at_max=False, **NEVER), job(max_iter=2, **ALWAYS)],
                            fp_pick="fps")
    picked = run_killed_at(work, "before-record:0:6")
    first = {"picked": picked, "record": record(work),
             "selection": (work / "iter.000000" / "02.fp" / "selection.json").read_text()}
    killed = run_killed_at(work, "before-record:2:8")
    state = {"killed": killed, "record": record(work), "decided": read_summary(work, 2),
             "validation": (work / "iter.000002" / "00.train" / "validation.json").read_text(),
             "calls": calls(work)}
    run = dpgen("run", "param.json", "machine.json", cwd=work)
    return {"work": work, "run": run, "first": first, **state}


def test_fps_picks_after_a_kill_are_the_same(converged):
    """make_fp ran again after the first kill (its record line was missing) and picked the same
    frames; the picks are the budget, spread over distinct frames."""
    first, work = converged["first"], converged["work"]
    assert first["picked"].returncode == -9, first["picked"].stderr
    assert first["record"][-1] == "0 5"
    again = (work / "iter.000000" / "02.fp" / "selection.json").read_text()
    assert again == first["selection"]
    sel = json.loads(again)
    assert sel["fp_pick"] == "fps"
    picks = sel["systems"]["000"]["picked"]
    assert len(picks) == 4 == len({tuple(p) for p in picks})
    assert sel["systems"]["000"]["candidate"] > 4  # a choice was made


def test_killed_after_convergence_was_decided_resumes_to_the_same_stop(converged):
    work = converged["work"]
    assert converged["killed"].returncode == -9, converged["killed"].stderr
    # post_fp had finished: the verdict was on disk, the record line was not
    assert converged["record"][-1] == "2 7"
    assert converged["decided"] is not None and converged["decided"].converged is True
    run = converged["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert record(work)[-1] == "2 8"
    assert read_summary(work, 2) == converged["decided"]  # post_fp ran again and judged the same way
    validation = (work / "iter.000002" / "00.train" / "validation.json").read_text()
    assert validation == converged["validation"]  # the evaluation was reused
    assert calls(work) == converged["calls"]  # no engine task ran again


def test_repeats_moves_on_and_stops_converged(converged):
    work, run = converged["work"], converged["run"]
    # job 0 twice (max_iter 2, not fatal), then job 1 once: converged, no final training
    assert record(work)[-1] == "2 8" and not (work / "iter.000003").exists()
    summaries = [read_summary(work, it) for it in range(3)]
    assert [(s.job, s.repeat, s.converged) for s in summaries] == [(0, 0, False), (0, 1, False), (1, 0, True)]
    assert summaries[0].systems["000"].trust.f_lo == 0.001 and summaries[2].systems["000"].trust.f_lo == 4.0
    assert summaries[0].systems["000"].accurate == 0 and summaries[2].systems["000"].accurate_ratio == 1.0
    # fresh velocities for the repeat: the two iterations of job 0 explored different frames
    a, b = (json.loads((work / f"iter.00000{i}" / "02.fp" / "selection.json").read_text()) for i in (0, 1))
    assert a["systems"]["000"]["picked"] != b["systems"]["000"]["picked"]
    # the committee of every iteration on the held-out set, and the calibration on the new labels
    for s in summaries:
        assert s.validation is not None and s.validation.nframes == 15 and len(s.validation.models) == 2
        assert 0 < s.validation.mean.force < 100
    assert summaries[0].calibration.nframes == summaries[0].labeled == 4
    assert summaries[2].calibration is None and summaries[2].labeled == 0
    assert [v.criterion for v in summaries[2].verdicts] == ["fixed-levels", "validation"]
    out = run.stdout
    assert ("status: converged at iteration 2 (model_devi_jobs[1], repeat 0): fixed-levels: accurate "
            "100.0 % ≥ 90.0 %; validation: force RMSE") in out
    assert "final models in iter.000002/00.train" in out


def test_status_json_and_a_second_run_changes_nothing(converged):
    work, run = converged["work"], converged["run"]
    status = json.loads(dpgen("status", "--json", str(work), cwd=work).stdout)
    assert status["stop_kind"] == "converged"
    assert status["stop_reason"].startswith("converged at iteration 2")
    assert [r["converged"] for r in status["iterations"]] == [False, False, True]
    assert [(r["job"], r["run"]) for r in status["iterations"]] == [(0, 1), (0, 2), (1, 1)]
    assert status["iterations"][0]["systems"]["000"]["trust"]["f_lo"] == 0.001
    assert status["iterations"][1]["validation"]["mean"]["force"] > 0
    text = dpgen("status", str(work), cwd=work).stdout
    assert "0.001–5" in text and "4–5" in text and " yes" in text
    before = calls(work)
    again = dpgen("run", "param.json", "machine.json", cwd=work)
    assert again.returncode == 0 and calls(work) == before
    assert again.stdout.splitlines()[-1] == run.stdout.splitlines()[-1]


def test_max_iter_with_fatal_at_max_stops_with_an_error(init_data, tmp_path):
    work = converge_workdir(tmp_path / "fatal", init_data, [job(max_iter=1, **NEVER), job(**ALWAYS)],
                            validation=False)
    run = dpgen("run", "param.json", "machine.json", cwd=work)
    assert run.returncode == 1, run.stdout + run.stderr
    assert record(work)[-1] == "0 8" and not (work / "iter.000001").exists()
    assert "status: stopped: model_devi_jobs[0] reached max_iter 1 in iteration 0 without converging " \
           "(fatal_at_max): fixed-levels: accurate 0.0 % < 90.0 %" in run.stdout
    status = json.loads(dpgen("status", "--json", str(work), cwd=work).stdout)
    assert status["stop_kind"] == "max_iter" and status["iterations"][0]["converged"] is False


def test_sel_below_the_neighbour_counts_is_refused_before_anything_is_written(init_data, tmp_path):
    work = setup_workdir(tmp_path / "sel")
    shutil.copytree(init_data, work / INIT_DATA)
    p = json.loads((work / "param.json").read_text())
    p["default_training_param"]["model"]["descriptor"]["sel"] = [3, 1]  # CH4: 4 H within 6 Å
    write_json(work / "param.json", p)
    before = sorted(x.name for x in work.iterdir())
    run = dpgen("run", "param.json", "machine.json", cwd=work)
    assert run.returncode == 2, run.stdout + run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("error: sel [3, 1] is below the neighbour counts of the initial data "
                           "(DeePMD-kit's neighbour statistics within rcut 6 Å: up to [4, 1]) at "
                           "default_training_param.model.descriptor.sel: at least [4, 1], or \"auto\"")
    assert sorted(x.name for x in work.iterdir()) == before  # nothing written
