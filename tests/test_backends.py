"""DeePMD-kit's PyTorch backend and training from earlier models, on the real engines (dp --pt,
LAMMPS with .pth models, xtb): a compressed se_e2_a committee through one iteration and a warm
restart (training_reuse_*) in the next, a DPA-3 committee through one iteration, then
fine-tuning from its checkpoints and starting iteration 0 from them (training_init_model)."""

from __future__ import annotations

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

from dpgen_ng.config.init import parse_init_params
from dpgen_ng.config.machine import parse_machine
from dpgen_ng.config.param import parse_run_params
from dpgen_ng.initbulk.bulk import init_bulk
from dpgen_ng.ledger import Ledger
from dpgen_ng.stages import fp, model_devi, train
from dpgen_ng.stages.context import MANIFEST, IterContext
from tests.conftest import EXAMPLE, load_example

pytestmark = pytest.mark.engine

DPA3 = json.loads((EXAMPLE / "param-pytorch-dpa3.json").read_text())["default_training_param"]["model"]


def machines_for(w: Path):  # noqa: ANN201 - MachineSettings
    m = load_example("machine.json")
    for stage in ("train", "model_devi", "fp"):
        m[stage]["machine"]["remote_root"] = str(w / "remote")
    return parse_machine(m)


@pytest.fixture(scope="module")
def init_src(tmp_path_factory) -> Path:
    """xtb initial data (11 frames) and the configurations, as the methane example makes them."""
    w = tmp_path_factory.mktemp("init")
    shutil.copy(EXAMPLE / "CH4.POSCAR", w)
    init = load_example("init.json")
    init["pert_numb"] = 10
    init_bulk(parse_init_params(init, w), w, machines_for(w))
    return w


def methane_init(w: Path, src: Path) -> Path:
    """A work dir with a copy of the initial data and configurations."""
    shutil.copytree(src / "CH4.POSCAR.01x01x01", w / "CH4.POSCAR.01x01x01", symlinks=True)
    return w


def pt_param(**over) -> dict:
    """Two PyTorch se_e2_a models, 120 steps (checkpoints every 20), one 50-step MD job per
    iteration, every frame a candidate, 3 labels."""
    p = load_example("param-dpgen.json")
    p.update(numb_models=2, train_backend="pytorch", fp_task_max=3,
             model_devi_f_trust_lo=0.0, model_devi_f_trust_hi=1e6)
    p["default_training_param"]["training"].update(numb_steps=120, disp_freq=10, save_freq=20)
    job = {"sys_idx": [0], "temps": [300], "trj_freq": 5, "nsteps": 50, "ensemble": "nvt"}
    p["model_devi_jobs"] = [job, dict(job)]
    p.update(over)
    return p


def context(w: Path, it: int, raw: dict, ledger: Ledger) -> IterContext:
    return IterContext(w.resolve(), it, parse_run_params(raw), machines_for(w), ledger)


def steps(ctx: IterContext, *stages) -> None:  # noqa: ANN002 - stage modules
    for stage in stages:
        for step in (stage.make, stage.run, stage.post):
            step(ctx)


def lcurve(task: Path) -> np.ndarray:
    return np.loadtxt(task / "lcurve.out", ndmin=2)


@pytest.fixture(scope="module")
def pt_run(tmp_path_factory, init_src):
    """Iteration 0 (train with dp_compress, explore, label) and iteration 1's warm restart
    (training_init_model with training_reuse_*, as DP-GEN's examples set them together)."""
    w = methane_init(tmp_path_factory.mktemp("pt"), init_src)
    raw = pt_param(dp_compress=True, training_init_model=True, training_reuse_iter=1,
                   training_reuse_numb_steps=20,
                   training_reuse_old_ratio=0.3, training_reuse_start_lr=2e-4)
    with Ledger(w) as ledger:
        ctx0 = context(w, 0, raw, ledger)
        steps(ctx0, train, model_devi, fp)
        ctx1 = context(w, 1, raw, ledger)
        steps(ctx1, train)
        yield ctx0, ctx1


