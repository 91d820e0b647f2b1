"""Training from earlier models without running DeePMD-kit: what 00.train's make writes for each
DP-GEN key (links in old/, the dp flag, the warm restart's input changes) and the train command of
each backend. The real trainings that read these are in test_backends.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dpgen_ng.config.param import parse_run_params
from dpgen_ng.data import nframes
from dpgen_ng.ledger import Ledger
from dpgen_ng.stages import train
from dpgen_ng.stages.context import MANIFEST, IterContext
from dpgen_ng.train import deepmd
from tests.conftest import EXAMPLE, fake_deepmd, load_example

INIT = "init/deepmd"


def param(**over) -> dict:
    p = load_example("param-dpgen.json")
    p.update(numb_models=2, init_data_sys=[INIT], init_data_prefix="", **over)
    return p


def ctx(w: Path, it: int, raw: dict, ledger: Ledger) -> IterContext:
    return IterContext(w, it, parse_run_params(raw), None, ledger)  # type: ignore[arg-type]


def old_models(root: Path, backend: deepmd.Backend, n: int = 2) -> list[Path]:
    dirs = []
    for k in range(n):
        d = root / f"{k:03d}"
        d.mkdir(parents=True)
        for f in backend.ckpt_files:
            (d / f).write_text(f"{k} {f}")
        dirs.append(d)
    return dirs


def test_iteration_0_starts_from_training_iter0_model_path(tmp_path):
    fake_deepmd(tmp_path / INIT)
    tf = deepmd.BACKENDS["tensorflow"]
    old_models(tmp_path / "old-run", tf)
    raw = param(training_init_model=True, training_iter0_model_path=["old-run/00[0-1]"])
    with Ledger(tmp_path) as ledger:
        c = ctx(tmp_path, 0, raw, ledger)
        train.make(c)
    manifest = json.loads((c.stage_dir(0) / MANIFEST).read_text())
    assert manifest["start"] == "init_model from training_iter0_model_path"
    assert manifest["init_flag"] == " --init-model old/model.ckpt"
    for k in range(2):
        names = manifest["old_files"][f"{k:03d}"]
        assert names == [f"old/{f}" for f in tf.ckpt_files]
        for f in tf.ckpt_files:  # each model from its own counterpart
            assert (c.stage_dir(0) / f"{k:03d}" / "old" / f).read_text() == f"{k} {f}"


def test_reuse_iter_auto_ratio_and_the_copied_iteration_before_it(tmp_path):
    """Iteration 2 reuses: its "old" data are the initial data and iteration 0's labels, the "new"
    ones iteration 1's; auto:k gives old / (old + k × new). Iteration 1's models were copied from
    iteration 0 (too few labels), so the checkpoints come from iteration 0."""
    fake_deepmd(tmp_path / INIT, nframes=6)
    fake_deepmd(tmp_path / "iter.000000/02.fp/data.000/sys", nframes=2)
    fake_deepmd(tmp_path / "iter.000001/02.fp/data.000/sys", nframes=4)
    pt = deepmd.BACKENDS["pytorch"]
    old_models(tmp_path / "iter.000000/00.train", pt)
    (tmp_path / "iter.000001/00.train").mkdir(parents=True)
    (tmp_path / "iter.000001/00.train" / train.COPIED).write_text('{"from_iteration": 0, "labels": 0}')
    raw = param(train_backend="pytorch", training_reuse_iter=2, training_reuse_old_ratio="auto:3",
                training_reuse_numb_steps=77, training_reuse_start_lr=1e-4, training_reuse_start_pref_e=0.5,
                training_reuse_start_pref_f=50, training_reuse_decay_steps=9)
    (tmp_path / "iter.000001/02.fp/labels.json").write_text('{"labeled": 4}')
    with Ledger(tmp_path) as ledger:
        c = ctx(tmp_path, 2, raw, ledger)
        train.make(c)
    old, new = 6 + 2, 4
    ratio = old / (old + 3 * new)
    manifest = json.loads((c.stage_dir(0) / MANIFEST).read_text())
    assert manifest["start"] == "init_model from iter.000000"
    assert manifest["reuse_old_ratio"] == pytest.approx(ratio)
    jin = json.loads((c.stage_dir(0) / "000" / "input.json").read_text())
    assert [nframes(c.stage_dir(0) / s[3:]) for s in jin["training"]["training_data"]["systems"]] == [6, 2, 4]
    assert jin["training"]["training_data"]["auto_prob"] == (
        f"prob_sys_size; 0:2:{ratio:f}; 2:3:{1 - ratio:f}")
    assert jin["training"]["numb_steps"] == 77
    assert jin["learning_rate"]["start_lr"] == 1e-4 and jin["learning_rate"]["decay_steps"] == 9
    assert jin["loss"]["start_pref_e"] == 0.5 and jin["loss"]["start_pref_f"] == 50
    link = c.stage_dir(0) / "001" / "old" / "model.ckpt.pt"
    assert link.resolve() == (tmp_path / "iter.000000/00.train/001/model.ckpt.pt").resolve()


def test_before_reuse_iter_nothing_changes(tmp_path):
    fake_deepmd(tmp_path / INIT)
    fake_deepmd(tmp_path / "iter.000000/02.fp/data.000/sys", nframes=2)
    (tmp_path / "iter.000000/02.fp/labels.json").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "iter.000000/02.fp/labels.json").write_text('{"labeled": 2}')
    raw = param(training_reuse_iter=2, training_reuse_numb_steps=77)
    with Ledger(tmp_path) as ledger:
        c = ctx(tmp_path, 1, raw, ledger)
        train.make(c)
    jin = json.loads((c.stage_dir(0) / "000" / "input.json").read_text())
    assert "auto_prob" not in jin["training"]["training_data"] and jin["training"]["numb_steps"] == 2000
    assert json.loads((c.stage_dir(0) / MANIFEST).read_text())["init_flag"] == ""
    assert not (c.stage_dir(0) / "000" / "old").exists()


@pytest.mark.parametrize("backend", ["tensorflow", "pytorch"])
def test_the_train_command_restarts_from_a_checkpoint_and_notes_it(tmp_path, backend):
    """The command's shell logic with a stand-in ``dp`` that prints its arguments (the real
    restart is in test_backends.py)."""
    b = deepmd.BACKENDS[backend]
    dp = tmp_path / "dp"
    dp.write_text('#!/bin/sh\necho "$@" >> calls\n')
    dp.chmod(0o755)
    cmd = deepmd.command(str(dp), b, " --init-model old/model.ckpt", compress=True)
    subprocess.run(["bash", "-c", cmd], cwd=tmp_path, check=True)
    first = (tmp_path / "calls").read_text().splitlines()
    assert first == [f"{b.flag} train input.json --init-model old/model.ckpt",
                     f"{b.flag} freeze -o {b.model}", f"{b.flag} compress -i {b.model} -o {b.compressed}"]
    assert deepmd.resumed_steps(tmp_path) == []
    (tmp_path / f"model.ckpt-300{b.ckpt_files[0][len('model.ckpt'):]}").write_text("x")
    (tmp_path / b.ckpt_files[0]).symlink_to(f"model.ckpt-300{b.ckpt_files[0][len('model.ckpt'):]}")
    (tmp_path / "calls").unlink()
    subprocess.run(["bash", "-c", cmd], cwd=tmp_path, check=True)
    restart = (tmp_path / "calls").read_text().splitlines()[0]
    assert restart == f"{b.flag} train input.json --restart model.ckpt"
    assert deepmd.resumed_steps(tmp_path) == [300]
    scratch = deepmd.command(str(dp), b, from_scratch=True)
    (tmp_path / "calls").unlink()
    subprocess.run(["bash", "-c", scratch], cwd=tmp_path, check=True)
    assert (tmp_path / "calls").read_text().splitlines()[0] == f"{b.flag} train input.json"
    assert not (tmp_path / b.ckpt_files[0]).exists() and deepmd.resumed_steps(tmp_path) == []


def test_the_pytorch_dpa3_example_is_valid():
    """examples/methane/param-pytorch-dpa3.json passes the param checks (it runs end to end in
    ~22 min, too long for the suite; test_backends.py trains its descriptor)."""
    p = parse_run_params(json.loads((EXAMPLE / "param-pytorch-dpa3.json").read_text()))
    assert p.train_backend == "pytorch" and p.backend.suffix == ".pth"
    assert p.default_training_param["model"]["descriptor"]["type"] == "dpa3"
    assert p.warm_start.reuse is not None and p.warm_start.reuse.start_iter == 1
    assert p.warm_start.reuse.old_ratio is None and p.warm_start.reuse.auto_factor == 10.0


def test_training_steps_in_one_process_when_the_venv_dp_runs_here(tmp_path, monkeypatch):
    """Train, freeze (and compress) share one Python (one TensorFlow/PyTorch import) when the train
    stage runs here with the venv's own `dp`; otherwise one `dp` per step, as DP-GEN."""
    import sys
    from pathlib import Path

    b = deepmd.BACKENDS["tensorflow"]
    venv_bin = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert deepmd.session_python("dp", runs_here=True) == sys.executable
    assert deepmd.session_python("dp", runs_here=False) is None  # a cluster's own dp
    assert deepmd.session_python("mpirun -n 2 dp", runs_here=True) is None  # one dp per step, per rank
    assert deepmd.session_python("/usr/bin/srun dp", runs_here=True) is None
    # a wrapper stays in front of the Python
    assert deepmd.session_python("nice -n 5 dp", runs_here=True) == f"nice -n 5 {sys.executable}"
    assert deepmd.session_python("'/a b/counted' dp", runs_here=True) == f"'/a b/counted' {sys.executable}"
    assert deepmd.session_python("nice /usr/bin/dp", runs_here=True) is None
    assert deepmd.session_python("/usr/bin/dp", runs_here=True) is None
    one = deepmd.command("dp", b, compress=True, session=sys.executable)
    assert (f"{sys.executable} -m dpgen_ng.train.session --tf 'train input.json' "
            "'freeze -o frozen_model.pb' 'compress -i frozen_model.pb -o frozen_model_compressed.pb'") in one
    assert "'train input.json --restart model.ckpt'" in one  # the restart branch too
    assert "dp --tf" not in one
    many = deepmd.command("dp", b, compress=True)
    assert "dp --tf train input.json && dp --tf freeze -o frozen_model.pb && dp --tf compress" in many
    # PyTorch's freeze scripts the model (TorchScript), which fails in the process that trained
    # DPA-3: one dp per step there
    from dpgen_ng.config.machine import parse_stage

    st = parse_stage({"command": "dp", "machine": {"batch_type": "Shell", "context_type": "LocalContext"},
                      "resources": {}}, "train", "train")
    assert "dpgen_ng.train.session" in deepmd.task_command(st, b, "", False, False)
    assert "dp --pt train" in deepmd.task_command(st, deepmd.BACKENDS["pytorch"], "", False, False)


