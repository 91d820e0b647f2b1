"""dpgen simplify: the schema's one-line errors, the picking rules on synthetic deviations, the
parsing of `dp model-devi`'s output, and real runs on a small xtb-labeled methane dataset
(init_bulk + xtb → 2 models of a few steps → dp model-devi → picks), with resume."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import dpdata
import numpy as np
import pytest

from dpgen_ng.config.init import parse_init_params
from dpgen_ng.config.machine import parse_machine
from dpgen_ng.config.simplify import (
    BIG,
    SimplifyParams,
    load_simplify_params,
    machine_stages,
    parse_simplify_params,
)
from dpgen_ng.errors import UserError
from dpgen_ng.ledger import Ledger
from dpgen_ng.rng import stage_rng
from dpgen_ng.simplify import run_simplify, select
from dpgen_ng.simplify.context import FINAL_DATA, SimplifyContext
from dpgen_ng.simplify.dataset import load_pick_data
from dpgen_ng.simplify.devi import _read
from tests.conftest import EXAMPLE, fake_deepmd, load_example, write_json

TINY_TRAINING = {"numb_steps": 20, "disp_file": "lcurve.out", "disp_freq": 10, "save_freq": 20}


def base_param(pick_data: str) -> dict:
    p = load_example("simplify.json")
    p["pick_data"] = pick_data
    p["numb_models"] = 2
    p["default_training_param"]["training"] = dict(TINY_TRAINING)
    return p


@pytest.fixture
def fake_data(tmp_path: Path) -> Path:
    fake_deepmd(tmp_path / "data" / "a", nframes=6)
    fake_deepmd(tmp_path / "data" / "b", nframes=4)
    return tmp_path


# ----- schema ---------------------------------------------------------------------------------


def test_example_param_reads_and_names_its_machine_sections(fake_data):
    p = parse_simplify_params(base_param("data"), fake_data)
    assert p.labeled and p.init_pick_number == 10 and p.iter_pick_number == 5 and p.stop_iter == 4
    assert p.f_trust.lo == 0.05 and p.e_trust.lo == BIG and not p.true_error
    assert machine_stages(p) == ("train", "model_devi")
    json.dumps(p.effective())
    unlabeled = {**base_param("data"), "labeled": False, "fp_style": "xtb", "fp_params": {"method": "gfn2"}}
    assert machine_stages(parse_simplify_params(unlabeled, fake_data)) == ("train", "model_devi", "fp")
    # DP-GEN's keys that its simplify accepts and never reads are accepted (and noted at start)
    qm7ish = {**base_param("data"), "sys_configs": [], "fp_task_max": 1000, "one_h5": False,
              "shuffle_poscar": False}
    assert parse_simplify_params(qm7ish, fake_data).no_effect == ("sys_configs", "fp_task_max")


def _bad(**changes: object) -> Callable[[dict], dict]:
    def edit(p: dict) -> dict:
        for k, v in changes.items():
            if v is _DROP:
                p.pop(k)
            else:
                p[k] = v
        return p

    return edit


_DROP = object()
BAD_CASES = [
    (_bad(pick_dat="data"), "unknown key 'pick_dat' at pick_dat: did you mean 'pick_data'?"),
    (_bad(init_pick_number=_DROP), "missing required key 'init_pick_number'"),
    (_bad(iter_pick_number=0), "got 0 at iter_pick_number: a positive number"),
    (_bad(training_reuse_iter=2), "DP-GEN key 'training_reuse_iter' is not supported yet"),
    (_bad(training_finetune_model=["a.pb"]), "DP-GEN key 'training_finetune_model' is not supported yet"),
    (_bad(use_clusters=True), "DP-GEN key 'use_clusters' is not supported yet"),
    (_bad(one_h5=True), "DP-GEN key 'one_h5' is not supported yet"),
    (_bad(model_devi_activation_func=["tanh"]), "1 entries for 2 models at model_devi_activation_func"),
    (_bad(model_devi_activation_func=["tanh", "relu9"]), "unknown activation function 'relu9'"),
    (_bad(model_devi_f_trust_lo=0.5, model_devi_f_trust_hi=0.1),
     "trust_lo 0.5 is not below trust_hi 0.1 at model_devi_f_trust_lo"),
    (_bad(model_devi_e_trust_hi=0.1), "trust_lo 1e+10 is not below trust_hi 0.1 at model_devi_e_trust_lo"),
    (_bad(labeled=False), "labeled is false but no fp_style labels the picked frames at fp_style"),
    (_bad(labeled=False, fp_style="xtb", true_error_f_trust_lo=0.1, true_error_f_trust_hi=0.3),
     "the true error needs the labels of the data at true_error_f_trust_lo"),
    (_bad(fp_style="pwmat"), "fp_style 'pwmat' is not supported yet"),
    (_bad(fp_style="gpaw"), "unknown fp_style 'gpaw'"),
    (_bad(fp_params={"method": "gfn2"}), "key 'fp_params' does not apply here at fp_params"),
    (_bad(pick_data="data/x.hdf5"), "deepmd/hdf5 pick_data is not supported yet at pick_data[0]"),
    (_bad(pick_data="nowhere"), "no deepmd/npy data (no type.raw) under"),
    (_bad(init_data_sys=["nowhere"]), "at init_data_sys[0]"),
    (_bad(type_map=["H", "H"]), "repeated element at type_map"),
    (_bad(mlp_engine="nequip"), "got 'nequip' at mlp_engine"),
    (_bad(training_iter0_model_path=["m/*"]), "training_iter0_model_path has no effect without "
                                              "training_init_model"),
    (_bad(default_training_param={"model": {}}), "missing 'training' section at default_training_param"),
]


@pytest.mark.parametrize("edit,message", BAD_CASES, ids=[m[:40] for _, m in BAD_CASES])
def test_bad_param_one_line_error(fake_data, edit, message):
    raw = edit(base_param("data"))
    with pytest.raises(UserError) as err:
        parse_simplify_params(raw, fake_data)
    assert message in err.value.line()
    assert "\n" not in err.value.line()


def test_labeled_data_without_labels_is_refused(fake_data):
    (fake_data / "data" / "b" / "set.000" / "force.npy").unlink()
    with pytest.raises(UserError) as err:
        parse_simplify_params(base_param("data"), fake_data)
    assert err.value.line().startswith("labeled is true but ") and "b/set.000 has no force.npy at pick_data" \
        in err.value.line()
    # unlabeled: the fp engine labels the picks, the data's own labels are not needed
    parse_simplify_params({**base_param("data"), "labeled": False, "fp_style": "xtb"}, fake_data)


def test_bad_file_names_the_file(fake_data):
    raw = base_param("data")
    raw["stop_iter"] = -1
    path = write_json(fake_data / "simplify.json", raw)
    with pytest.raises(UserError) as err:
        load_simplify_params(path, fake_data)
    assert err.value.line() == "got -1 at simplify.json: stop_iter: a positive number"


# ----- picking rules --------------------------------------------------------------------------


def test_init_pick_is_seeded_disjoint_and_complete():
    picked, rest = select.init_pick(41, 10, stage_rng(1, 0, "simplify-pick"))
    assert picked.size == 10 and rest.size == 31
    assert sorted([*picked, *rest]) == list(range(41)) and not set(picked) & set(rest)
    again, _ = select.init_pick(41, 10, stage_rng(1, 0, "simplify-pick"))
    other, _ = select.init_pick(41, 10, stage_rng(2, 0, "simplify-pick"))
    assert again.tolist() == picked.tolist() and other.tolist() != picked.tolist()
    everything, none = select.init_pick(5, 10, stage_rng(1, 0, "simplify-pick"))
    assert everything.tolist() == [0, 1, 2, 3, 4] and none.size == 0


def _params(fake_data: Path, **changes: object) -> SimplifyParams:
    return parse_simplify_params({**base_param("data"), "model_devi_f_trust_lo": 0.05,
                                  "model_devi_f_trust_hi": 0.3, **changes}, fake_data)


def test_classify_by_force_energy_and_true_error(fake_data):
    f = np.array([0.01, 0.05, 0.1, 0.29999, 0.3, np.nan, 0.5])
    e = np.zeros_like(f)
    a, c, x = select.ACCURATE, select.CANDIDATE, select.FAILED
    p = _params(fake_data)
    codes = select.classify(select.criteria(p, {"max_devi_f": f, "devi_e": e}))
    assert codes.tolist() == [a, c, c, c, x, x, x]
    # an energy window: a candidate by energy alone, failed by energy whatever the force says
    p = _params(fake_data, model_devi_e_trust_lo=0.01, model_devi_e_trust_hi=0.02)
    f2, e2 = np.array([0.01, 0.01, 0.1, 0.01]), np.array([0.0, 0.015, 0.03, 0.02])
    assert select.classify(select.criteria(p, {"max_devi_f": f2, "devi_e": e2})).tolist() == [a, c, x, x]
    # the true error judges too
    p = _params(fake_data, true_error_f_trust_lo=0.1, true_error_f_trust_hi=0.2)
    cols = {"max_devi_f": np.full(3, 0.01), "devi_e": np.zeros(3), "err_f": np.array([0.05, 0.15, 0.25]),
            "err_e": np.zeros(3)}
    assert p.true_error and select.classify(select.criteria(p, cols)).tolist() == [a, c, x]


def test_pick_on_a_synthetic_deviation_table(fake_data):
    p = _params(fake_data)
    rng_devi = np.random.default_rng(7)
    ids = np.arange(100, 160)  # the frames examined: ids of the previous rest
    f = rng_devi.uniform(0.0, 0.6, ids.size)
    codes = select.classify(select.criteria(p, {"max_devi_f": f, "devi_e": np.zeros_like(f)}))
    out = select.pick(ids, codes, p.iter_pick_number, stage_rng(1, 3, "simplify-pick"))
    cand = set(ids[(f >= 0.05) & (f < 0.3)])
    above = set(ids[f >= 0.3])
    assert out.n_candidate == len(cand) > p.iter_pick_number
    assert out.picked.size == p.iter_pick_number and set(out.picked) <= cand
    assert not set(out.picked) & above  # frames at or above trust_hi are never picked ...
    assert set(out.rest) == (cand - set(out.picked)) | above  # ... they stay in the rest
    assert set(out.accurate) == set(ids[f < 0.05]) and set(out.failed) == above
    assert sorted([*out.picked, *out.rest, *out.accurate]) == ids.tolist()
    assert not out.converged
    same = select.pick(ids, codes, p.iter_pick_number, stage_rng(1, 3, "simplify-pick"))
    assert same.picked.tolist() == out.picked.tolist()
    # fewer candidates than iter_pick_number: all of them
    few = select.pick(ids[:4], np.array([1, 0, 1, 2], dtype=np.int8), 5, stage_rng(1, 3, "x"))
    assert few.picked.tolist() == [100, 102] and few.rest.tolist() == [103] and few.n_candidate == 2
    # no candidate: converged, nothing picked
    none = select.pick(ids, np.zeros(ids.size, dtype=np.int8), 5, stage_rng(1, 3, "x"))
    assert none.converged and none.picked.size == 0 and none.rest.size == 0
    assert none.counts() == {"examined": 60, "candidate": 0, "picked": 0, "accurate": 60, "failed": 0,
                             "rest": 0}


def test_model_devi_output_blocks_map_to_frame_ids(fake_data):
    """`dp model-devi` on a dir of systems writes one block per system; rows are frames in order."""
    p = parse_simplify_params({**base_param("data"), "labeled": False, "fp_style": "xtb"}, fake_data)
    data = load_pick_data(fake_data, p)
    assert data.total == 10 and data.offsets.tolist() == [0, 6, 10]
    ids = np.array([1, 4, 6, 9])  # two frames of each system
    head = "# step max_devi_v min_devi_v avg_devi_v max_devi_f min_devi_f avg_devi_f devi_e"
    rows = {0: [0.1, 0.2], 1: [0.3, 0.4]}
    text = "".join(f"# data.rest.old/sys.{s:03d}\n{head}\n" + "".join(
        f"{i} 0 0 0 {v} 0 0 {v / 10}\n" for i, v in enumerate(vals)) for s, vals in rows.items())
    out = fake_data / "model_devi.out"
    out.write_text(text)
    cols = _read(out, data, ids)
    assert cols["max_devi_f"].tolist() == [0.1, 0.2, 0.3, 0.4]
    assert np.allclose(cols["devi_e"], [0.01, 0.02, 0.03, 0.04])
    assert (fake_data / "model_devi.sys.001.out").is_file()


# ----- real runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def methane(tmp_path_factory):
    """41 CH4 frames labeled by xtb (dpgen init_bulk, stages 2 and 4), and the local machine."""
    from dpgen_ng.initbulk.bulk import init_bulk

    root = tmp_path_factory.mktemp("simplify")
    shutil.copy(EXAMPLE / "CH4.POSCAR", root)
    m = load_example("machine-simplify.json")
    for stage in ("train", "model_devi", "fp"):
        m[stage]["machine"]["remote_root"] = str(root / "remote")
    machines = parse_machine(m)
    report = init_bulk(parse_init_params(load_example("init.json"), root), root, machines)
    assert report["collected"]["sys-0004-0001"]["frames"] == 41
    return root, machines, "../CH4.POSCAR.01x01x01/02.md/sys-0004-0001/deepmd"


def _read_frames(work: Path, it: int) -> dict:
    return json.loads((work / f"iter.{it:06d}" / "01.model_devi" / "frames.json").read_text())


def _mtimes(paths: list[Path]) -> list[int]:
    return [p.stat().st_mtime_ns for p in paths]


@pytest.mark.engine
def test_labeled_run_layout_growth_and_resume(methane):
    root, machines, pick = methane
    work = root / "labeled"
    work.mkdir()
    raw = base_param(pick)
    raw.update(init_pick_number=10, iter_pick_number=5, model_devi_f_trust_lo=0.0,
               model_devi_f_trust_hi=1e3, stop_iter=2)
    params = parse_simplify_params(raw, work)
    assert run_simplify(params, work, machines) == 0

    summary = json.loads((work / "simplify.json").read_text())
    assert summary["stop"]["kind"] == "stop_iter"
    assert [r["picked_total"] for r in summary["iterations"]] == [10, 15]
    assert summary["models"] == ["iter.000002/00.train/graph.000.pb", "iter.000002/00.train/graph.001.pb"]
    for it in (1, 2):
        for k in (0, 1):
            assert (work / f"iter.{it:06d}" / "00.train" / f"graph.{k:03d}.pb").resolve().is_file()
    assert not (work / "iter.000002" / "01.model_devi").exists()  # stopped before its model deviation
    picked_so_far: set[int] = set()
    for it in (0, 1):
        fr = _read_frames(work, it)
        picked, rest = set(fr["picked"]), set(fr["rest"])
        assert not picked & rest and not picked & picked_so_far  # disjoint, and never picked twice
        picked_so_far |= picked
        assert not rest & picked_so_far  # the rest never holds a picked frame
        assert len(picked_so_far) + len(rest) == 41  # all candidates (trust_lo 0): nothing accurate
        md = work / f"iter.{it:06d}" / "01.model_devi"
        assert dpdata.MultiSystems().from_deepmd_npy(str(md / "data.picked")).get_nframes() == len(picked)
        assert (work / f"iter.{it:06d}" / "02.fp" / "data.000").resolve() == (md / "data.picked").resolve()
        if it:
            assert set(fr["examined"]) == set(_read_frames(work, it - 1)["rest"])
            assert (md / "task.000" / "model_devi.out").is_file()
    # iteration 1 trained on the 10 random picks, iteration 2 on every pick: 10 + 5 frames
    for it, n in ((1, 1), (2, 2)):
        inp = json.loads((work / f"iter.{it:06d}" / "00.train" / "000" / "input.json").read_text())
        assert inp["training"]["training_data"]["systems"] == [
            f"../data.iters/iter.{k:06d}.sys.000" for k in range(n)]
    final = dpdata.MultiSystems().from_deepmd_npy(str(work / FINAL_DATA), labeled=True)
    assert final.get_nframes() == 15

    # resume: forget the steps after iteration 1's run_model_devi; the rerun re-picks the same
    # frames and reuses the finished trainings (their task ids are unchanged)
    models = [work / f"iter.{it:06d}" / "00.train" / "000" / "frozen_model.pb" for it in (1, 2)]
    before, frames1 = _mtimes(models), _read_frames(work, 1)
    rec = work / "record.dpgen"
    lines = rec.read_text().splitlines()
    rec.write_text("\n".join(lines[: lines.index("1 4") + 1]) + "\n")
    assert run_simplify(params, work, machines) == 0
    assert _mtimes(models) == before
    assert _read_frames(work, 1) == frames1
    assert rec.read_text().splitlines() == lines
    with Ledger(work) as ledger:
        assert all(t.runs <= 1 for t in ledger.tasks())
    # finished: running again does nothing
    assert run_simplify(params, work, machines) == 0 and rec.read_text().splitlines() == lines


@pytest.mark.engine
def test_unlabeled_picks_are_labeled_by_xtb(methane):
    """labeled: false — iteration 0's random picks are labeled by xtb (the data was made with the
    same GFN2-xTB, so the labels match the data's own)."""
    from dpgen_ng.simplify import devi, label

    root, machines, pick = methane
    work = root / "unlabeled"
    work.mkdir()
    raw = base_param(pick)
    raw.update(labeled=False, fp_style="xtb", fp_params={"method": "gfn2"}, init_pick_number=4)
    params = parse_simplify_params(raw, work)
    with Ledger(work) as ledger:
        ctx = SimplifyContext(work.resolve(), 0, params, machines, ledger)
        for step in (devi.make, label.make, label.run, label.post):
            step(ctx)
    ids = _read_frames(work, 0)["picked"]
    fp = work / "iter.000000" / "02.fp"
    assert sorted(p.name for p in fp.glob("task.000.*")) == [f"task.000.{n:06d}" for n in range(4)]
    got = dpdata.MultiSystems().from_deepmd_npy(str(fp / "data.000"), labeled=True)
    assert got.get_nframes() == 4
    ref = dpdata.LabeledSystem(str(root / pick[3:]), fmt="deepmd/npy", type_map=["H", "C"])
    (labeled,) = list(got.systems.values())
    assert [json.loads((fp / f"task.000.{n:06d}" / "job.json").read_text())["frame"] for n in range(4)] == ids
    assert np.allclose(labeled["energies"], ref["energies"][ids], atol=1e-4)
    final = dpdata.MultiSystems().from_deepmd_npy(str(work / FINAL_DATA), labeled=True)
    assert final.get_nframes() == 4


