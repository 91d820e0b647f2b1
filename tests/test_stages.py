"""Stages one by one on the real engines: init_bulk (xtb) → train (dp, 2 tiny models) →
model_devi (lmp with the DeePMD plugin) → fp make (selection), without the loop around them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dpgen_ng.config.init import parse_init_params
from dpgen_ng.config.machine import parse_machine
from dpgen_ng.config.param import parse_run_params
from dpgen_ng.initbulk.bulk import init_bulk
from dpgen_ng.ledger import Ledger
from dpgen_ng.stages import fp, model_devi, train
from dpgen_ng.stages.context import IterContext
from tests.conftest import EXAMPLE, load_example

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = tmp_path_factory.mktemp("stages")
    shutil.copy(EXAMPLE / "CH4.POSCAR", w)
    m = load_example("machine.json")
    for stage in ("train", "model_devi", "fp"):
        m[stage]["machine"]["remote_root"] = str(w / "remote")
    machines = parse_machine(m)
    init = load_example("init.json")
    init["pert_numb"] = 10
    init["pert_atom"] = 0.15  # the data the filter test below was written for (20-step models)
    report = init_bulk(parse_init_params(init, w), w, machines)
    assert report["collected"]["sys-0004-0001"] == {"frames": 11, "tasks_left_out": 0}
    p = load_example("param-dpgen.json")
    p["numb_models"] = 2
    p["default_training_param"]["training"].update(numb_steps=20, disp_freq=10, save_freq=20)
    p["model_devi_jobs"] = [{"sys_idx": [0], "temps": [300], "trj_freq": 5, "nsteps": 50,
                             "ensemble": "npt", "press": [1.0]}]
    p["model_devi_f_trust_lo"], p["model_devi_f_trust_hi"] = 0.0, 1e6
    p["fp_task_max"] = 3
    with Ledger(w) as ledger:
        yield IterContext(w.resolve(), 0, parse_run_params(p), machines, ledger)


@pytest.fixture(scope="module")
def explored(work):
    """The committee trained and its MD run, once per module, whichever test asks first."""
    for step in (train.make, train.run, train.post, model_devi.make, model_devi.run, model_devi.post):
        step(work)
    return work


def test_train_explore_select(explored):
    ctx = explored
    tdir = ctx.stage_dir(0)
    inputs = [json.loads((tdir / f"{k:03d}" / "input.json").read_text()) for k in range(2)]
    assert inputs[0]["model"]["descriptor"]["seed"] != inputs[1]["model"]["descriptor"]["seed"]
    assert inputs[0]["training"]["training_data"]["batch_size"] == [7]  # auto: ceil(32 / 5 atoms)
    for k in range(2):
        assert (tdir / f"graph.{k:03d}.pb").resolve().stat().st_size > 0

    mdir = ctx.stage_dir(1)
    text = (mdir / "task.000.000000" / "input.lammps").read_text()
    assert "pair_style      deepmd ../graph.000.pb ../graph.001.pb out_freq ${THERMO_FREQ}" in text
    assert "fix 1 all npt temp ${TEMP} ${TEMP} ${TAU_T} iso ${PRES} ${PRES} ${TAU_P}" in text
    table = np.load(mdir / "model_devi.npz")
    assert table["step"].tolist()[:3] == [0, 5, 10]
    assert len(table["step"]) == 2 * 11  # 2 confs × (50 / 5 + 1) frames
    assert np.all(np.isfinite(table["max_devi_f"])) and np.all(table["max_devi_f"] > 0)

    fp.make(ctx)
    sel = json.loads((ctx.stage_dir(2) / "selection.json").read_text())["systems"]["000"]
    assert sel["candidate"] == 22 and len(sel["picked"]) == 3
    for i in range(3):
        task = ctx.stage_dir(2) / f"task.000.{i:06d}"
        assert (task / "conf.xyz").is_file() and (task / "POSCAR").is_file()
    # a re-made step writes identical inputs (the ids of finished tasks stay valid)
    before = (ctx.stage_dir(2) / "task.000.000001" / "conf.xyz").read_bytes()
    fp.make(ctx)
    assert (ctx.stage_dir(2) / "task.000.000001" / "conf.xyz").read_bytes() == before


def test_sanity_filters_skip_candidates_before_picking(explored):
    """Re-make fp with filters on the module's MD."""
    import dataclasses

    ctx = explored
    # every 10 Å cube passes length_ratio 1.5; an H-H minimum of 5 Å rejects every CH4 frame
    strict = dataclasses.replace(ctx.params, skip_bad_box={"length_ratio": 1.5}, min_distance={(0, 0): 5.0})
    fp.make(dataclasses.replace(ctx, params=strict))
    sel = json.loads((ctx.stage_dir(2) / "selection.json").read_text())["systems"]["000"]
    assert sel["skipped"] == 22 and sel["candidate"] == 0 and sel["picked"] == []
    # H-H 1.0 Å rejects none (H-H ≈ 1.8 Å in CH4): the budget is filled as before
    mild = dataclasses.replace(ctx.params, min_distance={(0, 0): 1.0})
    fp.make(dataclasses.replace(ctx, params=mild))
    sel = json.loads((ctx.stage_dir(2) / "selection.json").read_text())["systems"]["000"]
    assert sel["skipped"] == 0 and len(sel["picked"]) == 3


