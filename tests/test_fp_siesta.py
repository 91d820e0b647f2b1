"""The SIESTA labeler against DP-GEN's real SIESTA files (tests/data/siesta, see its README).

SIESTA cannot run here (no binary): inputs are compared with the .fdf DP-GEN wrote and SIESTA
echoed, labels with what dpdata reads from the real output, failures with edited copies of it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import dpdata
import numpy as np
import pytest

from dpgen_ng.dispatch.runner import RC_FILE
from dpgen_ng.errors import UserError
from dpgen_ng.fp import Failure, labeler_class, split_labeler_keys
from dpgen_ng.fp.siesta import SiestaLabeler
from tests.conftest import DATA
from tests.test_labelers import ch4, run_labels

SIESTA = DATA / "siesta"
OUTPUT = SIESTA / "output"
# fp_params of DP-GEN's test param-pyridine-siesta.json, without mixingWeight (which DP-GEN never
# writes: it tests a misspelled key) so that the .fdf is the one SIESTA read in `output`
PARAMS = {"ecut": 300, "ediff": 0.0001, "NumberPulay": 5, "kspacing": 0.5}
NUMERIC_BLOCKS = ("%block LatticeVectors", "%block AtomicCoordinatesAndAtomicSpecies")


def pp_dir(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "pp"
    d.mkdir(exist_ok=True)
    for name in names:
        (d / name).write_text(f"pseudopotential {name}\n")
    return d


def make(tmp_path: Path, type_map: tuple[str, ...] = ("H", "C"), params: dict | None = None,
         **extra: object) -> SiestaLabeler:
    files = [f"{el}.psf" for el in type_map]
    raw = {"fp_params": PARAMS if params is None else params,
           "fp_pp_path": str(pp_dir(tmp_path, *files)), "fp_pp_files": files, **extra}
    return SiestaLabeler(SiestaLabeler.parse_settings(raw, ""), type_map)


def fixture_frame(type_map: tuple[str, ...] = ("H", "C")) -> dpdata.System:
    """The CH4 frame SIESTA computed in `output`."""
    return dpdata.System(str(OUTPUT), fmt="siesta/output", type_map=list(type_map))


def echoed_fdf() -> list[str]:
    """The .fdf SIESTA read, as it echoes it in `output` (without the blank lines)."""
    lines = OUTPUT.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if "Dump of input data file" in ln)
    end = next(i for i, ln in enumerate(lines) if "End of input data file" in ln)
    return lines[start + 1:end]


def assert_same_fdf(ours: list[str], ref: list[str]) -> None:
    """Keyword lines and blocks exactly; numbers of the cell and coordinate blocks to 1e-6."""
    ours = [ln for ln in ours if ln.strip()]
    ref = [ln.rstrip() for ln in ref if ln.strip()]
    assert len(ours) == len(ref), (ours, ref)
    numeric = False
    for mine, theirs in zip(ours, ref):
        numeric = numeric and not theirs.startswith("%endblock")
        if not numeric:
            assert mine == theirs
        else:
            a, b = mine.split(), theirs.split()
            assert len(a) == len(b), (mine, theirs)
            for x, y in zip(a, b):
                if y.lstrip("-").replace(".", "", 1).isdigit() and "." in y:
                    assert float(x) == pytest.approx(float(y), abs=1e-6), (mine, theirs)
                else:
                    assert x == y, (mine, theirs)
        numeric = numeric or theirs in NUMERIC_BLOCKS


# --- (1) inputs ---------------------------------------------------------------------------------


def test_fdf_is_the_one_siesta_read(tmp_path):
    lab = make(tmp_path)
    task = tmp_path / "task"
    task.mkdir()
    lab.write_inputs(fixture_frame(), task)
    assert_same_fdf((task / "input").read_text().splitlines(), echoed_fdf())
    assert lab.command("mpirun -np 4 siesta") == "mpirun -np 4 siesta < input"
    assert lab.forward_files() == ["input", "H.psf", "C.psf"]
    assert lab.backward_files() == ["output", "siesta.err"]
    for el in ("H", "C"):  # linked under the name SIESTA opens, sent with the task
        assert (task / f"{el}.psf").is_symlink()
        assert (task / f"{el}.psf").read_text() == f"pseudopotential {el}.psf\n"
    assert (task / "POSCAR").is_file()


def test_fdf_header_is_dpgen_input(tmp_path):
    """DP-GEN's own check of its fixture `input`: everything up to the species block (a C, H, N
    frame as in DP-GEN's test), and the lattice vectors."""
    ref = (SIESTA / "input").read_text().splitlines()
    rows = ref[ref.index("%block LatticeVectors") + 1:][:3]
    cell = np.array([[float(x) for x in ln.split()] for ln in rows])
    frame = dpdata.System(data={
        "atom_names": ["C", "H", "N"], "atom_numbs": [2, 2, 2], "atom_types": np.array([0, 1, 2, 2, 0, 1]),
        "orig": np.zeros(3), "cells": cell[None], "coords": np.random.default_rng(0).random((1, 6, 3)) * 9,
    })
    ours = make(tmp_path, ("C", "H", "N")).input_text(frame).splitlines()
    head = ref.index("%endblock Chemical_Species_label") + 1
    assert ours[:head] == ref[:head]
    lat = ref.index("%block LatticeVectors")
    assert_same_fdf(ours[ours.index("%block LatticeVectors") - 1:][:5], ref[lat - 1:lat + 4])


