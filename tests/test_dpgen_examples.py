"""`dpgen check` on params written in the vocabulary of DP-GEN's own methane examples
(examples/run/dp2.x-lammps-{vasp,cp2k,pwscf}, deepmd-kit 2.x): the same keys and structure,
with the files they refer to made here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TRAINING_2X = {
    "model": {"type_map": ["H", "C"],
              "descriptor": {"type": "se_a", "sel": [16, 4], "rcut_smth": 0.5, "rcut": 5, "neuron": [120, 120, 120],
                             "resnet_dt": True, "axis_neuron": 12, "seed": 1},
              "fitting_net": {"neuron": [25, 50, 100], "resnet_dt": False, "seed": 1}},
    "learning_rate": {"type": "exp", "start_lr": 0.001, "decay_steps": 100, "stop_lr": 3.5e-4},
    "loss": {"start_pref_e": 0.02, "limit_pref_e": 2, "start_pref_f": 1000, "limit_pref_f": 1,
             "start_pref_v": 0.0, "limit_pref_v": 0.0},
    "training": {"stop_batch": 2000, "disp_file": "lcurve.out", "disp_freq": 1000, "save_freq": 1000,
                 "save_ckpt": "model.ckpt", "disp_training": True, "time_training": True, "profiling": False,
                 "profiling_file": "timeline.json", "_comment2": "that's all",
                 "training_data": {"set_prefix": "set", "batch_size": 1}},
}


def base_param(root: Path) -> dict:
    return {
        "type_map": ["H", "C"], "mass_map": [1, 12],
        "init_data_prefix": str(root), "init_data_sys": ["CH4.POSCAR.01x01x01/02.md/sys-0004-0001/deepmd"],
        "sys_configs_prefix": str(root),
        "sys_configs": [["CH4.POSCAR.01x01x01/01.scale_pert/sys-0004-0001/scale*/00000*/POSCAR"],
                        ["CH4.POSCAR.01x01x01/01.scale_pert/sys-0004-0001/scale*/00001*/POSCAR"]],
        "_comment1": " that's all ", "numb_models": 4, "default_training_param": TRAINING_2X,
        "model_devi_dt": 0.002, "model_devi_skip": 0, "model_devi_f_trust_lo": 0.05,
        "model_devi_f_trust_hi": 0.15, "model_devi_clean_traj": True,
        "model_devi_jobs": [
            {"sys_idx": [0], "temps": [100], "press": [1.0], "trj_freq": 10, "nsteps": 300, "ensemble": "nvt",
             "_idx": "00"},
            {"sys_idx": [1], "temps": [100], "press": [1.0], "trj_freq": 10, "nsteps": 3000, "ensemble": "nvt",
             "_idx": "01"}],
        "shuffle_poscar": False, "fp_task_max": 20, "fp_task_min": 5,
    }


def vasp(root: Path) -> dict:
    (root / "INCAR_methane").write_text("PREC=A\nENCUT=400\nISYM=0\nALGO=fast\nEDIFF=1E-6\nLREAL=F\nNPAR=4\n"
                                        "KPAR=1\nNELM=120\nNELMIN=4\nISIF=2\nISMEAR=0\nSIGMA=0.20\nIBRION=-1\n"
                                        "NSW=0\nLWAVE=F\nLCHARG=F\nPSTRESS=0\nKSPACING=0.16\nKGAMMA=.FALSE.\n")
    for el in "HC":
        (root / f"POTCAR_{el}").write_text(f"{el} potential\n")
    return {**base_param(root), "fp_style": "vasp", "fp_pp_path": str(root), "fp_pp_files": ["POTCAR_H", "POTCAR_C"],
            "_comments": "empty POTCARs here", "fp_incar": str(root / "INCAR_methane")}


def pwscf(root: Path) -> dict:
    for name in ("C_ONCV_PBE_sr.upf", "H_ONCV_PBE_sr.upf"):
        (root / name).write_text("upf\n")
    return {**base_param(root), "fp_style": "pwscf",
            "user_fp_params": {"control": {"calculation": "scf", "tprnfor": True, "outdir": "./",
                                           "disk_io": "none", "pseudo_dir": "./"},
                               "system": {"ecutwfc": 110, "input_dft": "revpbe", "edir": 1, "emaxpos": 0.6,
                                          "vdw_corr": "dft-d3", "ntyp": 2, "nat": 5, "ibrav": 0},
                               "electrons": {"electron_maxstep": 1000, "mixing_beta": 0.5},
                               "kspacing": 999},
            "fp_task_max": 2000, "fp_pp_path": str(root),
            "fp_pp_files": ["H_ONCV_PBE_sr.upf", "C_ONCV_PBE_sr.upf"], "_comment": " that's all "}


def cp2k_template(root: Path) -> dict:
    (root / "template.inp").write_text(
        "&FORCE_EVAL\n  METHOD Quickstep\n  &SUBSYS\n    &CELL\n      ABC 10 10 10\n    &END CELL\n"
        "    &COORD\n      @include coord.xyz\n    &END COORD\n  &END SUBSYS\n&END FORCE_EVAL\n")
    p = base_param(root)
    p["default_training_param"]["model"].pop("type_map")
    return {**p, "init_batch_size": [8], "sys_batch_size": [8, 8, 8, 8], "fp_style": "cp2k",
            "external_input_path": str(root / "template.inp")}


def cp2k_user(root: Path) -> dict:
    return {**base_param(root), "ratio_failed": 0.2, "fp_style": "cp2k", "fp_task_max": 30, "fp_task_min": 1,
            "user_fp_params": {"FORCE_EVAL": {"DFT": {"BASIS_SET_FILE_NAME": "BASIS_MOLOPT",
                                                      "POTENTIAL_FILE_NAME": "GTH_POTENTIALS"},
                                              "SUBSYS": {"KIND": {"_": ["C", "H"],
                                                                  "POTENTIAL": ["GTH-PBE-q4", "GTH-PBE-q1"],
                                                                  "BASIS_SET": ["DZVP-MOLOPT-GTH",
                                                                                "DZVP-MOLOPT-GTH"]}}}}}


MACHINE_2X = {
    "api_version": "1.0", "deepmd_version": "2.1.5",
    "train": [{"command": "dp",
               "machine": {"batch_type": "Slurm", "context_type": "LocalContext", "local_root": "./",
                           "remote_root": "/tmp/dpgen-work"},
               "resources": {"number_node": 1, "cpu_per_node": 4, "gpu_per_node": 1, "queue_name": "T1_4_0",
                             "group_size": 1}}],
    "model_devi": [{"command": "lmp -i input.lammps -v restart 0",
                    "machine": {"batch_type": "Slurm", "context_type": "LocalContext", "local_root": "./",
                                "remote_root": "/tmp/dpgen-work"},
                    "resources": {"number_node": 1, "cpu_per_node": 8, "gpu_per_node": 1,
                                  "queue_name": "V100_8_32", "group_size": 250, "source_list": []}}],
    "fp": [{"command": "ulimit -s unlimited; mpirun -np 32 vasp_std",
            "machine": {"batch_type": "PBS", "context_type": "LocalContext", "local_root": "./",
                        "remote_root": "/tmp/dpgen-work"},
            "resources": {"number_node": 4, "cpu_per_node": 8, "gpu_per_node": 0, "queue_name": "CPU",
                          "group_size": 10, "source_list": ["/opt/intel/oneapi/setvars.sh"]}}],
}


@pytest.mark.parametrize("make", [vasp, pwscf, cp2k_template, cp2k_user])
def test_dpgen_methane_examples_pass_check(tmp_path, make):
    """With the data and configurations its paths name (check reads them as `dpgen run` will)."""
    from tests.conftest import EXAMPLE, fake_confs, fake_deepmd

    fake_deepmd(tmp_path / "CH4.POSCAR.01x01x01" / "02.md" / "sys-0004-0001" / "deepmd")
    pert = "CH4.POSCAR.01x01x01/01.scale_pert/sys-0004-0001/scale-1.000"
    fake_confs(tmp_path, EXAMPLE / "CH4.POSCAR", f"{pert}/000000", f"{pert}/000010")
    param = tmp_path / "param.json"
    param.write_text(json.dumps(make(tmp_path)))
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps(MACHINE_2X))
    out = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "check", str(param), str(machine)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    settings = json.loads(out.stdout)["param"]
    assert settings["fp_style"] == make.__name__.split("_")[0]
    assert settings["model_devi_jobs"][0].get("press") is None  # nvt: the pressure does not apply


@pytest.mark.parametrize("name", ["test.json", "test-pwscf.json"])
def test_cu_test_examples_pass_check(tmp_path, name):
    """examples/cu/test*.json (`dpgen test`) validate, given the model the Cu run makes."""
    import shutil

    cu = Path(__file__).resolve().parent.parent / "examples" / "cu"
    shutil.copytree(cu, tmp_path, dirs_exist_ok=True)
    model = tmp_path / "iter.000002" / "00.train" / "graph.000.pb"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"a frozen model")
    machine = "machine-pwscf.json" if "pwscf" in name else "machine.json"
    if "pwscf" in name and not Path("/usr/share/espresso/pseudo/Cu.pbe-kjpaw.UPF").is_file():
        pytest.skip("Debian's QE pseudopotentials are not installed")
    res = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "check", name, machine], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [i["type"] for i in out["param"]["interactions"]] == ["deepmd", "pwscf" if "pwscf" in name else "emt"]
    assert {"fp", "model_devi"} <= set(out["machine"])


# ----- DP-GEN vocabulary: keys and files a DP-GEN user brings, each accepted or refused rightly --


def _run_param(root: Path, **extra) -> Path:
    from tests.conftest import EXAMPLE, fake_confs, fake_deepmd

    data = root / "CH4.POSCAR.01x01x01" / "02.md" / "sys-0004-0001" / "deepmd"
    if not data.exists():
        fake_deepmd(data)
        pert = "CH4.POSCAR.01x01x01/01.scale_pert/sys-0004-0001/scale-1.000"
        fake_confs(root, EXAMPLE / "CH4.POSCAR", f"{pert}/000000", f"{pert}/000010")
    param = root / "param.json"
    param.write_text(json.dumps({**base_param(root), **extra}))
    return param


def _check(root: Path, param: Path, machine: dict | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "dpgen_ng.cli", "check", str(param)]
    if machine is not None:
        (root / "machine.json").write_text(json.dumps(machine))
        args.append(str(root / "machine.json"))
    return subprocess.run(args, capture_output=True, text=True, cwd=root)


def _no_api_version_stray_local_root() -> dict:
    m = json.loads(json.dumps(MACHINE_2X))
    m.pop("api_version")
    m["fp"][0]["resources"]["local_root"] = "./"
    return m


def test_dpgen_vocabulary_accepted(tmp_path):
    """fp_params as the alias of user_fp_params (CP2K, QE), cvasp / model_devi_nopbc false, a v1
    machine.json without api_version and with a stray resources.local_root (warned, dropped)."""
    cp2k = cp2k_user(tmp_path)
    cp2k["fp_params"] = cp2k.pop("user_fp_params")
    param = _run_param(tmp_path, **{k: v for k, v in cp2k.items() if k not in base_param(tmp_path)},
                       cvasp=False, model_devi_nopbc=False)
    out = _check(tmp_path, param, _no_api_version_stray_local_root())
    assert out.returncode == 0, out.stderr
    settings = json.loads(out.stdout)
    assert settings["param"]["fp_settings"]["user_fp_params"]["FORCE_EVAL"]["DFT"]["BASIS_SET_FILE_NAME"] \
        == "BASIS_MOLOPT"
    assert "local_root" not in settings["machine"]["fp"]["resources"]
    assert "fp.resources.local_root is not a dpdispatcher key" in out.stderr
    assert "read as a DP-GEN run param, for dpgen run" in out.stderr
    both = _run_param(tmp_path, fp_style="pwscf", fp_params={}, user_fp_params={})
    out = _check(tmp_path, both)
    assert out.returncode == 2 and "key given twice" in out.stderr


KIND_PARAMS = {
    "init_reaction": ({"type_map": ["H", "C"], "reaxff": {"data": "d", "ff": "f"}, "cutoff": 3.5},
                      "dpgen init_reaction"),
    "old autotest": ({"conf_dir": "confs/Al/std-fcc", "key_id": "xxx", "task_type": "vasp",
                      "task": "equi"}, "DP-GEN < 0.8"),
}


@pytest.mark.parametrize("kind", sorted(KIND_PARAMS))
def test_dpgen_param_kinds_we_do_not_read_are_named(tmp_path, kind):
    """Each DP-GEN param kind is recognised and, when we do not read it, refused in one line
    saying which kind it is (not "unknown key")."""
    raw, message = KIND_PARAMS[kind]
    (tmp_path / "p.json").write_text(json.dumps(raw))
    out = _check(tmp_path, tmp_path / "p.json")
    assert out.returncode == 2
    line = out.stderr.strip()
    assert "\n" not in line and f"is a DP-GEN {kind} param" in line and message in line
    assert "unknown key" not in line and list(tmp_path.iterdir()) == [tmp_path / "p.json"]


def test_init_fp_style_default_and_case(tmp_path):
    """init_fp_style defaults to VASP and ignores case, as in DP-GEN; ABACUS is named."""
    from tests.conftest import EXAMPLE

    (tmp_path / "POTCAR").write_text("p\n")
    (tmp_path / "INCAR_md").write_text("NSW = 3\nKSPACING = 0.5\nKGAMMA = T\n")
    base = {"stages": [2, 3, 4], "elements": ["H", "C"], "from_poscar": True,
            "from_poscar_path": str(EXAMPLE / "CH4.POSCAR"), "super_cell": [1, 1, 1], "scale": [1.0],
            "skip_relax": True, "pert_numb": 1, "pert_box": 0.01, "pert_atom": 0.01,
            "potcars": [str(tmp_path / "POTCAR")] * 2, "md_incar": str(tmp_path / "INCAR_md")}
    for style in ({}, {"init_fp_style": "VASP"}, {"init_fp_style": "vasp"}):
        (tmp_path / "init.json").write_text(json.dumps({**base, **style}))
        out = _check(tmp_path, tmp_path / "init.json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["param"]["fp_style"] == "vasp"
    (tmp_path / "init.json").write_text(json.dumps({**base, "init_fp_style": "ABACUS"}))
    out = _check(tmp_path, tmp_path / "init.json")
    assert out.returncode == 2 and "init_bulk with ABACUS is not supported yet" in out.stderr


def test_init_surf_example_is_read_as_init_surf(tmp_path):
    """examples/cu/init_surf.json: `dpgen check` reads it as an init_surf param; `dpgen run` names
    the command that reads it."""
    import shutil

    cu = Path(__file__).resolve().parent.parent / "examples" / "cu"
    shutil.copy(cu / "init_surf.json", tmp_path)
    out = _check(tmp_path, tmp_path / "init_surf.json")
    assert out.returncode == 0, out.stderr
    assert "read as a DP-GEN init_surf param, for dpgen init_surf" in out.stderr
    assert json.loads(out.stdout)["param"]["millers"] == [[1, 1, 1]]
    run = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "run", "init_surf.json", str(cu / "machine.json")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and "`dpgen init_surf init_surf.json ...`" in run.stderr


def _vocabulary_cases(root: Path) -> dict[str, dict]:
    """DP-GEN run params using each key issue 13 added (files they name made here)."""
    (root / "in.lammps").write_text(
        "variable NSTEPS equal V_NSTEPS\nunits metal\nboundary p p p\natom_style atomic\nread_data conf.lmp\n"
        "pair_style deepmd graph.pb\npair_coeff * *\ndump dpgen_dump all custom 10 traj/*.lammpstrj id type x y z\n"
        "fix 1 all nvt temp V_TEMP V_TEMP 0.1\nrun ${NSTEPS}\n")
    for name in ("H.psf", "C.psf", "H.upf", "C.upf"):
        (root / name).write_text("pp\n")
    template_job = {"sys_idx": [0], "trj_freq": 10, "template": {"lmp": str(root / "in.lammps")},
                    "rev_mat": {"lmp": {"V_NSTEPS": [1000], "V_TEMP": [100, 300]}},
                    "sys_rev_mat": {"1": {"lmp": {"V_TEMP": [500]}}}}
    return {
        "explore switches": {"model_devi_nopbc": True, "use_relative": True, "epsilon": 1.0,
                             "use_relative_v": True, "epsilon_v": 0.5, "model_devi_f_avg_relative": True,
                             "model_devi_merge_traj": True, "lmp_neigh_modify_one": 2000,
                             "model_devi_activation_func": [["tanh", "tanh"], ["tanh", "gelu"], "tanh", "tanh"]},
        "template jobs": {"model_devi_jobs": [template_job]},
        "gaussian": {"fp_style": "gaussian", "use_clusters": False,
                     "fp_params": {"keywords": "force b3lyp/6-31g**", "nproc": 4, "multiplicity": "auto"}},
        "siesta": {"fp_style": "siesta", "fp_pp_path": str(root), "fp_pp_files": ["H.psf", "C.psf"],
                   "fp_params": {"ecut": 300, "ediff": 1e-4, "kspacing": 1.0, "mixingWeight": 0.05,
                                 "NumberPulay": 5}},
        "abacus": {"fp_style": "abacus", "fp_pp_path": str(root), "fp_pp_files": ["H.upf", "C.upf"],
                   "user_fp_params": {"ecutwfc": 80, "scf_thr": 1e-7, "kspacing": 0.1}},
        "pwscf fp_params": {"fp_style": "pwscf", "fp_pp_path": str(root), "fp_pp_files": ["H.upf", "C.upf"],
                            "fp_params": {"system": {"ecutwfc": 40}}},
    }


def test_dpgen_vocabulary_folder_passes_check(tmp_path):
    """`dpgen check` on a folder of DP-GEN params, one per feature: each is read as it says."""
    from click.testing import CliRunner

    from dpgen_ng.cli import main

    settings = {}
    for name, extra in _vocabulary_cases(tmp_path).items():
        param = _run_param(tmp_path, **{"fp_style": "xtb", **extra})
        res = CliRunner().invoke(main, ["check", str(param), "-w", str(tmp_path)])
        assert res.exit_code == 0, f"{name}: {res.output}"
        settings[name] = json.loads(res.output[res.output.index("{"):res.output.rindex("}") + 1])["param"]
        assert settings[name]["fp_style"] == extra.get("fp_style", "xtb"), name
    explore = settings["explore switches"]["explore"]
    assert explore["relative_f"] == 1.0 and explore["model_devi_nopbc"] and explore["lmp_neigh_modify_one"] == 2000
    assert settings["template jobs"]["model_devi_jobs"][0]["rev_mat"]["lmp"]["V_TEMP"] == [100, 300]
