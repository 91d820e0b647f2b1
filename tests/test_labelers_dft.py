"""VASP (cannot run here: exact inputs, real OUTCARs) and Quantum ESPRESSO (runs for real)."""

from __future__ import annotations

import shutil

import dpdata
import numpy as np
import pytest

from dpgen_ng.errors import UserError
from dpgen_ng.fp import Failure
from dpgen_ng.fp.vasp import kpoints_text, read_incar, scf_steps
from tests.conftest import DATA
from tests.test_labelers import ch4, labeler, run_labels

INCAR = "PREC = A\nENCUT = 400\nISYM = 0  # no symmetry\nKSPACING = 0.5; KGAMMA = .TRUE.\nNSW = 0\n"


@pytest.fixture
def vasp_inputs(tmp_path):
    (tmp_path / "INCAR_methane").write_text(INCAR)
    pp = tmp_path / "pp"
    pp.mkdir()
    (pp / "POTCAR_H").write_text("H potential\nEnd of Dataset\n")
    (pp / "POTCAR_C").write_text("C potential\nEnd of Dataset\n")
    return {"fp_incar": str(tmp_path / "INCAR_methane"), "fp_pp_path": str(pp),
            "fp_pp_files": ["POTCAR_H", "POTCAR_C"]}


def test_vasp_inputs_exact(tmp_path, vasp_inputs):
    lab = labeler("vasp", vasp_inputs)
    task = tmp_path / "02.fp" / "task.000.000000"
    task.mkdir(parents=True)
    lab.write_inputs(ch4(), task)
    assert (task / "INCAR").read_text() == INCAR
    # POTCAR: the elements present, in type_map order (H then C), concatenated
    assert (task / "POTCAR").read_text() == "H potential\nEnd of Dataset\nC potential\nEnd of Dataset\n"
    assert (task / "POSCAR").read_text().splitlines()[5].split() == ["H", "C"]
    # 10 Å cubic cell, KSPACING 0.5 1/Å: ceil(2π / 10 / 0.5) = 2 points per direction, Gamma-centred
    assert (task / "KPOINTS").read_text() == "Automatic mesh from KSPACING\n0\nGamma\n2 2 2\n0 0 0\n"
    assert lab.forward_files() == ["POSCAR", "INCAR", "POTCAR", "KPOINTS"]


def test_vasp_kpoints_aniso_and_monkhorst(tmp_path, vasp_inputs):
    (tmp_path / "INCAR_methane").write_text("ENCUT = 400\nKGAMMA = F\n")
    lab = labeler("vasp", dict(vasp_inputs, fp_aniso_kspacing=[0.1, 0.2, 0.7]))
    task = tmp_path / "t"
    task.mkdir()
    lab.write_inputs(ch4(), task)
    assert (task / "KPOINTS").read_text().splitlines()[2:4] == ["Monkhorst-Pack", "7 4 1"]
    # b1 = (1/3, -1.5/7.8, 0), b2 = (0, 1/2.6, 0), b3 = (0, 0, 1/5): |b| = 0.3848, 0.3846, 0.2 1/Å;
    # 2π|b|/0.3 = 8.06, 8.05, 4.19 → 9 9 5
    cell = np.array([[3.0, 0, 0], [1.5, 2.6, 0], [0, 0, 5.0]])
    assert kpoints_text(cell, (0.3, 0.3, 0.3), True).splitlines()[3] == "9 9 5"


@pytest.mark.parametrize("incar,message", [("ENCUT = 400\nKGAMMA = T\n", "KSPACING"),
                                           ("KSPACING = 0.3\n", "KGAMMA")])
def test_vasp_incar_without_kspacing_or_kgamma(tmp_path, vasp_inputs, incar, message):
    (tmp_path / "INCAR_methane").write_text(incar)
    with pytest.raises(UserError, match=message):
        labeler("vasp", vasp_inputs)


def test_vasp_missing_potcar(vasp_inputs):
    with pytest.raises(UserError, match="POTCAR_X"):
        labeler("vasp", dict(vasp_inputs, fp_pp_files=["POTCAR_H", "POTCAR_X"]))


def test_read_incar():
    assert read_incar("a = 1 ; b=2 # c = 3\n! d = 4\n") == {"A": "1", "B": "2"}