def test_pytorch_committee_compressed_explores_and_selects(pt_run):
    ctx, _ = pt_run
    tdir = ctx.stage_dir(0)
    for k in range(2):
        task = tdir / f"{k:03d}"
        assert (task / "frozen_model.pth").stat().st_size > 0
        assert (task / "model.ckpt.pt").is_file()
        # the committee is the compressed models (dp_compress), named as DP-GEN names them
        assert (tdir / f"graph.{k:03d}.pth").resolve() == (task / "frozen_model_compressed.pth").resolve()
        assert lcurve(task)[-1, 0] == 120
        assert (task / "resumed_from").read_text() == ""  # trained in one go
    mdir = ctx.stage_dir(1)
    text = (mdir / "task.000.000000" / "input.lammps").read_text()
    assert "pair_style      deepmd ../graph.000.pth ../graph.001.pth out_freq" in text
    table = np.load(mdir / "model_devi.npz")
    assert len(table["step"]) == 2 * 11  # 2 confs × (50 / 5 + 1) frames
    assert np.all(np.isfinite(table["max_devi_f"])) and np.all(table["max_devi_f"] > 0)
    labels = json.loads((ctx.stage_dir(2) / "labels.json").read_text())
    assert labels["labeled"] == 3


def test_reuse_iter_starts_from_the_previous_checkpoints_with_old_data_ratio(pt_run):
    ctx0, ctx1 = pt_run
    t1 = ctx1.stage_dir(0)
    manifest = json.loads((t1 / MANIFEST).read_text())
    assert manifest["start"] == "init_model from iter.000000"
    assert manifest["init_flag"] == " --init-model old/model.ckpt"
    for k in range(2):
        task = t1 / f"{k:03d}"
        jin = json.loads((task / "input.json").read_text())
        # 1 system of initial data ("old"), then iteration 0's labels ("new")
        assert jin["training"]["training_data"]["systems"][1].startswith("../data.iters/iter.000000.")
        assert jin["training"]["training_data"]["auto_prob"] == "prob_sys_size; 0:1:0.300000; 1:2:0.700000"
        assert jin["training"]["numb_steps"] == 20 and jin["learning_rate"]["start_lr"] == 2e-4
        old = task / "old" / "model.ckpt.pt"
        assert old.resolve() == (ctx0.stage_dir(0) / f"{k:03d}" / "model.ckpt.pt").resolve()
        # DeePMD-kit says it started from iteration 0's checkpoint, and ran the shorter schedule
        assert "Resuming from old/model.ckpt.pt" in (task / "train.err").read_text()
        assert lcurve(task)[-1, 0] == 20


def test_dpa3_committee_explores_then_fine_tunes(tmp_path, init_src):
    """A DPA-3 committee through one iteration; then iteration 0 of a new run fine-tuned from
    its checkpoints (training_finetune_model)."""
    w = methane_init(tmp_path / "dpa3", init_src)
    dpa3 = {"model": DPA3, "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-4,
                                              "decay_steps": 10},
            "loss": load_example("param-dpgen.json")["default_training_param"]["loss"],
            "training": {"numb_steps": 10, "disp_freq": 5, "save_freq": 10}}
    raw = pt_param(default_training_param=dpa3)
    raw["model_devi_jobs"] = raw["model_devi_jobs"][:1]
    raw["model_devi_jobs"][0]["nsteps"] = 20
    with Ledger(w) as ledger:
        ctx = context(w, 0, raw, ledger)
        steps(ctx, train, model_devi)
        fp.make(ctx)
    table = np.load(ctx.stage_dir(1) / "model_devi.npz")
    assert len(table["step"]) == 2 * 5 and np.all(table["max_devi_f"] > 0)
    sel = json.loads((ctx.stage_dir(2) / "selection.json").read_text())["systems"]["000"]
    assert len(sel["picked"]) == 3
    trained = [ctx.stage_dir(0) / f"{k:03d}" for k in range(2)]

    w2 = methane_init(tmp_path / "finetune", init_src)
    over = {"training_finetune_model": [str(t / "model.ckpt.pt") for t in trained]}
    with Ledger(w2) as ledger:
        ctx2 = context(w2, 0, {**raw, **over}, ledger)
        steps(ctx2, train)
    manifest = json.loads((ctx2.stage_dir(0) / MANIFEST).read_text())
    assert manifest["start"] == "finetune" and manifest["init_flag"] == " --finetune old/init.pt"
    for k in range(2):
        task = ctx2.stage_dir(0) / f"{k:03d}"
        assert (task / "frozen_model.pth").stat().st_size > 0
        assert "Resuming from old/init.pt" in (task / "train.err").read_text()
        # the same seeds as the run it comes from: a fresh start would begin at the very loss that
        # run began at; the fine-tuned model begins below it
        assert lcurve(task)[0, 1] < lcurve(trained[k])[0, 1]