def test_dp_train_skip_neighbor_stat(tmp_path):
    """DP-GEN's dp_train_skip_neighbor_stat: `--skip-neighbor-stat` on both train branches, and
    compress then reads the statistics' data from the input (the model has none); refused with a
    descriptor whose sel DeePMD-kit sets from those statistics."""
    from dpgen_ng.errors import UserError

    assert parse_run_params(param()).skip_neighbor_stat is False
    assert parse_run_params(param(dp_train_skip_neighbor_stat=True)).skip_neighbor_stat is True
    for sel in ("auto", "auto:1.1", None):
        raw = param(dp_train_skip_neighbor_stat=True)
        desc = raw["default_training_param"]["model"]["descriptor"]
        if sel is None:
            del desc["sel"]
        else:
            desc["sel"] = sel
        with pytest.raises(UserError, match="sel.*'auto'.*dp_train_skip_neighbor_stat"):
            parse_run_params(raw)
    for b in deepmd.BACKENDS.values():
        cmd = deepmd.command("dp", b, compress=True, skip_neighbor_stat=True)
        assert f"train input.json --skip-neighbor-stat && dp {b.flag} freeze" in cmd
        assert f"--restart {deepmd.CKPT} --skip-neighbor-stat" in cmd
        assert f"compress -i {b.model} -o {b.compressed} -t input.json" in cmd
        assert "skip-neighbor-stat" not in deepmd.command("dp", b, compress=True)


@pytest.mark.slow
def test_skip_neighbor_stat_trains_freezes_and_compresses_for_real(tmp_path):
    """A 20-step TensorFlow training with --skip-neighbor-stat, frozen and compressed in one Python:
    DeePMD-kit computes no statistics, and compress takes them from the input's data."""
    import sys

    data = fake_deepmd(tmp_path / "data", nframes=4)
    tparam = load_example("param-dpgen.json")["default_training_param"]
    tparam["training"].update(numb_steps=20, disp_freq=10, save_freq=20,
                              training_data={"systems": [str(data)], "batch_size": 1})
    tparam["model"]["type_map"] = ["H", "C"]
    (tmp_path / deepmd.INPUT).write_text(json.dumps(tparam))
    b = deepmd.BACKENDS["tensorflow"]
    cmd = deepmd.command("dp", b, compress=True, session=sys.executable, skip_neighbor_stat=True)
    out = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / b.compressed).stat().st_size > 0
    assert "Calculate neighbor statistics" not in out.stderr.split("finished training")[0]