def test_vasp_outcars(tmp_path, vasp_inputs):
    """The two real OUTCARs (from dpdata's tests): ``ch4.1step`` ran with NELM = 1 and stopped at
    its first electronic step, ``ch4.unconverged`` has ionic steps that hit NELM = 15. Both are
    *unconverged* (dpdata drops them too). A copy of ``ch4.1step`` with NELM = 60 is the same
    single point, converged: it is labeled with dpdata's numbers."""
    lab = labeler("vasp", vasp_inputs)
    for name in ("OUTCAR.ch4.1step", "OUTCAR.ch4.unconverged"):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(DATA / "vasp" / name, d / "OUTCAR")
        out = lab.parse(d)
        assert isinstance(out, Failure) and out.kind == "unconverged", (name, out)
    assert scf_steps((DATA / "vasp" / "OUTCAR.ch4.unconverged").read_text())[0] == 15
    ok = tmp_path / "ok"
    ok.mkdir()
    text = (DATA / "vasp" / "OUTCAR.ch4.1step").read_text()
    (ok / "OUTCAR").write_text(text.replace("NELM   =      1;", "NELM   =     60;"))
    out = lab.parse(ok)
    ref = dpdata.LabeledSystem(str(DATA / "vasp" / "OUTCAR.ch4.1step"), fmt="vasp/outcar",
                               type_map=["H", "C"], convergence_check=False)
    assert isinstance(out, dpdata.LabeledSystem), out
    for key in ("energies", "forces", "virials", "coords", "cells"):
        assert np.allclose(out[key], ref[key]), key
    empty = tmp_path / "empty"
    empty.mkdir()
    assert lab.parse(empty).kind == "missing_output"


PW = {"user_fp_params": {"system": {"ecutwfc": 25, "ecutrho": 200}, "electrons": {"conv_thr": 1e-6}},
      "fp_pp_files": ["H.pbe-kjpaw.UPF", "C.pbe-n-kjpaw_psl.0.1.UPF"]}


def test_pwscf_input_for_dpdata():
    text = labeler("pwscf", PW).input_text(ch4())
    lines = text.splitlines()
    assert "    ibrav = 0" in lines  # alone on its line: dpdata's reader needs it
    assert "CELL_PARAMETERS angstrom" in lines and "ATOMIC_POSITIONS angstrom" in lines
    assert "H 1.0080 H.pbe-kjpaw.UPF" in lines and "K_POINTS gamma" in lines
    assert "    ecutwfc = 25" in lines and "    tprnfor = .true." in lines
    with_k = labeler("pwscf", {**PW, "user_fp_params": {"kspacing": 0.5}}).input_text(ch4())
    assert with_k.splitlines()[-2:] == ["K_POINTS automatic", "2 2 2 0 0 0"]
    with pytest.raises(UserError, match="ibrav"):
        labeler("pwscf", {**PW, "user_fp_params": {"system": {"ibrav": 1}}})