def test_adaptive_trust_lo_in_the_fp_stage(explored):
    """Re-make fp on the module's MD with DP-GEN's adaptive trust_lo; the level used is the
    deviation of the 5th highest frame below trust_hi."""
    import dataclasses

    from dpgen_ng.explore.select import AdaptiveTrust

    ctx = explored
    adaptive = dataclasses.replace(ctx.params, adaptive=AdaptiveTrust(numb_f=5))
    fp.make(dataclasses.replace(ctx, params=adaptive))
    sel = json.loads((ctx.stage_dir(2) / "selection.json").read_text())["systems"]["000"]
    table = np.load(ctx.stage_dir(1) / "model_devi.npz")
    # the first frames of the two confs' runs count once each (one run per conf here)
    devi = np.sort(table["max_devi_f"])
    assert sel["trust"]["adapted"] is True and sel["trust"]["f_lo"] == pytest.approx(devi[-5])
    assert sel["candidate"] == 5 and sel["accurate"] == devi.size - 5 and sel["failed"] == 0
    assert len(sel["picked"]) == 3  # fp_task_max


def test_open_boundaries_and_relative_deviation_in_lammps(explored, tmp_path):
    """model_devi_nopbc + use_relative on a real LAMMPS run of CH4 with the module's committee:
    the box has open (f) boundaries, and model_devi.out's max_devi_f equals the hand computation
    max_i σ_i / (|F̄_i| + ε) from both models evaluated by DeePMD-kit without periodic images."""
    import subprocess

    import dpdata
    from deepmd.infer import DeepPot

    from dpgen_ng.explore import lammps

    ctx = explored
    conf = dpdata.System(str(EXAMPLE / "CH4.POSCAR"), fmt="vasp/poscar", type_map=["H", "C"])
    conf.remove_pbc()
    conf.to("lammps/lmp", str(tmp_path / "conf.lmp"))
    graphs = tuple(str(ctx.stage_dir(0) / f"graph.{k:03d}.pb") for k in range(2))
    eps = 0.5
    task = lammps.MdTask(ensemble="nvt", temp=300, press=None, nsteps=20, trj_freq=5, dt=0.0005, taut=0.1,
                         taup=0.5, masses=ctx.params.mass_map, graphs=graphs, velocity_seed=1, nopbc=True,
                         deviation=lammps.Deviation(relative_f=eps))
    (tmp_path / "input.lammps").write_text(lammps.input_text(task))
    run = subprocess.run(["lmp", "-in", "input.lammps", "-log", "log.lammps"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "ITEM: BOX BOUNDS xy xz yz ff ff ff" in (tmp_path / lammps.TRAJ).read_text()
    devi = np.loadtxt(tmp_path / lammps.DEVI, ndmin=2)
    traj = dpdata.System(str(tmp_path / lammps.TRAJ), fmt="lammps/dump", type_map=["H", "C"])
    n, natoms = traj.get_nframes(), traj.get_natoms()
    assert devi.shape[0] == n == 5
    forces = np.array([DeepPot(g).eval(traj["coords"].reshape(n, -1), None, traj["atom_types"])[1]
                       .reshape(n, natoms, 3) for g in graphs])
    mean = forces.mean(axis=0)
    sigma = np.sqrt(((forces - mean) ** 2).sum(axis=-1).mean(axis=0))
    relative = (sigma / (np.linalg.norm(mean, axis=-1) + eps)).max(axis=1)
    assert np.allclose(devi[:, 4], relative, rtol=2e-3, atol=1e-5)
    assert not np.allclose(devi[:, 4], sigma.max(axis=1), rtol=2e-3)  # not the absolute deviation


def test_template_job_with_colvars_in_lammps(explored, tmp_path):
    """A DP-GEN template job run for real: rev_mat values substituted, our deviation and dump lines
    put in, and a COLVARS restraint (the LAMMPS we ship has COLVARS, not PLUMED) whose file
    travels like a user_forward_files entry."""
    import subprocess

    import dpdata

    from dpgen_ng.config.jobs import parse_job
    from dpgen_ng.explore import lammps
    from dpgen_ng.explore.template import render

    ctx = explored
    (tmp_path / "in.lammps").write_text(
        "variable NSTEPS equal V_NSTEPS\nunits metal\nboundary p p p\natom_style atomic\n"
        "atom_modify map array\nread_data conf.lmp\n"
        "mass 1 1.008\nmass 2 12.011\npair_style deepmd frozen.pb\npair_coeff * *\n"
        "dump dpgen_dump all custom 10 traj/*.lammpstrj id type x y z\n"
        "velocity all create V_TEMP 4928459\nfix 1 all nvt temp V_TEMP V_TEMP 0.05\n"
        "fix cv all colvars colvars.inp output restraint\ntimestep 0.0005\nrun ${NSTEPS}\n")
    (tmp_path / "colvars.inp").write_text(
        "colvarsTrajFrequency 5\ncolvar {\n  name d15\n  distance {\n    group1 { atomNumbers 1 }\n"
        "    group2 { atomNumbers 5 }\n  }\n}\nharmonic {\n  colvars d15\n  centers 1.1\n"
        "  forceConstant 10.0\n}\n")
    job = parse_job({"sys_idx": [0], "trj_freq": 5, "template": {"lmp": str(tmp_path / "in.lammps")},
                     "rev_mat": {"lmp": {"V_NSTEPS": [20], "V_TEMP": [200]}}}, "model_devi_jobs[0]")
    (values,) = list(job.template.combinations(0))
    graphs = tuple(str(ctx.stage_dir(0) / f"graph.{k:03d}.pb") for k in range(2))
    (tmp_path / "input.lammps").write_text(render(job.template, values, graphs, job.trj_freq,
                                                  lammps.Deviation()))
    dpdata.System(str(EXAMPLE / "CH4.POSCAR"), fmt="vasp/poscar").to("lammps/lmp", str(tmp_path / "conf.lmp"))
    run = subprocess.run(["lmp", "-in", "input.lammps", "-log", "log.lammps"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    devi = np.loadtxt(tmp_path / lammps.DEVI, ndmin=2)
    assert devi[:, 0].tolist() == [0, 5, 10, 15, 20]
    traj = dpdata.System(str(tmp_path / lammps.TRAJ), fmt="lammps/dump")
    assert traj.get_nframes() == 5
    colvars = (tmp_path / "restraint.colvars.traj").read_text().splitlines()
    assert len([ln for ln in colvars if ln.strip() and not ln.startswith("#")]) == 5  # steps 0, 5, …, 20
