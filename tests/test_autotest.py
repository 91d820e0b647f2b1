"""`dpgen test` (DP-GEN's autotest): config, task planning, and real EMT runs checked against
ASE's own direct computation of the same quantities; resume after SIGKILL; stale outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dpdata
import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.filters import FrechetCellFilter
from ase.io import write
from ase.optimize import BFGS

from dpgen_ng.autotest.defects import Interstitial, Vacancy, interstitial_sites
from dpgen_ng.autotest.elastic import Elastic
from dpgen_ng.autotest.eos import Eos, volumes
from dpgen_ng.autotest.lammps import Minimize, lower_triangular, relax_commands
from dpgen_ng.autotest.surface import Surface
from dpgen_ng.config.autotest import parse_test_params
from dpgen_ng.errors import UserError
from tests.conftest import ROOT, write_json

CU_MACHINE = ROOT / "examples" / "cu" / "machine.json"
FMAX = 1e-4


def dpgen(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dpgen_ng.cli", *args], cwd=cwd, capture_output=True,
                          text=True, **kw)


def cu_conf(path: Path, name: str = "std-fcc", a: float = 3.6, cubic: bool = True) -> Path:
    d = path / "confs" / name
    d.mkdir(parents=True, exist_ok=True)
    write(d / "POSCAR", bulk("Cu", "fcc", a=a, cubic=cubic), format="vasp", direct=True)
    return d


def cu_system(a: float = 3.6, cubic: bool = True) -> dpdata.System:
    return dpdata.System(bulk("Cu", "fcc", a=a, cubic=cubic), fmt="ase/structure", type_map=["Cu"])


def workdir(path: Path, properties: list[dict], reference: bool = True) -> Path:
    cu_conf(path)
    m = json.loads(CU_MACHINE.read_text())
    m["fp"]["check_interval"] = 0.2
    write_json(path / "machine.json", m)
    param = {"structures": ["confs/std-*"], "interaction": {"type": "emt"},
             "relaxation": {"cal_setting": {"fmax": FMAX}}, "properties": properties}
    if reference:
        param["reference"] = {"type": "emt"}
    write_json(path / "test.json", param)
    return path


# ----- config --------------------------------------------------------------------------------


def _params(tmp_path: Path, **over) -> dict:
    cu_conf(tmp_path)
    raw = {"structures": ["confs/*"], "interaction": {"type": "emt"},
           "properties": [{"type": "eos", "vol_start": 0.9, "vol_end": 1.1, "vol_step": 0.05}]}
    raw.update(over)
    return raw


def test_config_defaults_follow_dpgen(tmp_path):
    raw = _params(tmp_path, properties=[
        {"type": "eos", "vol_start": 0.9, "vol_end": 1.1, "vol_step": 0.05},
        {"type": "elastic"}, {"type": "vacancy"}, {"type": "interstitial", "insert_ele": ["Cu"]},
        {"type": "surface", "min_slab_size": 10, "min_vacuum_size": 10, "static-opt": True}])
    p = parse_test_params(raw, tmp_path)
    assert p.relaxation.dofs == (True, True, True)
    cals = {q.type: q.cal.dofs for q in p.properties}
    assert cals == {"eos": (True, True, False), "elastic": (True, False, False),
                    "vacancy": (True, True, True), "interstitial": (True, True, True),
                    "surface": (False, False, False)}
    assert p.properties[1].params == {"norm_deform": 1e-2, "shear_deform": 1e-2}
    assert p.properties[4].params["max_miller"] == 2
    assert [i.role for i in p.interactions] == ["model"]


@pytest.mark.parametrize(("over", "message"), [
    ({"properties": [{"type": "eos", "vol_start": 0.9, "vol_end": 1.1, "vol_stp": 0.05}]},
     "unknown key 'vol_stp' at properties[0].vol_stp: did you mean 'vol_step'?"),
    ({"properties": [{"type": "gamma"}]}, "property 'gamma' is not supported yet"),
    ({"properties": [{"type": "eos", "vol_start": 1.1, "vol_end": 0.9, "vol_step": 0.05}]},
     "vol_end 0.9 ≤ vol_start 1.1"),
    ({"structures": ["nothing/*"]}, "'nothing/*' matches no directory holding a POSCAR at structures[0]"),
    ({"interaction": {"type": "emt", "type_map": ["Ag"]}}, "the structures hold ['Cu'], not in type_map"),
    ({"interaction": {"type": "deepmd", "model": "missing.pb", "type_map": {"Cu": 0}}},
     "missing.pb not found"),
    ({"interaction": {"type": "vasp2"}}, "got 'vasp2' at interaction.type"),
    ({"relaxation": {"cal_setting": {"input_prop": "in.lammps"}}}, "'input_prop' is not supported yet"),
])
def test_config_errors_name_the_key(tmp_path, over, message):
    with pytest.raises(UserError) as exc:
        parse_test_params(_params(tmp_path, **over), tmp_path)
    assert message in exc.value.line()


def test_bad_param_through_the_cli_exits_2_and_writes_nothing(tmp_path):
    work = workdir(tmp_path, [{"type": "eos", "vol_start": 0.9, "vol_end": 1.1, "vol_stp": 0.05}])
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    res = dpgen("test", "test.json", "machine.json", cwd=work)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: unknown key 'vol_stp' at test.json: properties[0].vol_stp: did you mean 'vol_step'?"]
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before
    res = dpgen("autotest", "run", "test.json", cwd=work)  # the DP-GEN alias; run needs a machine
    assert res.returncode == 2 and "error:" in res.stderr


def test_engines_refuse_relaxations_they_cannot_do(tmp_path):
    raw = _params(tmp_path, interaction={"type": "pwscf", "fp_pp_files": ["Cu.pbe-kjpaw.UPF"],
                                         "fp_pp_path": "/usr/share/espresso/pseudo"})
    raw["relaxation"] = {"cal_setting": {"relax_pos": False, "relax_shape": True, "relax_vol": True}}
    if not Path("/usr/share/espresso/pseudo/Cu.pbe-kjpaw.UPF").is_file():
        pytest.skip("Debian's QE pseudopotentials are not installed")
    with pytest.raises(UserError, match="pwscf cannot relax with relax_pos=false"):
        parse_test_params(raw, tmp_path)


def test_cp2k_relaxes_positions_or_everything(tmp_path):
    """GEO_OPT (positions) and CELL_OPT (everything); EOS's default keeps the volume: refused."""
    raw = _params(tmp_path, interaction={"type": "cp2k"})
    raw["properties"] = [{"type": "elastic"}, {"type": "vacancy"}]
    assert len(parse_test_params(raw, tmp_path).properties) == 2
    raw["properties"].append({"type": "eos", "vol_start": 0.9, "vol_end": 1.1, "vol_step": 0.05})
    with pytest.raises(UserError, match="cp2k cannot relax with relax_pos=true, relax_shape=true, "
                                        "relax_vol=false at properties.2..cal_setting"):
        parse_test_params(raw, tmp_path)