def test_fdf_options_species_and_pseudopotential_names(tmp_path):
    pp = pp_dir(tmp_path, "H.lda.psf", "C.psml")
    raw = {"user_fp_params": {"mixingWeight": 0.05}, "fp_pp_path": str(pp),
           "fp_pp_files": ["H.lda.psf", "C.psml"]}
    lab = SiestaLabeler(SiestaLabeler.parse_settings(raw, ""), ("H", "C"))
    text = lab.input_text(ch4())
    assert "DM.MixingWeight       0.050000" in text.splitlines()
    assert "kgrid" not in text and "MeshCutoff" not in text  # not given: SIESTA's defaults
    assert lab.forward_files() == ["input", "H.psf", "C.psml"]
    task = tmp_path / "task"
    task.mkdir()
    lab.write_inputs(ch4(), task)
    assert (task / "H.psf").resolve() == (pp / "H.lda.psf").resolve()
    assert (task / "C.psml").resolve() == (pp / "C.psml").resolve()
    # species: only those present, numbered in type_map order (dpdata's reader needs it)
    lines = make(tmp_path, ("N", "H", "C")).input_text(ch4()).splitlines()
    assert "NumberOfSpecies   2" in lines
    block = lines[lines.index("%block Chemical_Species_label") + 1:][:3]
    assert block == ["1\t1\tH", "2\t6\tC", "%endblock Chemical_Species_label"]
    coords = lines[lines.index("%block AtomicCoordinatesAndAtomicSpecies") + 1:][:5]
    assert sorted(" ".join(ln.split()[3:]) for ln in coords) == ["1 H"] * 4 + ["2 C"]


# --- (2) labels ---------------------------------------------------------------------------------


def task_with(tmp_path: Path, text: str | None, rc: int | None = None) -> Path:
    task = tmp_path / "task.000.000000"
    task.mkdir(exist_ok=True)
    if text is not None:
        (task / "output").write_text(text)
    if rc is not None:
        (task / RC_FILE).write_text(f"{rc} 0.0 1.0 {task.name} ,\n")
    return task


@pytest.mark.parametrize("type_map", [("H", "C"), ("C", "H", "N")])
def test_parse_equals_dpdata(tmp_path, type_map):
    lab = make(tmp_path, type_map)
    got = lab.parse(task_with(tmp_path, OUTPUT.read_text()))
    assert isinstance(got, dpdata.LabeledSystem)
    assert lab.checked(got) is got
    ref = dpdata.LabeledSystem(str(OUTPUT), fmt="siesta/output", type_map=list(type_map))
    assert got["atom_names"] == list(type_map)
    np.testing.assert_array_equal(got["atom_types"], ref["atom_types"])
    for key in ("cells", "coords", "energies", "forces", "virials"):
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=0)
    assert got["energies"][0] == pytest.approx(-218.9717)  # siesta: E_KS(eV)
    np.testing.assert_allclose(got["forces"][0, 1], [1.400511, 0.672157, -0.366370])
    assert got["virials"][0, 0, 0] == pytest.approx(0.001699 * 995.608463, rel=1e-5)  # stress × volume


# --- (3) failures -------------------------------------------------------------------------------


def _cut(text: str, at: str) -> str:
    return text[:text.index(at)]


GOOD = OUTPUT.read_text() if OUTPUT.is_file() else ""
WARN = "SCF_NOT_CONV: SCF did not converge  in maximum number of steps.\n"
FATAL = ("SCF_NOT_CONV: SCF did not converge in maximum number of steps (required).\n"
         "ABNORMAL_TERMINATION\nStopping Program from Node:    0\n")
