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