# ----- planning (no engine) ------------------------------------------------------------------


def test_eos_volumes_leave_the_end_out_as_dpgen():
    assert volumes(0.9, 1.1, 0.05) == [0.9, 0.95, 1.0, 1.05]
    absolute = {"vol_start": 10.0, "vol_end": 12.5, "vol_step": 1.0, "vol_abs": True}
    plans = Eos(absolute, ("Cu",)).plans(cu_system())
    vpa = [abs(np.linalg.det(p.structure["cells"][0])) / 4 for p in plans]
    np.testing.assert_allclose(vpa, [10.0, 11.0, 12.0])


def test_elastic_plans_24_pure_strains():
    plans = Elastic({"norm_deform": 0.01, "shear_deform": 0.02}, ("Cu",)).plans(cu_system())
    assert len(plans) == 24
    strains = np.array([p["strain"] for p in (q.meta for q in plans)])
    assert np.isclose(np.abs(strains).max(), 0.02)  # tensor strain components, as pymatgen and DP-GEN
    assert all(np.count_nonzero(np.abs(s) > 1e-9) in (1, 2) for s in strains)


def test_defect_sites_of_fcc():
    sites = interstitial_sites(cu_system(a=3.6))
    assert [np.round(r, 3) for _, r in sites] == [1.8, 1.559]  # octahedral a/2, tetrahedral a√3/4
    vac = Vacancy({"supercell": [2, 2, 2]}, ("Cu",)).plans(cu_system())
    assert len(vac) == 1 and vac[0].structure.get_natoms() == 31
    inter = Interstitial({"supercell": [1, 1, 1], "insert_ele": ["Cu"], "conf_filters": {"min_dist": 1.7}},
                         ("Cu",)).plans(cu_system())
    assert [p.meta["label"] for p in inter] == ["Cu@site0"] and inter[0].structure.get_natoms() == 5


