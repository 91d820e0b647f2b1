"""ABACUS (fp_style abacus). ABACUS cannot run here: inputs are checked against DP-GEN's, parsing
runs on the real outputs of tests/data/abacus (DP-GEN's test data), failure cases are edited
copies of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import dpdata
import numpy as np
import pytest

from dpgen_ng.dispatch.runner import RC_FILE
from dpgen_ng.errors import UserError
from dpgen_ng.fp import Failure
from tests.conftest import DATA
from tests.test_labelers import labeler, run_labels

ABACUS = DATA / "abacus"
GOOD = ("task.001.000000", "task.001.000001")  # converged SCFs (ABACUS 2.x, plane waves, CH4)
STOPPED = "task.001.000002"  # ABACUS 3.1 quit at setup: "The structure is unreasonable!"
PP = ["H_ONCV_PBE-1.0.upf", "C_ONCV_PBE-1.0.upf"]
HEADERS = ("ATOMIC_SPECIES", "NUMERICAL_ORBITAL", "NUMERICAL_DESCRIPTOR", "LATTICE_CONSTANT",
           "LATTICE_VECTORS", "ATOMIC_POSITIONS")
# the user_fp_params of DP-GEN's methane example for ABACUS (tests/generator/param-methane-abacus.json)
DPGEN_PARAMS = {"ecutwfc": 80, "scf_thr": 1e-07, "scf_nmax": 50, "basis_type": "pw", "gamma_only": 1,
                "_kspacing": 0.04, "dft_functional": "pbe", "mixing_type": "pulay", "mixing_beta": 0.4,
                "symmetry": 1, "nbands": 5, "nspin": 1, "ks_solver": "cg", "smearing_method": "fixed",
                "smearing_sigma": 0.001, "cal_force": 1, "cal_stress": 1, "deepks_out_labels": 0,
                "deepks_descriptor_lmax": 0, "deepks_scf": 0, "deepks_model": "model.ptg"}


@pytest.fixture
def pp(tmp_path: Path) -> Path:
    """fp_pp_path with stand-ins for the pseudopotential, orbital and DeePKS files."""
    d = tmp_path / "pp"
    d.mkdir()
    for name in (*PP, "H.orb", "C.orb", "jle.orb", "model.ptg"):
        (d / name).write_text(f"{name}\n")
    return d


def raw(pp: Path, **extra) -> dict:
    return {"fp_pp_path": str(pp), "fp_pp_files": PP, **extra}


def frame(task: str) -> dpdata.System:
    return dpdata.System(str(ABACUS / task / "POSCAR"), fmt="vasp/poscar", type_map=["H", "C"])


def written(lab, frame_: dpdata.System, tmp_path: Path, name: str = "task") -> Path:
    task = tmp_path / name
    task.mkdir()
    lab.write_inputs(frame_, task)
    return task


def copy_task(tmp_path: Path, task: str) -> Path:
    return Path(shutil.copytree(ABACUS / task, tmp_path / task))


def blocks(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() in HEADERS:
            out[line.strip()] = cur = []
        elif line.strip():
            cur.append(line)
    return out


# ----- (1) inputs as DP-GEN writes them -----------------------------------------------------


@pytest.mark.parametrize("task", [*GOOD, STOPPED])
def test_inputs_match_dpgen_fixture(tmp_path, pp, task):
    """The fixture's frame with its own INPUT as fp_incar: INPUT, KPT, STRU as in DP-GEN's task
    dir. Differences, all from today's DP-GEN: the ``calculation scf`` line, nbands printed as an
    integer, and in STRU real masses (the fixture's 1.00) and dpdata's move flags 1 1 1."""
    lab = labeler("abacus", raw(pp, fp_incar=str(ABACUS / task / "INPUT")))
    out = written(lab, frame(task), tmp_path)
    ref = (ABACUS / task / "INPUT").read_text().splitlines()
    expect = [ref[0], "calculation scf", *("nbands 5" if ln == "nbands 5.000000" else ln for ln in ref[1:])]
    assert (out / "INPUT").read_text().splitlines() == expect
    assert (out / "KPT").read_bytes() == (ABACUS / task / "KPT").read_bytes()  # "1 1 1 0 0 0 ", no newline
    mine, theirs = blocks((out / "STRU").read_text()), blocks((ABACUS / task / "STRU").read_text())
    assert mine.keys() == theirs.keys()
    assert [ln.split()[::2] for ln in mine["ATOMIC_SPECIES"]] == [["H", PP[0]], ["C", PP[1]]]
    assert [ln.split()[::2] for ln in theirs["ATOMIC_SPECIES"]] == [["H", PP[0]], ["C", PP[1]]]
    assert [float(ln.split()[1]) for ln in mine["ATOMIC_SPECIES"]] == pytest.approx([1.008, 12.011])
    assert float(mine["LATTICE_CONSTANT"][0]) == pytest.approx(float(theirs["LATTICE_CONSTANT"][0]), rel=1e-9)
    assert mine["LATTICE_VECTORS"] == theirs["LATTICE_VECTORS"]
    def coords(lines: list[str]) -> list:  # an atom's line: x y z and move flags (which differ)
        return [(ln.split()[:3] if len(ln.split()) == 6 else ln) for ln in lines]
    assert coords(mine["ATOMIC_POSITIONS"]) == coords(theirs["ATOMIC_POSITIONS"])
    ours, fixture = (dpdata.System(str(p), fmt="abacus/stru") for p in (out / "STRU", ABACUS / task / "STRU"))
    assert ours["atom_names"] == fixture["atom_names"] and ours["pp_files"] == fixture["pp_files"]
    assert np.allclose(ours["cells"], fixture["cells"], rtol=1e-9)
    assert np.allclose(ours["coords"], fixture["coords"], rtol=1e-9)
    for name in PP:  # linked into the task, sent with it
        assert (out / name).resolve() == (pp / name).resolve() and name in lab.forward_files()
    assert lab.forward_files()[:3] == ["INPUT", "STRU", "KPT"] and lab.command("abacus") == "abacus"
    assert "OUT.ABACUS" in lab.backward_files()


def test_dpgen_user_fp_params_formats(tmp_path, pp):
    """DP-GEN's methane example: its number formats (%f, %e, %d), ``_`` keys dropped, the DeePKS
    model linked by name (DP-GEN puts it under pporb/); with kspacing there is no KPT."""
    lab = labeler("abacus", raw(pp, user_fp_params=DPGEN_PARAMS))
    out = written(lab, frame(GOOD[0]), tmp_path)
    assert (out / "INPUT").read_text() == (
        "INPUT_PARAMETERS\ncalculation scf\necutwfc 80.000000\nscf_thr 1.000000e-07\nscf_nmax 50\n"
        "basis_type pw\ngamma_only 1\ndft_functional pbe\nmixing_type pulay\nmixing_beta 0.400000\n"
        "symmetry 1\nnbands 5\nnspin 1\nks_solver cg\nsmearing_method fixed\nsmearing_sigma 0.001000\n"
        "cal_force 1\ncal_stress 1\ndeepks_out_labels 0\ndeepks_descriptor_lmax 0\ndeepks_scf 0\n"
        "deepks_model model.ptg\n")
    assert (out / "KPT").read_text() == "K_POINTS\n0\nGamma\n1 1 1 0 0 0 "
    assert (out / "model.ptg").resolve() == (pp / "model.ptg").resolve()
    assert "model.ptg" in lab.forward_files()
    kspacing = dict(DPGEN_PARAMS, gamma_only=0, kspacing=[0.04, 0.05, 0.06])
    lab = labeler("abacus", raw(pp, user_fp_params=kspacing, k_points=[3, 3, 3, 0, 0, 0]))
    out = written(lab, frame(GOOD[0]), tmp_path, "kspacing")
    assert "kspacing 0.040000 0.050000 0.060000 " in (out / "INPUT").read_text().splitlines()
    assert not (out / "KPT").exists() and "KPT" not in lab.forward_files()


def test_kpoints_choice_and_added_force_stress(tmp_path, pp):
    """k_points gives the mesh unless gamma_only 1; fp_kpt_file is copied; cal_force and
    cal_stress 1 are added when the input does not set them (ABACUS's default is 0)."""
    (tmp_path / "KPT.mine").write_text("K_POINTS\n0\nGamma\n4 4 4 0 0 0\n")
    mesh = labeler("abacus", raw(pp, user_fp_params={"ecutwfc": 50}, k_points=[2, 3, 4, 1, 1, 1]))
    out = written(mesh, frame(GOOD[0]), tmp_path, "mesh")
    assert (out / "KPT").read_text() == "K_POINTS\n0\nGamma\n2 3 4 1 1 1 "
    added = ["ecutwfc 50.000000", "cal_force 1", "cal_stress 1"]
    assert (out / "INPUT").read_text().splitlines()[2:] == added
    gamma = labeler("abacus", raw(pp, user_fp_params={"gamma_only": True}, k_points=[2, 3, 4, 1, 1, 1]))
    assert gamma.settings.kpt == "K_POINTS\n0\nGamma\n1 1 1 0 0 0 "
    own = labeler("abacus", raw(pp, user_fp_params={"gamma_only": 0}, fp_kpt_file=str(tmp_path / "KPT.mine")))
    assert own.settings.kpt == (tmp_path / "KPT.mine").read_text()


def test_lcao_deepks_and_a_missing_species(tmp_path, pp):
    """LCAO: a NUMERICAL_ORBITAL block; DeePKS labels: the descriptor; both files linked. A frame
    without C: only H in STRU and ``ntype 1``; its labels get the full type_map back."""
    lab = labeler("abacus", raw(pp, fp_orb_files=["H.orb", "C.orb"], fp_dpks_descriptor="jle.orb",
                                user_fp_params={"ntype": 2, "basis_type": "lcao", "deepks_out_labels": 1}))
    out = written(lab, frame(GOOD[0]), tmp_path)
    stru = blocks((out / "STRU").read_text())
    assert stru["NUMERICAL_ORBITAL"] == ["H.orb", "C.orb"] and stru["NUMERICAL_DESCRIPTOR"] == ["jle.orb"]
    assert lab.forward_files() == ["INPUT", "STRU", "KPT", *PP, "H.orb", "C.orb", "jle.orb"]
    assert all((out / n).resolve() == (pp / n).resolve() for n in lab.forward_files()[3:])
    only_h = written(lab, frame(GOOD[0]).pick_atom_idx([0, 1, 2, 3]), tmp_path, "only_h")
    assert "ntype 1" in (only_h / "INPUT").read_text().splitlines()
    assert blocks((only_h / "STRU").read_text())["ATOMIC_SPECIES"] == [f"H 1.008 {PP[0]}"]
    shutil.copytree(ABACUS / GOOD[0] / "OUT.ABACUS", only_h / "OUT.ABACUS")  # 5 forces for 4 atoms
    assert lab.parse(only_h).kind == "parse_error"


# ----- (2) parsing the real outputs ---------------------------------------------------------


# what DP-GEN's post_fp made of these two tasks (tests/generator/out_data_post_fp_abacus/orig)
DPGEN_ENERGY = {GOOD[0]: -219.7924465754728, GOOD[1]: -219.7641367648340}
DPGEN_VIRIAL_XX = {GOOD[0]: 1.577361027, GOOD[1]: 0.7090754003}


@pytest.mark.parametrize("task", GOOD)
def test_parse_equals_dpdata(tmp_path, pp, task):
    d = copy_task(tmp_path, task)
    lab = labeler("abacus", raw(pp, user_fp_params={}))
    out = lab.parse(d)
    ref = dpdata.LabeledSystem(str(ABACUS / task), fmt="abacus/scf")
    assert isinstance(out, dpdata.LabeledSystem), out
    assert lab.checked(out) is out and out["atom_names"] == ["H", "C"]
    for key in ("energies", "forces", "virials", "coords", "cells"):
        assert out[key].shape == ref[key].shape and np.allclose(out[key], ref[key]), key
    assert out["energies"][0] == pytest.approx(DPGEN_ENERGY[task], abs=1e-6)
    assert out["virials"][0, 0, 0] == pytest.approx(DPGEN_VIRIAL_XX[task], rel=1e-4)  # dpdata units moved
    assert set(out.data) == {"atom_names", "atom_numbs", "atom_types", "orig", "cells", "coords",
                             "energies", "forces", "virials"}


def test_stopped_run_is_a_crash(tmp_path, pp):
    """ABACUS quit at setup (exit code 0 possible): no !FINAL_ETOT_IS, and no OUT.ABACUS/INPUT
    (which ABACUS writes only once the setup passed). dpdata finds no frame; it is a crash."""
    d = copy_task(tmp_path, STOPPED)
    assert not (d / "OUT.ABACUS" / "INPUT").exists()
    assert dpdata.LabeledSystem(str(d), fmt="abacus/scf").get_nframes() == 0
    out = labeler("abacus", raw(pp, user_fp_params={})).parse(d)
    assert isinstance(out, Failure) and out.kind == "crashed", out
    assert "The structure is unreasonable!" in out.detail


# ----- (3) failure kinds --------------------------------------------------------------------


def _edit(d: Path, old: str, new: str, name: str = "OUT.ABACUS/running_scf.log") -> None:
    text = (d / name).read_text()
    assert old in text
    (d / name).write_text(text.replace(old, new))


CONVERGED = "charge density convergence is achieved"


@pytest.mark.parametrize("edit,kind", [
    ((CONVERGED, " !! convergence has not been achieved @_@"), "unconverged"),  # ABACUS 3
    ((CONVERGED, " convergence has NOT been achieved!"), "unconverged"),  # ABACUS 2
    ((CONVERGED, " !!SCF IS NOT CONVERGED!!"), "unconverged"),  # current ABACUS (log and stdout)
    (("TOTAL  Time  : 24", " !! CONVERGENCE HAS NOT BEEN ACHIEVED !!", "output"), "unconverged"),
    (("!FINAL_ETOT_IS", "!FINAL_ETOT"), "crashed"),  # did not finish
    (("final etot is", "etot"), "parse_error"),  # no energy: dpdata reads no frame
    (("TOTAL-FORCE", "TOTAL-F0RCE"), "parse_error"),
    (("final etot is -219.792446575473 eV", "final etot is nan eV"), "non_finite"),
])
def test_failure_kinds(tmp_path, pp, edit, kind):
    d = copy_task(tmp_path, GOOD[0])
    _edit(d, *edit)
    out = labeler("abacus", raw(pp, user_fp_params={})).parse(d)
    assert isinstance(out, Failure) and out.kind == kind, out


def test_missing_log_and_failed_exit(tmp_path, pp):
    lab = labeler("abacus", raw(pp, user_fp_params={"suffix": "run1"}))
    d = copy_task(tmp_path, GOOD[0])
    assert lab.parse(d).kind == "missing_output" and "OUT.run1/running_scf.log" in lab.parse(d).detail
    (d / "OUT.ABACUS").rename(d / "OUT.run1")
    (d / "INPUT").write_text((d / "INPUT").read_text() + "suffix run1\n")  # dpdata reads it there
    assert isinstance(lab.parse(d), dpdata.LabeledSystem) and "OUT.run1" in lab.backward_files()
    (d / "OUT.run1" / "running_scf.log").write_text("")
    assert lab.parse(d).kind == "missing_output"
    stopped = copy_task(tmp_path, STOPPED)  # a non-zero exit: crashed, with ABACUS's reason
    (stopped / RC_FILE).write_text("1 0.0 1.0 tid ,\n")
    plain = labeler("abacus", raw(pp, user_fp_params={}))
    out = plain.result(stopped)
    assert out.kind == "crashed" and out.detail == "exit code 1; ABACUS: The structure is unreasonable!"
    with (stopped / "OUT.ABACUS" / "running_scf.log").open("a") as log:
        log.write(" !! convergence has not been achieved @_@\n")
    assert plain.result(stopped).kind == "unconverged"


# ----- (4) bad settings: one line naming the key --------------------------------------------


@pytest.mark.parametrize("change,key", [
    ({"fp_pp_files": PP[:1]}, "fp_pp_files"),
    ({"fp_pp_files": [PP[0], "X.upf"]}, "X.upf"),
    ({"fp_pp_path": None}, "fp_pp_path"),
    ({"user_fp_params": None}, "user_fp_params"),
    ({"fp_incar": "nope/INPUT"}, "fp_incar"),
    ({"user_fp_params": {"nspin": 3}}, "user_fp_params.nspin"),
    ({"user_fp_params": {"calculation": "relax"}}, "user_fp_params.calculation"),
    ({"user_fp_params": {"pseudo_dir": "/opt/pp"}}, "user_fp_params.pseudo_dir"),
    ({"user_fp_params": {"cal_force": 0}}, "user_fp_params.cal_force"),
    ({"user_fp_params": {"ecutwfc": "lots"}}, "user_fp_params.ecutwfc"),
    ({"user_fp_params": {"kspacing": [0.1, 0.2]}}, "user_fp_params.kspacing"),
    ({"user_fp_params": {"deepks_model": "other.ptg"}}, "user_fp_params.deepks_model"),
    ({"user_fp_params": {"gamma_only": 0}}, "k_points"),
    ({"k_points": [1, 1, 1]}, "k_points"),
    ({"fp_kpt_file": "nope/KPT"}, "fp_kpt_file"),
    ({"user_fp_params": {"basis_type": "lcao"}}, "fp_orb_files"),
    ({"user_fp_params": {"basis_type": "lcao"}, "fp_orb_files": ["H.orb"]}, "fp_orb_files"),
    ({"user_fp_params": {"deepks_scf": 1}}, "fp_dpks_descriptor"),
])
def test_bad_settings(pp, change, key):
    settings = {k: v for k, v in {**raw(pp, user_fp_params={}), **change}.items() if v is not None}
    if "fp_incar" in change:
        settings.pop("user_fp_params")
    with pytest.raises(UserError) as info:
        labeler("abacus", settings)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_user_fp_params_and_fp_incar_exclude_each_other(pp):
    with pytest.raises(UserError, match="both user_fp_params and fp_incar"):
        labeler("abacus", raw(pp, user_fp_params={}, fp_incar=str(ABACUS / GOOD[0] / "INPUT")))


# ----- (5) through the dispatcher -----------------------------------------------------------


def test_run_through_the_dispatcher_with_a_mock_abacus(tmp_path, pp):
    """A MOCK: ABACUS cannot run here, so the "abacus" command copies the fixture's outputs
    (OUT.ABACUS/, stdout) into each task. Inputs, the link of the pseudopotentials, forward and
    backward files and the result of each task go through the real dispatcher (Shell, local)."""
    lab = labeler("abacus", raw(pp, fp_incar=str(ABACUS / GOOD[0] / "INPUT")))
    src = f'{ABACUS}/task.001.$(basename "$PWD" | cut -d. -f3)'
    mock = f'cp -r "{src}/OUT.ABACUS" . && cat "{src}/output"'
    res = run_labels(tmp_path, lab, [frame(t) for t in (*GOOD, STOPPED)], mock)
    for task, out in zip(GOOD, res):
        ref = dpdata.LabeledSystem(str(ABACUS / task), fmt="abacus/scf")
        assert isinstance(out, dpdata.LabeledSystem), out
        for key in ("energies", "forces", "virials", "coords"):
            assert np.allclose(out[key], ref[key]), key
    assert isinstance(res[2], Failure) and res[2].kind == "crashed" and "unreasonable" in res[2].detail
    task0 = tmp_path / "fp" / "task.000.000000"
    assert (task0 / "output").read_text() == (ABACUS / GOOD[0] / "output").read_text()
