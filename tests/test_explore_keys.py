"""DP-GEN's exploration keys: open boundaries, relative deviations, f_avg_relative, per-model
activation functions, template jobs (rev_mat / sys_rev_mat). Inputs and values; the LAMMPS runs
are in tests/test_stages.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from dpgen_ng.config.param import parse_run_params
from dpgen_ng.errors import UserError
from dpgen_ng.explore import lammps
from dpgen_ng.explore.devi import rms_force
from dpgen_ng.explore.lammps import Deviation, MdTask
from dpgen_ng.explore.template import render
from dpgen_ng.train.deepmd import apply_activation

TEMPLATE = """# a DP-GEN style template
variable        NSTEPS          equal V_NSTEPS
variable        TEMP            equal V_TEMP
units           metal
boundary        p p p
atom_style      atomic
read_data       conf.lmp
mass            1 1.008
mass            2 12.011
pair_style      deepmd frozen_model.pb
pair_coeff      * *
thermo          10
dump            dpgen_dump all custom 10 traj/*.lammpstrj id type x y z
velocity        all create ${TEMP} 23456789
fix             1 all nvt temp ${TEMP} ${TEMP} 0.1
timestep        0.0005
run             ${NSTEPS}
"""


def md(**kw) -> MdTask:
    base = dict(ensemble="nvt", temp=300, press=None, nsteps=100, trj_freq=10, dt=0.0005, taut=0.1,
                taup=0.5, masses=(1.008, 12.011), graphs=("../graph.000.pb", "../graph.001.pb"),
                velocity_seed=7)
    return MdTask(**{**base, **kw})


def test_nopbc_and_relative_in_the_lammps_input():
    text = lammps.input_text(md(nopbc=True, deviation=Deviation(0.5, 2.0)))
    assert "boundary        f f f" in text and "boundary        p p p" not in text
    # as DP-GEN: the molecule's centre of mass kept still in its open box
    assert "velocity        all zero linear\nfix             fm all momentum 1 linear 1 1 1" in text
    assert ("pair_style      deepmd ../graph.000.pb ../graph.001.pb out_freq ${THERMO_FREQ} "
            "out_file model_devi.out relative 0.5 relative_v 2") in text
    assert "neighbor        1.0 bin\nneigh_modify    one 5000\n" in lammps.input_text(md(neigh_one=5000))
    plain = lammps.input_text(md())
    assert "boundary        p p p" in plain and "relative" not in plain and "momentum" not in plain


def _with(example_param: dict, **kw) -> dict:
    raw = copy.deepcopy(example_param)
    raw.update(kw)
    return raw


def test_explore_keys_parse_and_check(example_param):
    p = parse_run_params(_with(example_param, model_devi_nopbc=True, use_relative=True, epsilon=0.5,
                               use_relative_v=True, epsilon_v=1.0, model_devi_merge_traj=True,
                               model_devi_f_avg_relative=True, lmp_neigh_modify_one=3000,
                               model_devi_activation_func=["tanh", ["gelu", "tanh"], "relu", "tanh"]))
    assert p.explore.nopbc and p.explore.f_avg_relative and p.explore.neigh_one == 3000
    assert p.explore.deviation == Deviation(0.5, 1.0)
    assert p.explore.activation == (("tanh", "tanh"), ("gelu", "tanh"), ("relu", "relu"), ("tanh", "tanh"))
    # epsilon without use_relative is inert, as in DP-GEN
    assert parse_run_params(_with(example_param, epsilon=0.5)).explore.deviation == Deviation()
    bad = [
        (dict(use_relative=True), "epsilon", "epsilon is missing"),
        (dict(model_devi_activation_func=["tanh"]), "model_devi_activation_func", "1 entries for 4 models"),
        (dict(model_devi_activation_func=["tanh", "tanh", "swish", "tanh"]),
         "model_devi_activation_func[2]", "unknown activation function 'swish'"),
        (dict(model_devi_plumed=True), "model_devi_plumed", "COLVARS but not PLUMED"),
    ]
    for kw, where, text in bad:
        with pytest.raises(UserError) as info:
            parse_run_params(_with(example_param, **kw))
        assert info.value.where == where and text in info.value.line(), info.value.line()
    npt = _with(example_param, model_devi_nopbc=True)
    npt["model_devi_jobs"][0].update(ensemble="npt", press=[1.0])
    with pytest.raises(UserError, match="open boundaries"):
        parse_run_params(npt)


def test_activation_per_model_written():
    jinput = {"model": {"descriptor": {"type": "se_e2_a"}, "fitting_net": {}}}
    apply_activation(jinput, ("gelu", "tanh"))
    assert jinput["model"]["descriptor"]["activation_function"] == "gelu"
    assert jinput["model"]["fitting_net"]["activation_function"] == "tanh"


def test_rms_force_by_hand(tmp_path):
    """sqrt(mean |F|²) over both frames' atoms: |F|² = 1+4+4, 0+9+0, 0, 9+16 → sqrt(43/4)."""
    frame = ("ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n2\nITEM: BOX BOUNDS pp pp pp\n0 10\n0 10\n0 10\n"
             "ITEM: ATOMS id type x y z fx fy fz\n1 1 0 0 0 {a}\n2 2 1 1 1 {b}\n")
    traj = tmp_path / "all.lammpstrj"
    traj.write_text(frame.format(step=0, a="1 2 2", b="0 3 0") + frame.format(step=10, a="0 0 0", b="3 4 0"))
    assert rms_force(traj) == pytest.approx(np.sqrt(43 / 4))
    traj.write_text(frame.replace(" fx fy fz", "").format(step=0, a="", b=""))
    with pytest.raises(ValueError, match="no fx fy fz"):
        rms_force(traj)


def _template_job(tmp_path, example_param, text=TEMPLATE, **job):
    (tmp_path / "in.lmp").write_text(text)
    raw = copy.deepcopy(example_param)
    raw["model_devi_jobs"] = [{"sys_idx": [0], "trj_freq": 5, "template": {"lmp": str(tmp_path / "in.lmp")},
                               "rev_mat": {"lmp": {"V_NSTEPS": [100], "V_TEMP": [100, 200]}}, **job}]
    return parse_run_params(raw).model_devi_jobs[0]


def test_template_render_and_combinations(tmp_path, example_param):
    job = _template_job(tmp_path, example_param, sys_rev_mat={"0": {"lmp": {"V_PRES": [1, 2, 3]}}})
    combos = list(job.template.combinations(0))
    assert len(combos) == 2 * 3 and combos[1] == {"V_NSTEPS": 100, "V_TEMP": 100, "V_PRES": 2}
    assert len(list(job.template.combinations(1))) == 2  # no sys_rev_mat for system 1
    text = render(job.template, combos[0], ("../graph.000.pb", "../graph.001.pb"), job.trj_freq,
                  Deviation(relative_f=0.3))
    lines = text.splitlines()
    assert "variable        NSTEPS          equal 100" in lines
    assert "variable        TEMP            equal 100" in lines
    assert ("pair_style      deepmd ../graph.000.pb ../graph.001.pb out_freq 5 out_file model_devi.out "
            "relative 0.3") in lines
    assert "dump            dpgen_dump all custom 5 all.lammpstrj id type x y z fx fy fz" in lines
    assert "dump_modify     dpgen_dump sort id" in lines
    assert "frozen_model.pb" not in text and "V_" not in text


@pytest.mark.parametrize("edit,where,text", [
    (lambda t: t.replace("pair_style      deepmd frozen_model.pb\n", ""), "template.lmp",
     "'pair_style deepmd'"),
    (lambda t: t.replace("dump            dpgen_dump", "dump            1"), "template.lmp",
     "'dump dpgen_dump'"),
])
def test_template_without_the_lines_we_rewrite(tmp_path, example_param, edit, where, text):
    with pytest.raises(UserError) as info:
        _template_job(tmp_path, example_param, text=edit(TEMPLATE))
    assert where in info.value.where and text in info.value.line()


def test_template_plumed_and_keys_it_owns(tmp_path, example_param):
    with pytest.raises(UserError, match="COLVARS but not PLUMED"):
        _template_job(tmp_path, example_param, rev_mat={"lmp": {"V_TEMP": [1]}, "plm": {"V_X": [1]}})
    with pytest.raises(UserError, match="'grow_nsteps' in a template job"):
        _template_job(tmp_path, example_param, max_iter=2, grow_nsteps=True)
    # DP-GEN ignores temps/nsteps/ensemble in a template job; so do we
    job = _template_job(tmp_path, example_param, temps=[300], nsteps=10, ensemble="nvt")
    assert job.template is not None and job.nsteps == 0


def test_template_job_tasks_made(tmp_path, example_param):
    """model_devi make on a template job: one task per configuration × rev_mat × sys_rev_mat
    combination, each input substituted, its values in job.json (as DP-GEN), no step count."""
    import json

    from dpgen_ng.ledger import Ledger
    from dpgen_ng.stages import model_devi
    from dpgen_ng.stages.context import IterContext, read_manifest
    from tests.conftest import EXAMPLE

    raw = copy.deepcopy(example_param)
    raw["sys_configs"] = [[str(EXAMPLE / "CH4.POSCAR")]]
    raw["sys_batch_size"] = "auto"
    (tmp_path / "in.lmp").write_text(TEMPLATE)
    raw["model_devi_jobs"] = [{"sys_idx": [0], "trj_freq": 5, "template": {"lmp": str(tmp_path / "in.lmp")},
                               "rev_mat": {"lmp": {"V_NSTEPS": [40], "V_TEMP": [100, 200]}},
                               "sys_rev_mat": {"0": {"lmp": {"V_PRES": [1, 2]}}}}]
    work = tmp_path / "work"
    work.mkdir()
    with Ledger(work) as ledger:
        ctx = IterContext(work, 0, parse_run_params(raw), None, ledger)
        model_devi.make(ctx)
    md = ctx.stage_dir(1)
    manifest = read_manifest(md)
    assert [t["path"] for t in manifest["tasks"]] == [f"task.000.{i:06d}" for i in range(4)]
    assert manifest["nsteps"] == 0
    info = json.loads((md / "task.000.000003" / "job.json").read_text())
    assert (info["V_TEMP"], info["V_PRES"], info["V_NSTEPS"]) == (200, 2, 40)
    text = (md / "task.000.000003" / "input.lammps").read_text()
    assert "equal 200" in text and "equal 40" in text and "out_file model_devi.out" in text
    assert (md / "task.000.000003" / "conf.lmp").is_file()