def test_surface_plans_one_slab_per_termination():
    params = {"max_miller": 1, "min_slab_size": 8, "min_vacuum_size": 10, "pert_xz": 0.01}
    plans = Surface(params, ("Cu",)).plans(cu_system())
    flat = Surface({**params, "pert_xz": 0.0}, ("Cu",)).plans(cu_system())
    assert sorted(p.meta["label"] for p in plans) == ["[1, 0, 0]", "[1, 1, 0]", "[1, 1, 1]"]
    for p, q in zip(plans, flat):  # DP-GEN's pert_xz: c tilted along x
        dc = p.structure["cells"][0] - q.structure["cells"][0]
        np.testing.assert_allclose(dc, [[0, 0, 0], [0, 0, 0], [0.01, 0, 0]], atol=1e-12)
        assert p.meta["area"] == pytest.approx(np.linalg.norm(np.cross(*q.structure["cells"][0][:2])))


def test_lammps_rotation_and_relax_commands():
    cell = bulk("Cu", "fcc", a=3.6).cell.array  # primitive: not lower triangular
    lower, rot = lower_triangular(cell)
    np.testing.assert_allclose(lower @ rot, cell, atol=1e-12)
    assert np.allclose(np.triu(lower, 1), 0) and np.all(np.diag(lower) > 0)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    m = Minimize()
    assert relax_commands((False, False, False), m) == ["run             0"]
    assert any("box/relax tri" in c for c in relax_commands((True, True, True), m))
    assert not any("box/relax" in c for c in relax_commands((True, True, False), m))  # as DP-GEN
    assert any("box/relax iso" in c for c in relax_commands((True, False, True), m))


# ----- EMT against ASE -----------------------------------------------------------------------


