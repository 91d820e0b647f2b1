"""init_bulk: crystals and site placement, the DP-GEN layout, relax → perturb → AIMD → collect
with EMT (end to end) and with real xtb on CH4, incomplete MD left out, resume after SIGKILL."""

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
from ase.calculators.emt import EMT

from dpgen_ng.config.init import parse_init_params
from dpgen_ng.config.machine import parse_machine
from dpgen_ng.errors import UserError
from dpgen_ng.initbulk.bulk import init_bulk
from dpgen_ng.initbulk.crystal import compositions, place_elements, supercell_sites
from tests.conftest import EXAMPLE, ROOT, write_json

CU = ROOT / "examples" / "cu"


@pytest.mark.parametrize("cell_type,n,nn", [
    ("sc", 1, 1.0), ("bcc", 2, np.sqrt(3) / 2), ("fcc", 4, 1 / np.sqrt(2)), ("diamond", 8, np.sqrt(3) / 4),
    ("hcp", 2, 1.0)])
def test_unit_cells_sites_and_nearest_neighbours(cell_type, n, nn):
    cell, sites = supercell_sites(cell_type, 1.0, (1, 1, 1))
    assert len(sites) == n
    big, many = supercell_sites(cell_type, 1.0, (3, 3, 3))
    assert len(many) == 27 * n and np.allclose(big, 3 * cell)
    frac = many @ np.linalg.inv(big)
    d = frac[:, None] - frac[None]
    d -= np.round(d)
    dist = np.linalg.norm(d @ big, axis=-1)
    assert np.min(dist[dist > 1e-9]) == pytest.approx(nn, rel=1e-9)


def test_compositions_hand_counted():
    assert compositions(4, 1) == [(4,)]
    assert compositions(4, 2) == [(3, 1), (2, 2), (1, 3)]
    assert len(compositions(4, 3)) == 3  # (2,1,1) (1,2,1) (1,1,2)
    assert len(compositions(8, 2)) == 7
    assert compositions(2, 3) == []


def test_place_elements_every_composition_on_the_sites():
    placed = place_elements("fcc", 4.0, (1, 1, 1), ("Al", "Mg"), np.random.default_rng(0))
    assert [c for c, _ in placed] == [(3, 1), (2, 2), (1, 3)]
    _, sites = supercell_sites("fcc", 4.0, (1, 1, 1))
    for counts, s in placed:
        assert s["atom_numbs"] == list(counts) and s["atom_names"] == ["Al", "Mg"]
        # the same sites, only the species differ
        assert sorted(map(tuple, np.round(s["coords"][0], 6))) == sorted(map(tuple, np.round(sites, 6)))
    again = place_elements("fcc", 4.0, (1, 1, 1), ("Al", "Mg"), np.random.default_rng(0))
    assert all(np.array_equal(a["coords"], b["coords"]) for (_, a), (_, b) in zip(placed, again))


def test_init_config_errors(tmp_path):
    raw = json.loads((CU / "init.json").read_text())
    with pytest.raises(UserError, match="cell_type"):
        parse_init_params({k: v for k, v in raw.items() if k != "cell_type"}, tmp_path)
    (tmp_path / "POTCAR").write_text("Cu\n")
    (tmp_path / "INCAR_md").write_text("IBRION = 0\nNSW = 5\n")
    vasp_md_only = {**raw, "init_fp_style": "vasp", "potcars": [str(tmp_path / "POTCAR")],
                    "md_incar": str(tmp_path / "INCAR_md")}
    with pytest.raises(UserError, match="cannot run stage 1"):  # no relax_incar
        parse_init_params(vasp_md_only, tmp_path)
    with pytest.raises(UserError, match="init_surf key"):
        parse_init_params({**raw, "layer_numb": 3}, tmp_path)
    with pytest.raises(UserError, match="type_map .* differs from elements"):
        parse_init_params({**raw, "type_map": ["Cu", "Ag"]}, tmp_path)
    with pytest.raises(UserError, match="belongs to init_fp_style 'vasp', not 'emt'"):
        parse_init_params({**raw, "potcars": ["POTCAR"]}, tmp_path)
    with pytest.raises(UserError, match="did you mean 'pert_numb'"):
        parse_init_params({**raw, "pert_num": 3}, tmp_path)


