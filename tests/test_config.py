"""Config parsing: strict keys, path-aware errors, nearest-key hints, DP-GEN vocabulary."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from dpgen_ng.cli import main
from dpgen_ng.config.machine import parse_machine
from dpgen_ng.config.param import parse_run_params
from dpgen_ng.errors import UserError
from tests.conftest import write_json


def error_of(raw: dict) -> UserError:
    with pytest.raises(UserError) as info:
        parse_run_params(raw)
    return info.value


def test_example_parses_and_effective_is_json(example_param):
    p = parse_run_params(example_param)
    assert p.type_map == ("H", "C")
    assert p.numb_models == 4
    assert len(p.model_devi_jobs) == 3
    assert p.model_devi_jobs[0].temps == (100.0, 300.0)
    assert p.fp_settings.method == "gfn2"
    json.dumps(p.effective())


def test_settings_never_mutated(example_param):
    p = parse_run_params(example_param)
    t = p.training_param()
    t["model"]["descriptor"]["seed"] = 5
    assert "seed" not in p.default_training_param["model"]["descriptor"]


def test_typo_names_key_path_and_nearest(example_param):
    raw = dict(example_param)
    raw["model_devi_f_trust_low"] = raw.pop("model_devi_f_trust_lo")
    err = error_of(raw)
    assert "model_devi_f_trust_low" in err.line()
    assert "did you mean 'model_devi_f_trust_lo'" in err.line()


def test_typo_inside_a_job_names_the_job(example_param):
    raw = copy.deepcopy(example_param)
    raw["model_devi_jobs"][1]["nstep"] = 10
    err = error_of(raw)
    assert err.where == "model_devi_jobs[1].nstep"
    assert "nsteps" in err.line()


def test_comments_are_ignored(example_param):
    """Keys starting with '_' (DP-GEN's comments) are dropped, also inside jobs; the same key
    without the '_' is refused."""
    raw = copy.deepcopy(example_param)
    raw.update(_anything={"x": 1}, _note="hello")
    raw["model_devi_jobs"][0]["_idx"] = 0
    p = parse_run_params(raw)
    assert p.effective() == parse_run_params(example_param).effective()
    assert not any(k.startswith("_") for k in p.effective())
    with pytest.raises(UserError, match="note"):
        parse_run_params(dict(example_param, note="hello"))


def test_job_aliases_accepted(example_param):
    raw = copy.deepcopy(example_param)
    raw["model_devi_jobs"] = [{"sys_idx": [0], "Ts": [50], "t_freq": 5, "nsteps": 100, "ens": "nve"}]
    job = parse_run_params(raw).model_devi_jobs[0]
    assert (job.temps, job.trj_freq, job.ensemble) == ((50.0,), 5, "nve")


@pytest.mark.parametrize("key", ["one_h5", "model_devi_plumed", "fp_cluster_vacuum",
                                 "use_clusters", "cvasp"])
def test_known_dpgen_keys_are_not_supported_yet(example_param, key):
    err = error_of(dict(example_param, **{key: 1}))
    assert "not supported yet" in err.line()
    assert key in err.line()


def test_template_job_file_must_exist(example_param):
    raw = copy.deepcopy(example_param)
    raw["model_devi_jobs"][0]["template"] = {"lmp": "no-such-in.lmp"}
    err = error_of(raw)
    assert "not found" in err.line() and err.where == "model_devi_jobs[0].template.lmp"


def test_key_of_another_labeler(example_param):
    err = error_of(dict(example_param, external_input_path="cp2k.inp"))
    assert "fp_style 'cp2k', not 'xtb'" in err.line()
    err = error_of(dict(example_param, user_fp_params={}))
    assert "'cp2k' or 'gaussian' or 'pwscf'" in err.line() and err.line().endswith("not 'xtb'")


def test_unsupported_fp_style(example_param):
    err = error_of(dict(example_param, fp_style="pwmat"))
    assert "not supported yet" in err.line() and err.where == "fp_style"
    err = error_of(dict(example_param, fp_style="nope"))
    assert "unknown fp_style" in err.line()


def test_npt_needs_pressure(example_param):
    raw = copy.deepcopy(example_param)
    raw["model_devi_jobs"][0]["ensemble"] = "npt"
    err = error_of(raw)
    assert err.where == "model_devi_jobs[0].press"


def test_sys_idx_out_of_range(example_param):
    raw = copy.deepcopy(example_param)
    raw["model_devi_jobs"][0]["sys_idx"] = [3]
    assert "out of range" in error_of(raw).line()


def test_missing_required_key(example_param):
    raw = dict(example_param)
    del raw["model_devi_dt"]
    assert "missing required key 'model_devi_dt'" in error_of(raw).line()


def test_wrong_type(example_param):
    err = error_of(dict(example_param, numb_models="four"))
    assert err.where == "numb_models" and "an integer" in err.line()


def test_trust_levels_scalar_list_dict(example_param):
    raw = copy.deepcopy(example_param)
    raw["sys_configs"] = [["a"], ["b"]]
    raw["sys_batch_size"] = "auto"
    raw["model_devi_f_trust_lo"] = [0.05, 0.1]
    raw["model_devi_f_trust_hi"] = {"0": 0.2, "1": 0.3}
    p = parse_run_params(raw)
    job = p.model_devi_jobs[0]
    assert p.trust(job, 1)[:2] == (0.1, 0.3)
    raw["model_devi_f_trust_lo"] = [0.05]
    assert "no value for system 1" in error_of(raw).line()
    raw["model_devi_f_trust_lo"] = 0.5
    assert "not below" in error_of(raw).line()


def test_job_level_trust_overrides(example_param):
    raw = copy.deepcopy(example_param)
    raw["model_devi_jobs"][0]["model_devi_f_trust_lo"] = 0.08
    p = parse_run_params(raw)
    assert p.trust(p.model_devi_jobs[0], 0)[:2] == (0.08, 0.15)
    assert p.trust(p.model_devi_jobs[1], 0)[:2] == (0.05, 0.15)


def test_mass_map_auto(example_param):
    p = parse_run_params(dict(example_param, mass_map="auto"))
    assert p.mass_map[1] == pytest.approx(12.011, abs=0.01)


def test_batch_size_list_too_short(example_param):
    err = error_of(dict(example_param, init_batch_size=[]))
    assert err.where == "init_batch_size"


def test_yaml_param(tmp_path, example_param):
    from dpgen_ng.config.param import load_run_params

    path = tmp_path / "param.yaml"
    path.write_text(yaml.safe_dump(example_param))
    assert load_run_params(path).fp_style == "xtb"


def test_machine_ok_and_errors(example_machine):
    m = parse_machine(example_machine)
    assert m["train"].command == "dp"
    assert m["fp"].resources["group_size"] == 50
    assert m["fp"].check_interval == 0.25
    bad = copy.deepcopy(example_machine)
    bad["fp"]["resources"]["grop_size"] = 2
    with pytest.raises(UserError) as info:
        parse_machine(bad)
    assert "grop_size" in info.value.line() and info.value.where.startswith("fp.resources")
    bad = copy.deepcopy(example_machine)
    bad["train"]["machine"]["batch_type"] = "Slurmm"
    with pytest.raises(UserError) as info:
        parse_machine(bad)
    assert info.value.where == "train.machine.batch_type"
    for version in (None, "0.9"):
        bad = dict(example_machine, api_version=version)
        with pytest.raises(UserError):
            parse_machine(bad)
    bad = {k: v for k, v in example_machine.items() if k != "fp"}
    with pytest.raises(UserError, match="missing section 'fp'"):
        parse_machine(bad)


def test_machine_dpgen_leniencies(example_machine, caplog):
    """As DP-GEN: no api_version means v1; a key dpdispatcher ignores (a stray local_root in
    resources) is dropped with a warning naming it; a near-typo of a real key is still refused;
    the v0 layout is named as such."""
    raw = copy.deepcopy(example_machine)
    raw.pop("api_version")
    raw["train"]["resources"]["local_root"] = "./"
    with caplog.at_level("WARNING"):
        m = parse_machine(raw)
    assert "local_root" not in m["train"].resources
    assert "train.resources.local_root is not a dpdispatcher key" in caplog.text
    raw["fp"]["resources"]["group_sizes"] = 3
    with pytest.raises(UserError, match="did you mean 'group_size'"):
        parse_machine(raw)
    v0 = {"train_machine": {"batch": "slurm"}, "deepmd_path": "/opt/dp", **example_machine}
    v0.pop("api_version")
    with pytest.raises(UserError, match="old v0 machine format"):
        parse_machine(v0)


def test_cli_check_typo_exit_2_one_line_nothing_written(tmp_path, example_param, example_machine):
    raw = dict(example_param)
    raw["fp_task_maxx"] = raw.pop("fp_task_max")
    param = write_json(tmp_path / "param.json", raw)
    machine = write_json(tmp_path / "machine.json", example_machine)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "check", str(param), str(machine)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "fp_task_maxx" in lines[0] and "did you mean 'fp_task_max'" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_run_bad_param_writes_nothing(tmp_path, example_param, example_machine):
    param = write_json(tmp_path / "param.json", dict(example_param, numb_models=1))
    machine = write_json(tmp_path / "machine.json", example_machine)
    work = tmp_path / "work"
    res = CliRunner().invoke(main, ["run", str(param), str(machine), "-w", str(work)])
    assert res.exit_code == 2
    assert "numb_models" in res.output
    assert not work.exists()


def test_cli_check_prints_effective_settings(tmp_path, example_param, example_machine):
    """check reads the data and the configurations as `dpgen run` will: give it both."""
    import shutil

    from tests.conftest import EXAMPLE, fake_deepmd

    param = write_json(tmp_path / "param.json", example_param)
    machine = write_json(tmp_path / "machine.json", example_machine)
    res = CliRunner().invoke(main, ["check", str(param), str(machine), "-w", str(tmp_path)])
    assert res.exit_code == 2 and "init_data_sys[0]" in res.output
    fake_deepmd(tmp_path / "CH4.POSCAR.01x01x01" / "02.md" / "sys-0004-0001" / "deepmd")
    conf = tmp_path / "CH4.POSCAR.01x01x01" / "01.scale_pert" / "sys-0004-0001" / "scale-1.000" / "000000"
    conf.mkdir(parents=True)
    shutil.copy(EXAMPLE / "CH4.POSCAR", conf / "POSCAR")
    res = CliRunner().invoke(main, ["check", str(param), str(machine), "-w", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["param"]["fp_accurate_soft_threshold"] == 0.9
    assert out["param"]["ratio_failed"] == 0.2
    assert out["machine"]["train"]["resources"]["para_deg"] == 2


def test_help_on_every_command():
    for cmd in ([], ["run"], ["check"], ["status"], ["init_bulk"]):
        res = CliRunner().invoke(main, [*cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output


def test_training_input_checked_with_deepmd_schema(example_param):
    raw = copy.deepcopy(example_param)
    raw["default_training_param"]["training"]["numb_stpes"] = 10
    err = error_of(raw)
    assert err.where == "default_training_param.training" and "numb_stpes" in err.line()
    # DeePMD-kit 2.x names that DP-GEN examples use are still accepted
    raw = copy.deepcopy(example_param)
    raw["default_training_param"]["training"] = {"stop_batch": 100, "disp_training": True,
                                                 "training_data": {"set_prefix": "set", "batch_size": 1}}
    parse_run_params(raw)


def test_dpgen_switches_at_their_default_and_press_on_nvt(example_param):
    raw = copy.deepcopy(example_param)
    raw["shuffle_poscar"] = False
    raw["model_devi_jobs"][0]["press"] = [1.0]
    p = parse_run_params(raw)
    assert p.model_devi_jobs[0].press == ()  # nvt: no pressure, one task per temperature
    raw["shuffle_poscar"] = True
    assert "not supported yet" in error_of(raw).line()


def test_the_python_of_ase_driven_jobs():
    """Relaxations and MD driven by ASE run `<python> -m dpgen_ng.ase_driver`: dpgen's own Python
    on the local Shell batch, `python3` elsewhere unless the machine section says which."""
    import sys

    from dpgen_ng.config.machine import parse_stage
    from dpgen_ng.fp import labeler_class

    def stage(machine: dict, **extra) -> object:
        return parse_stage({"command": "xtb", "machine": machine, "resources": {}, **extra}, "fp", "fp")

    local = {"batch_type": "Shell", "context_type": "LocalContext", "remote_root": "/tmp/r"}
    slurm = {"batch_type": "Slurm", "context_type": "LocalContext", "remote_root": "/tmp/r"}
    assert stage(local).python == sys.executable
    assert stage(slurm).python == "python3"
    assert stage(slurm, python="/opt/venv/bin/python").python == "/opt/venv/bin/python"
    with pytest.raises(UserError, match="fp.python"):
        stage(slurm, python="")
    cls = labeler_class("xtb")
    lab = cls(cls.parse_settings({}, ""), ("H", "C"))
    relax = lab.jobs({"command": "xtb", "python": "/opt/venv/bin/python"})["relax"]
    assert relax.command("xtb").startswith("/opt/venv/bin/python -m dpgen_ng.ase_driver")


def test_per_type_files_counted_at_check_time(example_param, tmp_path):
    """Pseudopotentials (and ABACUS orbitals) are one per type: a wrong count is refused by
    `dpgen check`, not found at the first fp stage."""
    for name in ("H.upf", "C.upf", "N.upf", "H.orb"):
        (tmp_path / name).write_text("x\n")
    pwscf = dict(example_param, fp_style="pwscf", fp_pp_path=str(tmp_path),
                 fp_pp_files=["H.upf", "C.upf", "N.upf"])
    pwscf.pop("fp_params")
    err = error_of(pwscf)
    assert err.where == "fp_pp_files" and "3 entries for 2 types" in err.line()
    abacus = dict(pwscf, fp_style="abacus", fp_pp_files=["H.upf", "C.upf"], fp_orb_files=["H.orb"],
                  user_fp_params={"ecutwfc": 80, "basis_type": "lcao"})
    err = error_of(abacus)
    assert err.where == "fp_orb_files" and "1 entries for 2 types" in err.line()