def ase_relaxed_cu() -> tuple[float, float]:
    """(lattice constant, energy per atom) of fcc Cu with EMT, relaxed by ASE directly."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = EMT()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-6)
    return float(atoms.cell[0, 0]), atoms.get_potential_energy() / len(atoms)


def ase_elastic(a: float, eps: float = 0.005) -> dict[str, float]:
    def stress(strain: np.ndarray) -> np.ndarray:
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        atoms.calc = EMT()
        return atoms.get_stress(voigt=False) * 160.21766208

    e_xx = np.zeros((3, 3))
    e_xx[0, 0] = eps
    e_yz = np.zeros((3, 3))
    e_yz[1, 2] = e_yz[2, 1] = eps / 2  # engineering shear eps
    s_p, s_m = stress(e_xx), stress(-e_xx)
    t_p, t_m = stress(e_yz), stress(-e_yz)
    return {"C11": (s_p[0, 0] - s_m[0, 0]) / (2 * eps), "C12": (s_p[1, 1] - s_m[1, 1]) / (2 * eps),
            "C44": (t_p[1, 2] - t_m[1, 2]) / (2 * eps)}


def ase_vacancy(a: float, e_bulk: float) -> float:
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
    del atoms[0]
    atoms.calc = EMT()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=FMAX)
    return atoms.get_potential_energy() - len(atoms) * e_bulk


def ase_surface_111(a: float, e_bulk: float, layers: int) -> float:
    slab = fcc111("Cu", size=(1, 1, layers), a=a, vacuum=8.0, periodic=True)
    slab.calc = EMT()
    area = np.linalg.norm(np.cross(slab.cell[0], slab.cell[1]))
    return (slab.get_potential_energy() - len(slab) * e_bulk) / (2 * area) * 16.021766208


@pytest.mark.engine
def test_emt_properties_agree_with_ase(tmp_path):
    """EMT as both model and reference through `dpgen test` (ASE driver tasks on the Shell machine)
    against ASE's direct computation: lattice, EOS (V0, B0), C11/C12/C44, vacancy, (111) surface."""
    vols = {"vol_start": 0.94, "vol_end": 1.07, "vol_step": 0.02}
    work = workdir(tmp_path, [
        {"type": "eos", **vols},
        {"type": "elastic", "norm_deform": 0.005, "shear_deform": 0.005},
        {"type": "vacancy", "supercell": [2, 2, 2], "cal_setting": {"fmax": FMAX}},
        {"type": "surface", "min_slab_size": 10, "min_vacuum_size": 12, "max_miller": 1,
         "cal_type": "static"},
    ])
    res = dpgen("test", "test.json", "machine.json", cwd=work)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((work / "test_report.json").read_text())["structures"][0]
    assert report["problems"] == {"model": {}, "reference": {}}
    model = report["results"]["model"]
    assert model == report["results"]["reference"]  # same engine, same tasks: identical numbers

    a_ref, e_ref = ase_relaxed_cu()
    a = (4 * model["relaxation"]["volume_per_atom"]) ** (1 / 3)
    assert a == pytest.approx(a_ref, rel=1e-4)
    assert model["relaxation"]["energy_per_atom"] == pytest.approx(e_ref, abs=1e-5)

    # EOS: the same relative volumes around ASE's own minimum, fitted the same way
    rel = volumes(vols["vol_start"], vols["vol_end"], vols["vol_step"])
    v_ase, e_ase = [], []
    for v in rel:
        atoms = bulk("Cu", "fcc", a=a_ref * v ** (1 / 3), cubic=True)
        atoms.calc = EMT()
        v_ase.append(atoms.get_volume() / 4)
        e_ase.append(atoms.get_potential_energy() / 4)
    v0, _, b0 = EquationOfState(v_ase, e_ase, eos="birchmurnaghan").fit()
    fit = model["eos"]["fit"]
    assert fit["V0"] == pytest.approx(v0, rel=1e-4)
    assert fit["B0"] == pytest.approx(b0 * 160.21766208, rel=5e-3)

    c = np.array(model["elastic"]["elastic_tensor"])
    direct = ase_elastic(a_ref)
    assert c[0, 0] == pytest.approx(direct["C11"], rel=0.01)
    assert c[0, 1] == pytest.approx(direct["C12"], rel=0.01)
    assert c[3, 3] == pytest.approx(direct["C44"], rel=0.01)
    assert model["elastic"]["BV"] == pytest.approx((c[0, 0] + 2 * c[0, 1]) / 3, rel=1e-6)

    (vac,) = model["vacancy"].values()
    assert vac["formation_energy"] == pytest.approx(ase_vacancy(a_ref, e_ref), abs=5e-3)

    (s111,) = [v for v in model["surface"].values() if v["miller"] == [1, 1, 1]]
    layers = round(s111["natoms"] / (s111["area"] / (np.sqrt(3) / 4 * a_ref**2)))
    assert s111["surface_energy"] == pytest.approx(ase_surface_111(a_ref, e_ref, layers), rel=5e-3)

    # the files DP-GEN users look at, the table and the plot
    conf = work / "confs" / "std-fcc"
    for d in ("eos_00", "elastic_00", "vacancy_00", "surface_00", "reference/eos_00"):
        assert json.loads((conf / d / "result.json").read_text())
        assert (conf / d / "result.out").read_text().startswith("conf_dir: ")
    assert (conf / "relaxation" / "relax_task" / "CONTCAR").is_file()
    assert (conf / "eos_00" / "eos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rel. error" in res.stdout and "C44 (GPa)" in res.stdout and "+0.00%" in res.stdout


# ----- resume and stale outputs ----------------------------------------------------------------

WRAPPER = """#!/bin/bash
echo "start $PWD" >> {log}
"$@"; rc=$?
echo "end $PWD" >> {log}
exit $rc
"""


@pytest.mark.engine
def test_sigkill_then_resume_runs_no_task_twice(tmp_path):
    """`dpgen test` killed while its property tasks run; the rerun finishes without running any
    task a second time (each start is logged by a wrapper in the machine's command)."""
    work = workdir(tmp_path, [{"type": "elastic"}], reference=False)
    log = work / "calls.log"
    wrapper = work / "counted"
    wrapper.write_text(WRAPPER.format(log=log))
    wrapper.chmod(0o755)
    m = json.loads((work / "machine.json").read_text())
    m["fp"]["command"] = f"{wrapper} {m['fp']['command']}"
    # one job runs the 24 deformations one after another; the wrapper logs each as it ends
    m["fp"]["resources"].update(group_size=50, para_deg=1)
    write_json(work / "machine.json", m)
    proc = subprocess.Popen([sys.executable, "-m", "dpgen_ng.cli", "test", "test.json", "machine.json"],
                            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ended() -> int:
        return sum(1 for ln in log.read_text().splitlines() if ln.startswith("end ")) if log.exists() else 0

    deadline = time.time() + 120
    while time.time() < deadline and ended() < 4:  # the relaxation and 3 deformations
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = ended()
    assert 4 <= done < 25, f"the kill came too late to test anything ({done} tasks ended)"
    res = dpgen("test", "test.json", "machine.json", cwd=work)
    assert res.returncode == 0, res.stdout + res.stderr
    starts = [ln.split(" ", 1)[1] for ln in log.read_text().splitlines() if ln.startswith("start ")]
    assert len(starts) == 25 and len(set(starts)) == 25, sorted(starts)  # relaxation + 24 deformations
    assert "C11 (GPa)" in res.stdout


@pytest.mark.engine
def test_stale_outputs_are_never_read(tmp_path):
    """DP-GEN users got false results from outputs left by an earlier make. Here: a changed param
    without a new run, a hand-edited input, and a re-make that shrinks the task list."""
    eos = {"type": "eos", "vol_start": 0.95, "vol_end": 1.06, "vol_step": 0.01}
    work = workdir(tmp_path, [eos], reference=False)
    assert dpgen("test", "test.json", "machine.json", cwd=work).returncode == 0
    group = work / "confs" / "std-fcc" / "eos_00"
    assert len(list(group.glob("task.*"))) == 11 and (group / "result.json").is_file()

    # 1. the param changes (other volumes), but only post is run: the old outputs are refused
    param = json.loads((work / "test.json").read_text())
    param["properties"][0]["vol_start"] = 0.96
    write_json(work / "test.json", param)
    res = dpgen("test", "post", "test.json", cwd=work)
    assert res.returncode == 1
    assert "stale: the outputs were made from other inputs" in res.stdout
    assert not (group / "result.json").exists()  # no old result left to be mistaken for a new one

    # 2. make: changed tasks lose their outputs, surplus task dirs go; run + post work again
    assert dpgen("test", "make", "test.json", cwd=work).returncode == 0
    tasks = sorted(group.glob("task.*"))
    assert len(tasks) == 10 and not any((t / "dpgen_task.rc").exists() for t in tasks)
    assert dpgen("test", "run", "test.json", "machine.json", cwd=work).returncode == 0
    res = dpgen("test", "post", "test.json", cwd=work)
    assert res.returncode == 0, res.stdout + res.stderr
    vols = json.loads((group / "result.json").read_text())["volume_per_atom"]
    assert len(vols) == 10

    # 3. an input edited by hand after the run: that task (and so the property) is refused
    poscar = tasks[3] / "POSCAR"
    poscar.write_text(poscar.read_text().replace("Cu", "Cu ", 1))
    res = dpgen("test", "post", "test.json", cwd=work)
    assert res.returncode == 1 and "task.000003: missing_output: stale" in res.stdout


def test_vasp_reference_in_dpgen_keys_gets_isif_per_calculation(tmp_path):
    """DP-GEN's VASP interaction keys (incar, potcar_prefix, potcars); `make` writes each task's
    INCAR with the ISIF of its cal_setting (VASP cannot run here: inputs only)."""
    (tmp_path / "INCAR").write_text("ENCUT = 400\nKSPACING = 0.3\nKGAMMA = .TRUE.\nISIF = 2\n")
    (tmp_path / "POTCAR_Cu").write_text("fake POTCAR of Cu\n")
    cu_conf(tmp_path)
    write_json(tmp_path / "test.json", {
        "structures": ["confs/*"],
        "interaction": {"type": "vasp", "incar": str(tmp_path / "INCAR"), "potcar_prefix": str(tmp_path),
                        "potcars": {"Cu": "POTCAR_Cu"}},
        "properties": [{"type": "eos", "vol_start": 0.98, "vol_end": 1.01, "vol_step": 0.01}]})
    res = dpgen("test", "make", "test.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    relax = tmp_path / "confs" / "std-fcc" / "relaxation" / "relax_task"
    incar = (relax / "INCAR").read_text()
    assert "ISIF = 3" in incar and "ISIF = 2" not in incar and "NSW = 5000" in incar
    assert (relax / "POTCAR").read_text() == "fake POTCAR of Cu\n" and (relax / "KPOINTS").is_file()
    assert not (tmp_path / "confs" / "std-fcc" / "eos_00").exists()  # made once the relaxation ran


@pytest.mark.engine
@pytest.mark.slow
def test_pwscf_reference_runs_for_real(tmp_path):
    """pw.x as the reference on its own machine section (the model, EMT, keeps `fp`): a vc-relax
    cut short at 3 steps (pw.x exits 3: a result, flagged not converged) and a static EOS whose
    energies are pw.x's own (read back with ASE). Coarse settings: this checks the plumbing."""
    upf = Path("/usr/share/espresso/pseudo/Cu.pbe-kjpaw.UPF")
    if not upf.is_file() or shutil.which("pw.x") is None:
        pytest.skip("pw.x / Debian's QE pseudopotentials are not installed")
    conf = tmp_path / "confs" / "prim"
    conf.mkdir(parents=True)
    write(conf / "POSCAR", bulk("Cu", "fcc", a=3.7), format="vasp", direct=True)
    m = json.loads(CU_MACHINE.read_text())
    m["fp_pwscf"] = json.loads((ROOT / "examples" / "cu" / "machine-pwscf.json").read_text())["fp"]
    for section in ("fp", "fp_pwscf"):
        m[section]["check_interval"] = 0.2
    write_json(tmp_path / "machine.json", m)
    pw = {"system": {"ecutwfc": 20, "ecutrho": 160, "occupations": "smearing", "smearing": "mv",
                     "degauss": 0.03}, "kspacing": 0.6}
    param = {"structures": ["confs/*"], "interaction": {"type": "emt"},
             "reference": {"type": "pwscf", "fp_pp_files": [upf.name], "user_fp_params": pw},
             "relaxation": {"cal_setting": {"maxiter": 3, "fmax": 0.001}},
             "properties": [{"type": "eos", "vol_start": 0.97, "vol_end": 1.04, "vol_step": 0.03,
                             "cal_type": "static"}]}
    write_json(tmp_path / "test.json", param)
    res = dpgen("check", "test.json", "machine.json", cwd=tmp_path)
    assert res.returncode == 2 and "would both run with the command of machine section 'fp'" in res.stderr
    param["reference"]["machine"] = "fp_pwscf"
    write_json(tmp_path / "test.json", param)
    res = dpgen("test", "test.json", "machine.json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ref = json.loads((tmp_path / "test_report.json").read_text())["structures"][0]["results"]["reference"]
    assert ref["relaxation"]["converged"] is False  # stopped at nstep = 3
    notes = json.loads((tmp_path / "test_report.json").read_text())["structures"][0]["notes"]
    assert notes["reference"]["relaxation"] == "not converged (stopped at maxiter)"
    assert "reference: not converged (stopped at maxiter)" in res.stdout
    assert ref["relaxation"]["volume_per_atom"] != pytest.approx(3.7**3 / 4, rel=1e-3)  # the cell moved
    tasks = sorted((conf / "reference" / "eos_00").glob("task.*"))
    assert len(tasks) == len(ref["eos"]["energy_per_atom"]) == 3
    from ase.io import read

    for task, epa in zip(tasks, ref["eos"]["energy_per_atom"]):
        energy = read(task / "pw.out", format="espresso-out").get_potential_energy()
        assert epa == pytest.approx(energy, rel=1e-6)  # dpdata's and ASE's Ry differ in the 8th digit


def test_start_confs_path_and_skip(tmp_path):
    """Properties start from <start_confs_path>/<conf>/relaxation/relax_task/CONTCAR (so `make`
    can write them before any run); a property with skip: true is left out."""
    cu_conf(tmp_path)
    start = tmp_path / "old" / "std-fcc" / "relaxation" / "relax_task"
    start.mkdir(parents=True)
    write(start / "CONTCAR", bulk("Cu", "fcc", a=3.5, cubic=True), format="vasp", direct=True)
    write_json(tmp_path / "test.json", {
        "structures": ["confs/*"], "interaction": {"type": "emt"},
        "properties": [{"type": "eos", "vol_start": 0.99, "vol_end": 1.02, "vol_step": 0.01,
                        "start_confs_path": "old"},
                       {"type": "vacancy", "skip": True}]})
    res = dpgen("test", "make", "test.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    conf = tmp_path / "confs" / "std-fcc"
    tasks = sorted((conf / "eos_00").glob("task.*"))
    cells = [dpdata.System(str(t / "POSCAR"), fmt="vasp/poscar")["cells"][0] for t in tasks]
    vols = [abs(np.linalg.det(c)) for c in cells]
    np.testing.assert_allclose(vols, [3.5**3 * v for v in (0.99, 1.0, 1.01)])
    assert not (conf / "vacancy_00").exists()