def _dpgen(work: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dpgen_ng.cli", *args], cwd=work, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "DPGEN_NG_KILL_AT": "before-record:0:2"}, **kw)


def _kill_after_first_checkpoint(work: Path, probe: str) -> int:
    """Run ``dpgen run`` and SIGKILL it with its jobs (its whole process group, as a node failure
    does) once model 000 has published its first checkpoint (``probe``, the link DeePMD-kit
    points at the latest one); return the step it had reached."""
    proc = _dpgen(work, "run", "param.json", "machine.json")
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            ckpt = list((work / "remote").glob(f"*/000/{probe}"))
            if ckpt:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return int(lcurve(ckpt[0].parent)[-1, 0])
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"no checkpoint seen; dpgen ended with {proc.returncode}: {proc.stdout.read()}")


@pytest.mark.slow
@pytest.mark.parametrize("backend,mode", [("pytorch", "from_scratch"), ("tensorflow", "checkpoint")])
def test_training_killed_after_its_first_checkpoint(pt_run, init_src, tmp_path, backend, mode):
    """``dpgen run`` and its running trainings are killed once model 000 has saved its first
    checkpoint; the rerun (stopped by a failpoint after post_train) either starts that training
    over and gives the uninterrupted model exactly (training_resume: from_scratch; checked on
    PyTorch against the module's run of the same input), or continues from the checkpoint (the
    default, DP-GEN's behaviour; checked on TensorFlow), which ``dpgen status`` then reports."""
    work = methane_init(tmp_path, init_src)
    shutil.copy(EXAMPLE / "CH4.POSCAR", work)
    m = load_example("machine.json")
    for stage in ("train", "model_devi", "fp"):
        m[stage]["machine"]["remote_root"] = str(work / "remote")
    (work / "machine.json").write_text(json.dumps(m))
    raw = pt_param(training_resume=mode, train_backend=backend)
    if backend == "tensorflow":  # ~5x faster per step: more steps keep the kill mid-training
        raw["default_training_param"]["training"].update(numb_steps=1000, disp_freq=50, save_freq=100)
    total = raw["default_training_param"]["training"]["numb_steps"]
    (work / "param.json").write_text(json.dumps(raw))
    probe = "model.ckpt.pt" if backend == "pytorch" else "model.ckpt.index"
    reached = _kill_after_first_checkpoint(work, probe)
    assert 0 < reached < total  # killed mid-training, after the checkpoint
    task = work / "iter.000000" / "00.train" / "000"
    assert not (task / "lcurve.out").exists()
    rerun = _dpgen(work, "run", "param.json", "machine.json")
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == -signal.SIGKILL, out  # the failpoint after post_train
    status = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "status", str(work)],
                            capture_output=True, text=True).stdout
    assert lcurve(task)[-1, 0] == total
    if mode == "from_scratch":
        reference = pt_run[0].stage_dir(0) / "000"  # the same input.json, trained in one go
        assert (task / "input.json").read_bytes() == (reference / "input.json").read_bytes()
        assert (task / "resumed_from").read_text() == ""
        assert (task / "lcurve.out").read_bytes() == (reference / "lcurve.out").read_bytes()
        assert (task / "frozen_model.pth").read_bytes() == (reference / "frozen_model.pth").read_bytes()
        assert "resumed" not in status
    else:
        name = (task / "resumed_from").read_text().split()[0]
        step = int(name.split("ckpt-")[1].split(".")[0])
        assert 0 < step <= reached and step % 100 == 0
        assert f"model 000 resumed from the checkpoint of step {step}" in status, status