def test_pwscf_parses_real_output_like_dpdata(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    shutil.copy(DATA / "qe" / "01.in", d / "pw.in")
    shutil.copy(DATA / "qe" / "01.out", d / "pw.out")
    ref = dpdata.LabeledSystem([str(DATA / "qe" / "01.in"), str(DATA / "qe" / "01.out")], fmt="qe/pw/scf",
                               type_map=["H", "C"])
    out = labeler("pwscf", PW).parse(d)
    assert isinstance(out, dpdata.LabeledSystem)
    for key in ("energies", "forces", "virials"):
        assert np.allclose(out[key], ref[key]), key
    (d / "pw.out").write_text((DATA / "qe" / "01.out").read_text() + "\n     convergence NOT achieved\n")
    assert labeler("pwscf", PW).parse(d).kind == "unconverged"


@pytest.mark.engine
def test_pwscf_real_run_ch4(tmp_path):
    (res,) = run_labels(tmp_path, labeler("pwscf", PW), [ch4()], "pw.x")
    assert isinstance(res, dpdata.LabeledSystem), res
    assert res["energies"][0] == pytest.approx(-315.0, rel=0.01)  # PAW PBE total energy, ~ -23.15 Ry
    assert np.abs(res["forces"][0].sum(axis=0)).max() < 0.05
    assert res["virials"].shape == (1, 3, 3)


def test_vasp_init_inputs_and_md_collect(tmp_path):
    """init_bulk with VASP (DP-GEN's potcars / relax_incar / md_incar): inputs exactly, and the
    AIMD OUTCAR (3 ionic steps, 2 of them stopped at NELM) gives its one converged frame."""
    for el in "HC":
        (tmp_path / f"POTCAR_{el}").write_text(f"{el} potential\n")
    (tmp_path / "INCAR_rlx").write_text("IBRION = 2\nISIF = 3\nNSW = 50\nKSPACING = 0.5\nKGAMMA = T\n")
    (tmp_path / "INCAR_md").write_text("IBRION = 0\nNSW = 3\nPOTIM = 0.5\nKSPACING = 0.5\nKGAMMA = T\n")
    pots = [str(tmp_path / "POTCAR_H"), str(tmp_path / "POTCAR_C")]
    lab = labeler("vasp", {"potcars": pots, "relax_incar": str(tmp_path / "INCAR_rlx"),
                           "md_incar": str(tmp_path / "INCAR_md")})
    jobs = lab.jobs({"md_nstep": 10})
    assert set(jobs) == {"relax", "md"}
    task = tmp_path / "t"
    task.mkdir()
    jobs["md"].write(ch4(), task)
    assert (task / "INCAR").read_text() == (tmp_path / "INCAR_md").read_text()
    assert (task / "POTCAR").read_text() == "H potential\nC potential\n"
    shutil.copy(DATA / "vasp" / "OUTCAR.ch4.unconverged", task / "OUTCAR")
    frames = jobs["md"].parse(task)  # NSW = 3 overrides md_nstep, as in DP-GEN
    assert isinstance(frames, dpdata.LabeledSystem) and frames.get_nframes() == 1
    ref = dpdata.LabeledSystem(str(DATA / "vasp" / "OUTCAR.ch4.unconverged"), fmt="vasp/outcar",
                               type_map=["H", "C"])
    assert np.allclose(frames["energies"], ref["energies"]) and np.allclose(frames["forces"], ref["forces"])
    (tmp_path / "INCAR_md").write_text("IBRION = 0\nNSW = 5\n")
    lab5 = labeler("vasp", {"potcars": [str(tmp_path / "POTCAR_H"), str(tmp_path / "POTCAR_C")],
                            "md_incar": str(tmp_path / "INCAR_md")})
    out = lab5.jobs({})["md"].parse(task)
    assert isinstance(out, Failure) and "incomplete AIMD: 3 of 5" in out.detail
    shutil.copy(tmp_path / "t" / "POSCAR", task / "CONTCAR")
    relaxed = jobs["relax"].parse(task)
    assert relaxed.structure.get_natoms() == 5 and relaxed.converged is False
    # the labels of the last ionic step (its SCF converged: 12 < NELM), for dpgen test
    assert np.allclose(relaxed.final["energies"], ref["energies"][-1:])
    shutil.copy(DATA / "vasp" / "OUTCAR.ch4.1step", task / "OUTCAR")  # its one step stopped at NELM
    assert jobs["relax"].parse(task).final is None


def test_vasp_init_kpoints_files(tmp_path):
    """DP-GEN's relax_kpt / md_kpt: each job's KPOINTS is that file, sent with the task; without
    them no KPOINTS is written (VASP then takes KSPACING from the INCAR)."""
    (tmp_path / "POTCAR").write_text("p\n")
    for name in ("INCAR_rlx", "INCAR_md"):
        (tmp_path / name).write_text("NSW = 3\n")
    (tmp_path / "KP_rlx").write_text("relax mesh\n0\nGamma\n2 2 2\n0 0 0\n")
    (tmp_path / "KP_md").write_text("md mesh\n0\nGamma\n1 1 1\n0 0 0\n")
    raw = {"potcars": [str(tmp_path / "POTCAR")] * 2, "relax_incar": str(tmp_path / "INCAR_rlx"),
           "md_incar": str(tmp_path / "INCAR_md")}
    jobs = labeler("vasp", {**raw, "relax_kpt": str(tmp_path / "KP_rlx"),
                            "md_kpt": str(tmp_path / "KP_md")}).jobs({})
    for kind, kp in (("relax", "KP_rlx"), ("md", "KP_md")):
        task = tmp_path / kind
        task.mkdir()
        jobs[kind].write(ch4(), task)
        assert (task / "KPOINTS").read_text() == (tmp_path / kp).read_text()
        assert "KPOINTS" in jobs[kind].forward
    plain = labeler("vasp", raw).jobs({})["md"]
    (tmp_path / "plain").mkdir()
    plain.write(ch4(), tmp_path / "plain")
    assert not (tmp_path / "plain" / "KPOINTS").exists() and "KPOINTS" not in plain.forward
    with pytest.raises(UserError, match="md_kpt.*KPOINTS file"):
        labeler("vasp", {**raw, "md_kpt": str(tmp_path / "nope")})
    with pytest.raises(UserError, match="relax_kpt without relax_incar"):
        labeler("vasp", {"potcars": raw["potcars"], "relax_kpt": str(tmp_path / "KP_rlx")})