def cu_setup(work: Path, **changes) -> tuple[dict, dict]:
    work.mkdir(parents=True, exist_ok=True)
    raw = {**json.loads((CU / "init.json").read_text()), **changes}
    machine = json.loads((CU / "machine.json").read_text())
    machine["fp"]["command"] = sys.executable
    machine["fp"]["machine"]["remote_root"] = str(work / "remote")
    machine["fp"]["check_interval"] = 0.2
    write_json(work / "init.json", raw)
    write_json(work / "machine.json", machine)
    return raw, machine


@pytest.fixture(scope="module")
def cu_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("cu")
    raw, machine = cu_setup(work, scale=[1.0], pert_numb=3)
    report = init_bulk(parse_init_params(raw, work), work, parse_machine(machine, ("fp",)))
    return work, report


@pytest.mark.engine
def test_emt_end_to_end_layout_and_labels(cu_run):
    work, report = cu_run
    out = work / "cu.fcc.02x02x02"
    assert report["systems"] == ["sys-0032"] and report["relax"]["sys-0032"]["converged"]
    place = out / "00.place_ele" / "sys-0032"
    relaxed = dpdata.System(str(place / "CONTCAR"), fmt="vasp/poscar")
    a = np.linalg.norm(relaxed["cells"][0][0]) / 2
    assert a == pytest.approx(3.59, abs=0.02)  # EMT's fcc Cu lattice constant
    pert = out / "01.scale_pert" / "sys-0032" / "scale-1.000"
    assert sorted(p.name for p in pert.iterdir()) == ["000000", "000001", "000002", "000003"]
    frame0 = dpdata.System(str(pert / "000000" / "POSCAR"), fmt="vasp/poscar")
    assert np.allclose(frame0["cells"], relaxed["cells"]) and np.allclose(frame0["coords"], relaxed["coords"])
    md = out / "02.md" / "sys-0032"
    assert (md / "scale-1.000" / "000002" / "traj.extxyz").is_file()
    data = dpdata.LabeledSystem(str(md / "deepmd"), fmt="deepmd/npy")
    assert data.get_nframes() == 4 * 10 and report["collected"]["sys-0032"]["frames"] == 40
    # the labels are EMT's own numbers
    atoms = data.to("ase/structure")[17]
    atoms.calc = EMT()
    assert atoms.get_potential_energy() == pytest.approx(data["energies"][17], abs=1e-6)
    assert np.allclose(atoms.get_forces(), data["forces"][17], atol=1e-6)


@pytest.mark.engine
def test_collect_leaves_out_incomplete_md(cu_run, tmp_path):
    work, _ = cu_run
    copy = tmp_path / "w"
    shutil.copytree(work, copy, symlinks=True)
    traj = copy / "cu.fcc.02x02x02" / "02.md" / "sys-0032" / "scale-1.000" / "000001" / "traj.extxyz"
    frames = traj.read_text().split("\n32\n")
    traj.write_text("\n32\n".join(frames[:5]) + "\n")  # an AIMD cut short: 5 of 10 steps
    raw, machine = cu_setup(copy, scale=[1.0], pert_numb=3, stages=[4])
    report = init_bulk(parse_init_params(raw, copy), copy, parse_machine(machine, ("fp",)))
    assert report["collected"]["sys-0032"] == {"frames": 30, "tasks_left_out": 1}


@pytest.mark.engine
def test_xtb_relax_and_md_on_ch4(tmp_path):
    shutil.copy(EXAMPLE / "CH4.POSCAR", tmp_path)
    raw = {**json.loads((EXAMPLE / "init.json").read_text()), "stages": [1, 2, 3, 4], "skip_relax": False,
           "pert_numb": 2, "md_nstep": 5, "md_dt": 0.5}
    machine = json.loads((EXAMPLE / "machine.json").read_text())
    machine["fp"]["machine"]["remote_root"] = str(tmp_path / "remote")
    report = init_bulk(parse_init_params(raw, tmp_path), tmp_path, parse_machine(machine, ("fp",)))
    assert report["relax"]["sys-0004-0001"]["converged"]
    out = tmp_path / "CH4.POSCAR.01x01x01"
    relaxed = dpdata.System(str(out / "00.place_ele" / "sys-0004-0001" / "CONTCAR"), fmt="vasp/poscar",
                            type_map=["H", "C"])
    ch = np.linalg.norm(relaxed["coords"][0][:4] - relaxed["coords"][0][4], axis=1)
    assert np.allclose(ch, 1.09, atol=0.02)  # GFN2 C-H bond length
    data = dpdata.LabeledSystem(str(out / "02.md" / "sys-0004-0001" / "deepmd"), fmt="deepmd/npy")
    assert data.get_nframes() == 3 * 5
    assert np.all(np.isfinite(data["forces"]))


