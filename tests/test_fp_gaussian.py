"""Gaussian labeler. Gaussian cannot run here: inputs are compared with the input DP-GEN wrote for
a real task, labels with dpdata's reading of that task's real log, failures with edited copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import dpdata
import numpy as np
import pytest

from dpgen_ng.errors import UserError
from dpgen_ng.fp import Failure, labeler_class, split_labeler_keys
from dpgen_ng.fp.gaussian import auto_multiplicity
from tests.conftest import DATA
from tests.test_labelers import ch4, labeler, run_labels

FIXTURE = DATA / "gaussian"
LOG = (FIXTURE / "output").read_text()
PARAMS = {"fp_params": {"keywords": "force b3lyp/6-31g**", "nproc": 28}}  # the fixture's route
# what Gaussian prints before the SCF result and after an error (header of the real log kept)
HEAD = LOG[: LOG.index(" SCF Done")]
TAIL = (" Job cpu time:       0 days  0 hours  0 minutes  1.0 seconds.\n"
        " File lengths (MBytes):  RWF=      6 Int=      0 D2E=      0 Chk=      1 Scr=      1\n")


def fixture_frame() -> dpdata.System:
    """The CH4 frame of the fixture (C first, as DP-GEN wrote it), in type_map (H, C) order."""
    log = dpdata.LabeledSystem(str(FIXTURE / "output"), fmt="gaussian/log", type_map=["H", "C"])
    return dpdata.System(data={k: log.data[k] for k in
                               ("atom_names", "atom_numbs", "atom_types", "cells", "coords", "orig")})


def task_with(tmp_path: Path, text: str | None, name: str = "t") -> Path:
    d = tmp_path / name
    d.mkdir()
    if text is not None:
        (d / "output").write_text(text)
    return d


def test_input_matches_what_dpgen_wrote(tmp_path):
    lab = labeler("gaussian", PARAMS)
    lab.write_inputs(fixture_frame(), tmp_path)
    ours = (tmp_path / "input").read_text().splitlines()
    theirs = (FIXTURE / "input").read_text().splitlines()
    assert ours[:2] == theirs[:2] == ["%nproc=28", "#force b3lyp/6-31g**"]
    assert ours[2] == theirs[2] == "" and ours[4] == theirs[4] == ""
    # line 3 is the title (this older DP-GEN wrote "methane", today's writes "DPGEN")
    assert ours[5].split() == theirs[5].split() == ["0", "1"]  # charge 0, auto multiplicity 1 (CH4)
    atoms = [ln.split() for ln in ours[6:] if ln.strip()]
    ref = [ln.split() for ln in theirs[6:] if ln.strip()]
    assert [a[0] for a in atoms] == [r[0] for r in ref] == ["C", "H", "H", "H", "H"]
    assert np.allclose([[float(x) for x in a[1:]] for a in atoms], [[float(x) for x in r[1:]] for r in ref],
                       atol=1e-6, rtol=0)
    assert ours[-1] == "" and len(ours) == 6 + 5 + 1  # the blank line that ends the molecule
    assert (tmp_path / "POSCAR").is_file()
    assert lab.command("g16") == "g16 < input" and lab.outlog == "output"
    assert lab.forward_files() == ["input"] and lab.backward_files()[0] == "output"


def test_auto_multiplicity_and_options():
    lab = labeler("gaussian", PARAMS)
    assert lab.input_text(ch4(drop_h=True)).splitlines()[5] == "0 2"  # CH3 radical: 9 electrons
    charged = labeler("gaussian", {"fp_params": {**PARAMS["fp_params"], "charge": 1}})
    assert charged.input_text(ch4(drop_h=True)).splitlines()[5] == "1 1"  # CH3+: 8 electrons
    fixed = labeler("gaussian", {"fp_params": {**PARAMS["fp_params"], "multiplicity": 3}})
    assert fixed.input_text(ch4()).splitlines()[5] == "0 3"
    # CH4 + an O2 molecule 10 Å away: 1 + (26 electrons: even) + 2 per O2 = 3
    symbols = ["H", "H", "H", "H", "C", "O", "O"]
    coords = np.vstack([ch4()["coords"][0], [[15.0, 5.0, 5.0], [16.21, 5.0, 5.0]]])
    mult, per, labels = auto_multiplicity(symbols, coords, 0)
    assert (mult, sorted(per), len(set(labels[:5])), len(set(labels))) == (3, [1, 3], 1, 2)


def test_fragment_guesses_multi_step_and_basis():
    frame = dpdata.System(data={"atom_names": ["H", "C", "O"], "atom_numbs": [4, 1, 2],
                                "atom_types": np.array([1, 0, 0, 0, 0, 2, 2]),
                                "coords": np.array([[[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                                     [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63],
                                                     [5.0, 0, 0], [6.21, 0, 0]]], dtype=float),
                                "cells": np.eye(3)[None] * 20, "orig": np.zeros(3)})
    lab = labeler_class("gaussian")(labeler_class("gaussian").parse_settings(
        {"fp_params": {"keywords": ["force b3lyp/6-31g**", "force b3lyp/6-31g** geom=check guess=read"],
                       "nproc": 4, "fragment_guesses": True, "basis_set": "gen-basis"}}, ""), ("H", "C", "O"))
    lines = lab.input_text(frame).split("\n")
    assert lines[:7] == ["%chk=dpgen.chk", "%nproc=4", "#force b3lyp/6-31g** guess=fragment=2", "", "DPGEN",
                         "", "0 3 0 1 0 3"]
    assert lines[7] == "C(Fragment=1) 0.000000 0.000000 0.000000"
    assert lines[13] == "O(Fragment=2) 6.210000 0.000000 0.000000"
    # the custom basis after the molecule, then the second step (geometry from the checkpoint)
    assert lines[14:] == ["", "gen-basis", "", "", "--link1--", "%chk=dpgen.chk", "%nproc=4",
                          "#force b3lyp/6-31g** geom=check guess=read", "", "DPGEN", "", "0 3", "", "", ""]


def test_parse_real_output_like_dpdata(tmp_path):
    d = task_with(tmp_path, None)
    shutil.copyfile(FIXTURE / "output", d / "output")
    out = labeler("gaussian", PARAMS).parse(d)
    ref = dpdata.LabeledSystem(str(FIXTURE / "output"), fmt="gaussian/log", type_map=["H", "C"])
    assert isinstance(out, dpdata.LabeledSystem), out
    assert out["atom_names"] == ["H", "C"] and list(out["atom_types"]) == [1, 0, 0, 0, 0]
    for key in ("energies", "forces", "coords", "cells"):
        assert np.array_equal(out[key], ref[key]), key
    assert "virials" not in out.data and "virials" not in ref.data and out.nopbc  # a molecule
    assert out["energies"][0] == pytest.approx(-40.5240137309 * 27.211386, rel=1e-6)  # SCF Done, Ha→eV
    assert labeler("gaussian", PARAMS).checked(out) is out


@pytest.mark.parametrize("text,kind,words", [
    (HEAD + " Convergence failure -- run terminated.\n"
     " Error termination via Lnk1e in /soft/g16/l502.exe at Tue Jun 25 00:14:07 2019.\n" + TAIL,
     "unconverged", "Convergence failure"),
    (HEAD + " The combination of multiplicity  2 and    10 electrons is impossible.\n"
     " Error termination via Lnk1e in /soft/g16/l301.exe at Tue Jun 25 00:14:07 2019.\n" + TAIL,
     "crashed", "10 electrons is impossible. (Error termination via Lnk1e in /soft/g16/l301.exe)"),
    (LOG[: LOG.index(" Normal termination")], "crashed", "0 'Normal termination' for 1 step(s)"),
    (LOG.replace(" Center     Atomic                   Forces (Hartrees/Bohr)", " (no forces)"),
     "parse_error", "no forces"),
    (LOG.replace("-0.000000654    0.000000794", "-0.000000654    ***********"), "parse_error", "ValueError"),
    (LOG.replace("-40.5240137309", "NaN"), "non_finite", "energies"),
    ("", "missing_output", "no output"),
    (None, "missing_output", "no output"),
])
def test_failure_kinds(tmp_path, text, kind, words):
    d = task_with(tmp_path, text)
    res = labeler("gaussian", PARAMS).parse(d)
    assert isinstance(res, Failure) and res.kind == kind and words in res.detail, res
    assert "\n" not in res.detail


def test_diagnose_and_retried_log(tmp_path):
    """A nonzero exit is diagnosed from the log; a log where a retry appended a normal run is fine."""
    lab = labeler("gaussian", PARAMS)
    failed = HEAD + " Convergence failure -- run terminated.\n Error termination via Lnk1e in l502.exe.\n"
    assert lab.diagnose(task_with(tmp_path, failed, "a")).kind == "unconverged"
    assert lab.diagnose(task_with(tmp_path, LOG, "b")) is None
    assert lab.diagnose(task_with(tmp_path, None, "c")) is None  # the caller reports the exit code
    out = lab.parse(task_with(tmp_path, failed + LOG, "d"))
    assert isinstance(out, dpdata.LabeledSystem) and out["forces"].shape == (1, 5, 3)
    # two --link1-- steps: the log of the first alone (the second was killed) is not a result
    two = labeler("gaussian", {"fp_params": {**PARAMS["fp_params"], "keywords": ["force hf/3-21g"] * 2}})
    res = two.parse(task_with(tmp_path, LOG, "e"))
    assert isinstance(res, Failure) and res.kind == "crashed" and "1 'Normal termination' for 2" in res.detail
    assert isinstance(two.parse(task_with(tmp_path, LOG + "\n" + LOG, "f")), dpdata.LabeledSystem)
    # the reason of the last error, not the line "Error termination request processed by link 9999."
    stopped = (HEAD + " Optimization stopped.\n    -- Number of steps exceeded,  NStep=   1\n"
               " Error termination request processed by link 9999.\n"
               " Error termination via Lnk1e in l9999.exe.\n")
    assert lab.diagnose(task_with(tmp_path, stopped, "g")).detail == (
        "gaussian: -- Number of steps exceeded,  NStep=   1 (Error termination via Lnk1e in l9999.exe.)")


@pytest.mark.parametrize("raw,where,words", [
    ({}, "<top>", "missing required key 'fp_params'"),
    ({"fp_params": {"nproc": 4}}, "fp_params", "missing required key 'keywords'"),
    ({"fp_params": {"keywords": "b3lyp/6-31g**", "nproc": 4}}, "fp_params.keywords", "no 'force'"),
    ({"fp_params": {"keywords": "#p force b3lyp/6-31g**", "nproc": 4}}, "fp_params.keywords", "'#'"),
    ({"fp_params": {"keywords": "force hf/3-21g"}}, "fp_params", "missing required key 'nproc'"),
    ({"fp_params": {**PARAMS["fp_params"], "nproc": 0}}, "fp_params.nproc", "got 0"),
    ({"fp_params": {**PARAMS["fp_params"], "multiplicity": "high"}}, "fp_params.multiplicity", "'auto'"),
    ({"fp_params": {**PARAMS["fp_params"], "keyword": "x"}}, "fp_params.keyword", "did you mean 'keywords'"),
    ({"fp_params": {**PARAMS["fp_params"], "use_clusters": True}}, "fp_params.use_clusters",
     "'use_clusters' is not supported yet"),
    ({"fp_params": {**PARAMS["fp_params"], "keywords_high_multiplicity": "force uhf/3-21g"}},
     "fp_params.keywords_high_multiplicity", "'keywords_high_multiplicity' is not supported yet"),
    ({"fp_params": {**PARAMS["fp_params"], "fragment_guesses": True, "multiplicity": 1}},
     "fp_params.multiplicity", "fragment_guesses needs multiplicity 'auto'"),
    ({"fp_params": {**PARAMS["fp_params"], "fragment_guesses": True, "charge": 1}},
     "fp_params.charge", "is not supported yet"),
])
def test_bad_params_one_line_error(raw, where, words):
    with pytest.raises(UserError) as err:
        labeler("gaussian", raw)
    assert err.value.where == where and words in str(err.value) and "\n" not in str(err.value)


def test_param_keys_alias_and_defaults():
    settings, rest, _ = split_labeler_keys({"fp_style": "gaussian", "user_fp_params": PARAMS["fp_params"],
                                            "use_clusters": False}, "gaussian", "fp_style")
    assert rest == {"fp_style": "gaussian", "use_clusters": False}  # the run param's key (any engine)
    assert settings == labeler_class("gaussian").parse_settings(PARAMS, "")
    assert settings.as_json()["fp_params"]["multiplicity"] == "auto"
    with pytest.raises(UserError, match="given twice"):
        split_labeler_keys({**PARAMS, "user_fp_params": {}}, "gaussian", "fp_style")
    with pytest.raises(UserError, match=r"'Xx' is not an element at type_map\[1\]"):
        labeler_class("gaussian")(settings, ("H", "Xx"))


def test_run_through_dispatcher_with_mock_gaussian(tmp_path):
    """A mock: Gaussian cannot run here, so the command ``cat <fixture log> < input`` prints the
    real log on stdout (the task's ``output``), through the real dispatcher. The ``< input``
    redirection fails unless the written input was sent to the task."""
    lab = labeler("gaussian", PARAMS)
    (res,) = run_labels(tmp_path, lab, [fixture_frame()], f"cat {FIXTURE / 'output'}")
    ref = dpdata.LabeledSystem(str(FIXTURE / "output"), fmt="gaussian/log", type_map=["H", "C"])
    assert isinstance(res, dpdata.LabeledSystem), res
    assert np.array_equal(res["energies"], ref["energies"]) and np.array_equal(res["forces"], ref["forces"])
    task = tmp_path / "fp" / "task.000.000000"
    assert (task / "input").read_text().splitlines()[1] == "#force b3lyp/6-31g**"


def test_dpgen_check_accepts_gaussian(example_param):
    """``dpgen check``'s parser takes fp_style gaussian with DP-GEN's keys; cluster mode is refused."""
    from dpgen_ng.config.param import parse_run_params

    raw = {**example_param, "fp_style": "gaussian", **PARAMS, "use_clusters": False}
    assert parse_run_params(raw).fp_settings == labeler_class("gaussian").parse_settings(PARAMS, "")
    for key, value in (("use_clusters", True), ("cluster_cutoff", 3.5), ("cluster_minify", True)):
        with pytest.raises(UserError, match=f"'{key}' is not supported yet at {key}"):
            parse_run_params({**raw, key: value})