CASES: dict[str, tuple[Callable[[str], str | None], int | None, str]] = {
    "no output": (lambda t: None, None, "missing_output"),
    "empty output": (lambda t: "", None, "missing_output"),
    "not converged, went on (SCF.MustConverge F)": (
        lambda t: t.replace("siesta: E_KS(eV) =", WARN + "siesta: E_KS(eV) =", 1), None, "unconverged"),
    "not converged, died": (lambda t: _cut(t, "siesta: E_KS(eV) =") + FATAL, 1, "unconverged"),
    "out of wall time": (lambda t: _cut(t, "siesta: E_KS(eV) =") + WARN + "OUT_OF_TIME: Time is up.\n",
                         1, "crashed"),
    "killed, exit code": (lambda t: _cut(t, "siesta: Atomic forces"), 137, "crashed"),
    "stopped early, exit code 0": (lambda t: _cut(t, "siesta: Stress tensor"), None, "crashed"),
    "no energy": (lambda t: t.replace("siesta: E_KS(eV) =", "siesta: E_??(eV) ="), None, "parse_error"),
    "no species": (lambda t: "\n".join(ln for ln in t.splitlines() if "Species number:" not in ln),
                   None, "parse_error"),
    "two runs appended": (lambda t: t + t, None, "parse_error"),
    "NaN force": (lambda t: t.replace("-0.039435   -0.873040", "NaN   -0.873040", 1), None, "non_finite"),
    "NaN energy": (lambda t: t.replace("E_KS(eV) =             -218.9717", "E_KS(eV) =             NaN"),
                   None, "non_finite"),
}


@pytest.mark.parametrize("case", CASES)
def test_failure_kinds(tmp_path, case):
    edit, rc, kind = CASES[case]
    lab = make(tmp_path)
    task = task_with(tmp_path, edit(GOOD), rc)
    got = lab.result(task) if rc is not None else lab.parse(task)
    assert isinstance(got, Failure), got
    assert got.kind == kind, got


def test_edits_apply():
    """Every failure case changes the real output (a no-op edit would test the good file)."""
    for edit, _, _ in CASES.values():
        assert edit(GOOD) != GOOD


# --- (4) settings -------------------------------------------------------------------------------


BAD = {
    "mixWeight": ({"fp_params": {"mixWeight": 0.05}}, "did you mean 'mixingWeight'"),
    "ecut": ({"fp_params": {"ecut": "300"}}, "a number"),
    "kspacing": ({"fp_params": {"kspacing": 0}}, "positive"),
    "NumberPulay": ({"fp_params": {"NumberPulay": 2.5}}, "an integer"),
    "fp_pp_files": ({"fp_pp_files": None}, "missing required key"),
    "fp_pp_files[1]": ({"fp_pp_files": ["H.psf", "N.psf"]}, "not found"),
    "fp_incar": ({"fp_incar": "INCAR"}, "unknown key"),
    "user_fp_params": ({"user_fp_params": {}}, "given twice"),
}


@pytest.mark.parametrize("key", BAD)
def test_bad_keys_are_one_line_errors(tmp_path, key):
    change, words = BAD[key]
    raw = {"fp_params": dict(PARAMS), "fp_pp_path": str(pp_dir(tmp_path, "H.psf", "C.psf")),
           "fp_pp_files": ["H.psf", "C.psf"], **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(UserError) as err:
        SiestaLabeler.parse_settings(raw, "")
    msg = str(err.value)
    assert key in msg and words in msg and "\n" not in msg


def test_settings_through_param_keys(tmp_path):
    """As param.json gives them: DP-GEN's keys are taken, the rest left to the caller."""
    raw = {"fp_style": "siesta", "type_map": ["H", "C"], "fp_params": dict(PARAMS),
           "fp_pp_path": str(pp_dir(tmp_path, "H.psf", "C.psf")), "fp_pp_files": ["H.psf", "C.psf"]}
    settings, rest, foreign = split_labeler_keys(raw, "siesta", "fp_style")
    assert set(rest) == {"fp_style", "type_map"}
    assert settings.as_json()["fp_params"] == {k: float(v) if k != "NumberPulay" else v
                                               for k, v in PARAMS.items()}
    assert labeler_class("siesta") is SiestaLabeler
    rest = split_labeler_keys({**raw, "use_clusters": False}, "siesta", "fp_style")[1]
    assert rest["use_clusters"] is False  # the run param's key, for every engine
    lab = SiestaLabeler(settings, ("H", "C", "N"))  # three types, two pseudopotentials
    with pytest.raises(UserError, match="fp_pp_files"):
        lab.write_inputs(ch4(), tmp_path)


# --- (5) through the dispatcher -----------------------------------------------------------------


def test_run_through_dispatcher_with_mock_siesta(tmp_path):
    """A mock: SIESTA cannot run here. The 'siesta' command checks that the pseudopotentials came
    with the task, reads the .fdf on stdin and prints the real output of this frame."""
    lab = make(tmp_path)
    mock = ("test -s H.psf && test -s C.psf && grep -q kgrid_Monkhorst_Pack - && "
            f"cat {shlex.quote(str(OUTPUT))}")
    (res,) = run_labels(tmp_path, lab, [fixture_frame()], f"sh -c {shlex.quote(mock)}")
    assert isinstance(res, dpdata.LabeledSystem), res
    ref = dpdata.LabeledSystem(str(OUTPUT), fmt="siesta/output", type_map=["H", "C"])
    for key in ("energies", "forces", "virials"):
        np.testing.assert_allclose(res[key], ref[key], rtol=0, atol=0)