@pytest.mark.engine
def test_init_bulk_resumes_after_sigkill(tmp_path):
    def setup(work: Path) -> None:
        cu_setup(work, scale=[1.0, 1.02], pert_numb=3)
        machine = json.loads((work / "machine.json").read_text())
        wrapper = work / "counted"
        log = work / "calls.log"
        wrapper.write_text('#!/bin/bash\n'
                           f'echo "start $(md5sum < POSCAR | cut -c1-12) $*" >> {log}\nexec "$@"\n')
        wrapper.chmod(0o755)
        machine["fp"]["command"] = f"{wrapper} {sys.executable}"
        machine["fp"]["resources"]["group_size"] = 1
        write_json(work / "machine.json", machine)

    def cli(work: Path) -> subprocess.Popen:
        argv = [sys.executable, "-m", "dpgen_ng.cli", "init_bulk", "init.json", "machine.json"]
        return subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    ref, work = tmp_path / "ref", tmp_path / "killed"
    setup(ref)
    assert cli(ref).wait() == 0
    setup(work)
    proc = cli(work)
    deadline = time.monotonic() + 120
    log = work / "calls.log"
    # the relaxation and at least 4 of the 10 AIMD runs have started
    while not (log.exists() and len(log.read_text().splitlines()) >= 5):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert cli(work).wait() == 0
    calls = log.read_text().splitlines()
    assert len(calls) == len(set(calls)) == len((ref / "calls.log").read_text().splitlines())
    data = Path("cu.fcc.02x02x02") / "02.md" / "sys-0032" / "deepmd"
    a = dpdata.LabeledSystem(str(work / data), fmt="deepmd/npy")
    b = dpdata.LabeledSystem(str(ref / data), fmt="deepmd/npy")
    assert np.array_equal(a["coords"], b["coords"]) and np.array_equal(a["forces"], b["forces"])


def test_cu_examples_pass_check(tmp_path):
    """The run param with the data and configurations init_bulk would make (check reads them)."""
    from tests.conftest import fake_confs, fake_deepmd

    shutil.copytree(CU, tmp_path, dirs_exist_ok=True)
    out = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "check", "param.json", "machine.json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and "init_data_sys[0]" in out.stderr  # before init_bulk
    fake_deepmd(tmp_path / "cu.fcc.02x02x02" / "02.md" / "sys-0032" / "deepmd", ("Cu",), (0,) * 32)
    pert = "cu.fcc.02x02x02/01.scale_pert/sys-0032/scale-1.000"
    fake_confs(tmp_path, CU / "confs" / "std-fcc" / "POSCAR", f"{pert}/000000", f"{pert}/000001")
    for param, machine in (("param.json", "machine.json"), ("init.json", "machine.json"),
                           ("init-pwscf.json", "machine-pwscf.json")):
        out = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", "check", param, machine], cwd=tmp_path,
                             capture_output=True, text=True)
        assert out.returncode == 0, (param, out.stderr)