def test_machine_with_lammps_for_model_devi_is_refused(fake_data):
    m = copy.deepcopy(load_example("machine.json"))  # the run machine: model_devi runs lmp
    params = parse_simplify_params(base_param("data"), fake_data)
    with pytest.raises(UserError) as err:
        run_simplify(params, fake_data / "w", parse_machine(m))
    assert "model_devi.command is 'lmp'" in err.value.line()


def test_training_inputs_init_data_batch_sizes_and_warm_start(fake_data):
    """00.train's inputs without running dp: init_data_sys first (init_batch_size), then the picks of
    every earlier iteration (sys_batch_size); with training_init_model each model starts from the
    same model of the previous iteration, iteration 1 from scratch (no training_iter0_model_path)."""
    from dpgen_ng.simplify import train

    work = fake_data / "w"
    fake_deepmd(work / "init" / "x", nframes=3)
    for it in (0, 1):
        fake_deepmd(work / f"iter.{it:06d}" / "02.fp" / "data.000" / "sys.000", nframes=5)
    for k in (0, 1):
        ckpt = work / "iter.000001" / "00.train" / f"{k:03d}"
        ckpt.mkdir(parents=True)
        for name in ("model.ckpt.index", "model.ckpt.meta", "model.ckpt.data-00000-of-00001"):
            (ckpt / name).write_text(f"{k} {name}")
    raw = {**base_param("../data"), "init_data_sys": ["init"], "init_batch_size": [2],
           "sys_batch_size": ["auto:64"], "training_init_model": True,
           "model_devi_activation_func": [["tanh", "gelu"], "relu"]}
    params = parse_simplify_params(raw, work)
    ctx = SimplifyContext(work.resolve(), 2, params, None, None)  # type: ignore[arg-type]
    train.make(ctx)
    tdir = work / "iter.000002" / "00.train"
    manifest = json.loads((tdir / "tasks.json").read_text())
    assert manifest["tasks"] == ["000", "001"] and manifest["init_flag"] == " --init-model old/model.ckpt"
    inputs = [json.loads((tdir / t / "input.json").read_text()) for t in ("000", "001")]
    data = inputs[0]["training"]["training_data"]
    assert data["systems"] == ["../data.init/init.000.000", "../data.iters/iter.000000.sys.000",
                               "../data.iters/iter.000001.sys.000"]
    assert data["batch_size"] == [2, 5, 5]  # auto:64 on 5 atoms is 13, capped at the 5 frames
    assert (tdir / "data.iters" / "iter.000001.sys.000").resolve() == \
        (work / "iter.000001" / "02.fp" / "data.000" / "sys.000").resolve()
    assert inputs[0]["training"]["seed"] != inputs[1]["training"]["seed"]
    acts = [(i["model"]["descriptor"]["activation_function"],
             i["model"]["fitting_net"]["activation_function"]) for i in inputs]
    assert acts == [("tanh", "gelu"), ("relu", "relu")]
    assert (tdir / "001" / "old" / "model.ckpt.index").read_text() == "1 model.ckpt.index"
    assert manifest["old_files"]["000"][0] == "old/model.ckpt.index"
    # the same inputs when made again (the finished trainings are recognised on resume)
    train.make(ctx)
    assert json.loads((tdir / "001" / "input.json").read_text()) == inputs[1]
    # iteration 1: nothing earlier to start from
    train.make(SimplifyContext(work.resolve(), 1, params, None, None))  # type: ignore[arg-type]
    assert json.loads((work / "iter.000001" / "00.train" / "tasks.json").read_text())["init_flag"] == ""