@pytest.mark.engine
def test_cp2k_geo_opt_and_md_on_ch4(tmp_path):
    """Real CP2K: GEO_OPT of CH4 (5 steps at most), then a 2-step NVT AIMD, collected."""
    shutil.copy(EXAMPLE / "CH4.POSCAR", tmp_path)
    raw = {**json.loads((EXAMPLE / "init.json").read_text()), "stages": [1, 2, 3, 4], "skip_relax": False,
           "pert_numb": 0, "md_nstep": 2, "md_dt": 0.5, "init_fp_style": "cp2k", "relax_steps": 5,
           "user_fp_params": {"FORCE_EVAL": {"DFT": {"MGRID": {"CUTOFF": 200, "REL_CUTOFF": 30}}}}}
    raw.pop("fp_params")
    machine = json.loads((EXAMPLE / "machine-cp2k.json").read_text())
    machine["fp"]["machine"]["remote_root"] = str(tmp_path / "remote")
    report = init_bulk(parse_init_params(raw, tmp_path), tmp_path, parse_machine(machine, ("fp",)))
    out = tmp_path / "CH4.POSCAR.01x01x01"
    text = (out / "00.place_ele" / "sys-0004-0001" / "input.inp").read_text()
    assert "RUN_TYPE CELL_OPT" in text and "&CELL_OPT" in text
    relaxed = dpdata.System(str(out / "00.place_ele" / "sys-0004-0001" / "CONTCAR"), fmt="vasp/poscar",
                            type_map=["H", "C"])
    ch = np.linalg.norm(relaxed["coords"][0][:4] - relaxed["coords"][0][4], axis=1)
    assert np.all(np.abs(ch - 1.095) < 0.03)  # PBE C-H (the start was 1.09 Å)
    md_input = (out / "02.md" / "sys-0004-0001" / "scale-1.000" / "000000" / "input.inp").read_text()
    assert "RUN_TYPE MD" in md_input and "ENSEMBLE NVT" in md_input and "STEPS 2" in md_input
    assert report["collected"]["sys-0004-0001"] == {"frames": 2, "tasks_left_out": 0}
    data = dpdata.LabeledSystem(str(out / "02.md" / "sys-0004-0001" / "deepmd"), fmt="deepmd/npy")
    assert np.allclose(data["energies"], -219.7, atol=1.0)
    assert np.abs(data["forces"].sum(axis=1)).max() < 0.05


@pytest.mark.engine
def test_pwscf_relax_and_md_on_ch4(tmp_path):
    """Real pw.x: a 2-step relaxation (unconverged on purpose: pw.x exits 3, which is a result)
    then a 2-step MD (nosym), collected."""
    shutil.copy(EXAMPLE / "CH4.POSCAR", tmp_path)
    raw = {**json.loads((EXAMPLE / "init.json").read_text()), "stages": [1, 2, 3, 4], "skip_relax": False,
           "pert_numb": 0, "md_nstep": 2, "md_dt": 0.5, "init_fp_style": "pwscf", "relax_steps": 2,
           "relax_cell": False, "fp_pp_files": ["H.pbe-kjpaw.UPF", "C.pbe-n-kjpaw_psl.0.1.UPF"],
           "user_fp_params": {"system": {"ecutwfc": 25, "ecutrho": 200}, "electrons": {"conv_thr": 1e-6}}}
    raw.pop("fp_params")
    machine = json.loads((EXAMPLE / "machine.json").read_text())
    machine["fp"]["command"] = "pw.x"
    machine["fp"]["machine"]["remote_root"] = str(tmp_path / "remote")
    machine["fp"]["machine"]["retry_count"] = 0
    report = init_bulk(parse_init_params(raw, tmp_path), tmp_path, parse_machine(machine, ("fp",)))
    assert report["relax"]["sys-0004-0001"] == {"converged": False}
    out = tmp_path / "CH4.POSCAR.01x01x01"
    assert "calculation = 'relax'" in (out / "00.place_ele" / "sys-0004-0001" / "pw.in").read_text()
    md_in = (out / "02.md" / "sys-0004-0001" / "scale-1.000" / "000000" / "pw.in").read_text()
    assert "calculation = 'md'" in md_in and "nosym = .true." in md_in and "&ions" in md_in
    assert report["collected"]["sys-0004-0001"] == {"frames": 2, "tasks_left_out": 0}
    data = dpdata.LabeledSystem(str(out / "02.md" / "sys-0004-0001" / "deepmd"), fmt="deepmd/npy")
    assert np.allclose(data["energies"], -315.0, atol=1.0)


@pytest.mark.engine
def test_venv_dpgen_called_by_path_without_the_venv_on_path(tmp_path):
    """A cron job or batch script calls .venv/bin/dpgen by its path, with a PATH where the first
    python3 is the system's (no dpgen_ng there): dpgen puts its own bin dir first on the PATH its
    local jobs see, so the example's `python3` command runs the EMT driver under the venv's Python
    and every task is labeled."""
    work = tmp_path / "w"
    raw, machine = cu_setup(work, scale=[1.0], pert_numb=2, stages=[1, 2])
    machine["fp"]["command"] = "python3"  # as in examples/cu/machine.json
    write_json(work / "machine.json", machine)
    dpgen_bin = Path(sys.executable).parent / "dpgen"
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    assert subprocess.run(["python3", "-c", "import dpgen_ng"], env=env, cwd=work,
                          capture_output=True).returncode != 0
    out = subprocess.run([str(dpgen_bin), "init_bulk", "init.json", "machine.json"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["relax"]["sys-0032"]["converged"], report
