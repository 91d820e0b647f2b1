"""Labelers: inputs, real xtb / CP2K runs on CH4, parsing of real CP2K outputs, failure kinds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import dpdata
import numpy as np
import pytest

from dpgen_ng.config.machine import parse_stage
from dpgen_ng.dispatch import Dispatcher, TaskSpec
from dpgen_ng.fp import Failure, labeler_class
from dpgen_ng.fp.base import Relaxed
from dpgen_ng.fp.cp2k import default_input, merge
from dpgen_ng.ledger import Ledger
from dpgen_ng.xtbio import read_engrad
from tests.conftest import DATA, EXAMPLE

TYPE_MAP = ("H", "C")


def ch4(drop_h: bool = False) -> dpdata.System:
    s = dpdata.System(str(EXAMPLE / "CH4.POSCAR"), fmt="vasp/poscar", type_map=list(TYPE_MAP))
    return s.pick_atom_idx([1, 2, 3, 4]) if drop_h else s


def labeler(style: str, raw: dict | None = None):
    cls = labeler_class(style)
    return cls(cls.parse_settings(raw or {}, ""), TYPE_MAP)


def run_labels(tmp_path: Path, lab, frames: list[dpdata.System], command: str) -> list:
    """Write and run label tasks through the real dispatcher (Shell, local); return results."""
    base = tmp_path / "fp"
    specs = []
    for i, frame in enumerate(frames):
        d = base / f"task.000.{i:06d}"
        d.mkdir(parents=True)
        lab.write_inputs(frame, d)
        specs.append(TaskSpec(d.name, lab.command(command), tuple(lab.forward_files()),
                              tuple(lab.backward_files()), lab.outlog, lab.errlog))
    st = parse_stage({"command": command, "machine": {"batch_type": "Shell", "context_type": "LocalContext",
                                                      "remote_root": str(tmp_path / "remote")},
                      "resources": {"group_size": 4, "para_deg": 2, "envs": {"OMP_NUM_THREADS": 1}},
                      "check_interval": 0.2}, "fp", "fp")
    with Ledger(tmp_path) as led:
        Dispatcher(tmp_path, st, led).run(0, "fp", base, specs, allow_failures=True)
    return [lab.result(base / s.path) for s in specs]


@pytest.mark.engine
def test_xtb_labels_ch4(tmp_path):
    frames = [ch4()]
    moved = ch4()
    moved.data["coords"][0, 0] += [0.1, -0.05, 0.02]
    frames.append(moved)
    res = run_labels(tmp_path, labeler("xtb"), frames, "xtb")
    for r in res:
        assert isinstance(r, dpdata.LabeledSystem), r
        assert r["energies"][0] == pytest.approx(-4.175 * 27.2114, rel=2e-3)
        assert np.abs(r["forces"][0].sum(axis=0)).max() < 1e-3  # no net force on a free molecule
        assert r["atom_names"] == ["H", "C"]
    assert np.abs(res[0]["forces"]).max() < 0.5 < np.abs(res[1]["forces"]).max()


def test_xtb_crash_is_reported(tmp_path):
    res = run_labels(tmp_path, labeler("xtb"), [ch4()], "false")
    assert isinstance(res[0], Failure) and res[0].kind == "crashed" and "exit code 1" in res[0].detail


def test_missing_output_is_reported(tmp_path):
    res = run_labels(tmp_path, labeler("xtb"), [ch4()], "true")
    assert isinstance(res[0], Failure) and res[0].kind == "missing_output"


def test_engrad_reader(tmp_path):
    p = tmp_path / "x.engrad"
    p.write_text("#\n# atoms\n#\n2\n#\n# energy\n#\n -1.5\n#\n# grad\n#\n0.1\n0.2\n0.3\n-0.1\n-0.2\n-0.3\n"
                 "#\n# coords\n#\n1 0 0 0\n1 0 0 1.4\n")
    e, g = read_engrad(p)
    assert e == -1.5 and g.shape == (2, 3) and g[1, 2] == -0.3


def test_non_finite_rejected():
    lab = labeler("xtb")
    s = ch4()
    data = dict(s.data, energies=np.array([np.nan]), forces=np.zeros((1, 5, 3)))
    out = lab.checked(dpdata.LabeledSystem(data=data))
    assert isinstance(out, Failure) and out.kind == "non_finite"


def test_cp2k_input_defaults_merge_and_multiplicity():
    lab = labeler("cp2k", {"user_fp_params": {"force_eval": {"dft": {"mgrid": {"cutoff": 250}}}}})
    text = lab.input_text(ch4())
    assert "PRINT_LEVEL MEDIUM" in text and "RUN_TYPE ENERGY_FORCE" in text
    assert "CUTOFF 250" in text and "CUTOFF 300" not in text
    assert "MULTIPLICITY 1" in text and "UKS" not in text
    assert "&KIND H" in text and "&KIND C" in text and "@include coord.xyz" in text
    assert "A 10.0000000000 0.0000000000 0.0000000000" in text
    radical = lab.input_text(ch4(drop_h=True))  # CH3: odd electron count
    assert "MULTIPLICITY 2" in radical and "UKS .TRUE." in radical
    assert default_input() == default_input()  # never mutated by the calls above
    assert merge({"A": {"B": 1}}, {"a": {"c": 2}}) == {"A": {"B": 1, "c": 2}}


def test_cp2k_template(tmp_path):
    tpl = tmp_path / "template.inp"
    tpl.write_text("&FORCE_EVAL\n &SUBSYS\n  &CELL\n   ABC 1 1 1\n  &END CELL\n"
                   "  &COORD\n   @include coord.xyz\n  &END COORD\n &END SUBSYS\n&END FORCE_EVAL\n")
    lab = labeler("cp2k", {"external_input_path": str(tpl)})
    text = lab.input_text(ch4())
    assert "   A 10.0000000000" in text and "ABC" not in text
    tpl.write_text("&CELL\n&END\n")
    with pytest.raises(Exception, match="ABC"):
        labeler("cp2k", {"external_input_path": str(tpl)})


def test_cp2k_parses_real_outputs_like_dpdata(tmp_path):
    ref = dpdata.LabeledSystem(str(DATA / "cp2k" / "cp2k_normal_output"), fmt="cp2k/output")
    cls = labeler_class("cp2k")
    lab = cls(cls.parse_settings({}, ""), tuple(ref["atom_names"]))
    d = tmp_path / "ok"
    d.mkdir()
    shutil.copy(DATA / "cp2k" / "cp2k_normal_output", d / "output")
    out = lab.parse(d)
    assert isinstance(out, dpdata.LabeledSystem)
    for key in ("energies", "forces", "coords", "cells"):
        assert np.allclose(out[key], ref[key]), key
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(DATA / "cp2k" / "cp2k_nocon_output", bad / "output")
    res = lab.parse(bad)
    assert isinstance(res, Failure) and res.kind == "unconverged"


@pytest.mark.engine
def test_cp2k_real_run_ch4(tmp_path):
    lab = labeler("cp2k", {"user_fp_params": {"FORCE_EVAL": {"DFT": {"MGRID": {"CUTOFF": 200,
                                                                               "REL_CUTOFF": 30}}}}})
    (res,) = run_labels(tmp_path, lab, [ch4()], "cp2k")
    assert isinstance(res, dpdata.LabeledSystem), res
    assert res["energies"][0] == pytest.approx(-8.07 * 27.2114, rel=0.02)  # PBE/DZVP CH4, ~-8.07 Ha
    assert res["forces"].shape == (1, 5, 3) and np.all(np.isfinite(res["forces"]))
    vir = res["virials"][0]  # CP2K 2023's stress block, which dpdata 1.1 does not read
    assert np.allclose(vir, vir.T, atol=1e-4) and np.trace(vir) > 0


def test_cp2k_basis_and_potential_files_travel_with_the_task(tmp_path):
    pp = tmp_path / "pp"
    pp.mkdir()
    for name in ("BASIS_MOLOPT", "GTH_POTENTIALS"):
        (pp / name).write_text(f"{name}\n")
    dft = {"BASIS_SET_FILE_NAME": "BASIS_MOLOPT", "POTENTIAL_FILE_NAME": "GTH_POTENTIALS"}
    lab = labeler("cp2k", {"fp_pp_path": str(pp), "fp_pp_files": ["BASIS_MOLOPT", "GTH_POTENTIALS"],
                           "user_fp_params": {"FORCE_EVAL": {"DFT": dft}}})
    task = tmp_path / "task"
    task.mkdir()
    lab.write_inputs(ch4(), task)
    assert lab.forward_files() == ["input.inp", "coord.xyz", "BASIS_MOLOPT", "GTH_POTENTIALS"]
    assert (task / "BASIS_MOLOPT").read_text() == "BASIS_MOLOPT\n"
    assert "BASIS_SET_FILE_NAME BASIS_MOLOPT" in (task / "input.inp").read_text()
    with pytest.raises(Exception, match="NOPE"):
        labeler("cp2k", {"fp_pp_path": str(pp), "fp_pp_files": ["NOPE"]})


def test_cp2k_dpgen_kind_lists_expand_to_one_section_each():
    lab = labeler("cp2k", {"user_fp_params": {"FORCE_EVAL": {"SUBSYS": {"KIND": {
        "_": ["C", "H"], "POTENTIAL": ["GTH-PBE-q4", "GTH-PBE-q1"], "BASIS_SET": ["DZVP-MOLOPT-GTH"] * 2}}}}})
    text = lab.input_text(ch4())
    assert "&KIND C\n      POTENTIAL GTH-PBE-q4" in text and "&KIND H\n      POTENTIAL GTH-PBE-q1" in text


def _cp2k_in(task: Path, command: str) -> None:
    out = subprocess.run(f"{command} > output 2> cp2k.err", shell=True, cwd=task,
                         env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert out.returncode == 0, (task / "cp2k.err").read_text()[-2000:]


@pytest.mark.engine
@pytest.mark.parametrize("cell", [False, True], ids=["geo_opt", "cell_opt"])
def test_cp2k_relaxation_labels_equal_a_single_point(tmp_path, cell):
    """`dpgen test` takes a CP2K relaxation's energy, forces and virial from its last force
    evaluation. They must be those of the relaxed structure: a fresh single point on the structure
    read back (its CELL_OPT cell at full precision from DPGEN-1.cell) gives the same labels."""
    lab = labeler("cp2k", {"user_fp_params": {"FORCE_EVAL": {"DFT": {"MGRID": {"CUTOFF": 200,
                                                                               "REL_CUTOFF": 30}}}}})
    start = ch4()
    start.data["cells"] = start["cells"] * 0.6
    start.data["coords"] = start["coords"] - 2.0 + np.random.default_rng(7).normal(0, 0.05, (1, 5, 3))
    job = lab.jobs({"relax_pos": True, "relax_shape": cell, "relax_vol": cell, "relax_steps": 3})["relax"]
    relax = tmp_path / "relax"
    relax.mkdir()
    job.write(start, relax)
    _cp2k_in(relax, job.command("cp2k"))
    res = job.parse(relax)
    assert isinstance(res, Relaxed) and not res.converged and res.final is not None, res
    moved = np.abs(res.structure["cells"][0] - start["cells"][0]).max()
    assert (moved > 1e-4) if cell else (moved == 0)  # CELL| lines in the output have 3 decimals only

    single = tmp_path / "single"
    single.mkdir()
    lab.write_inputs(res.structure, single)
    _cp2k_in(single, lab.command("cp2k"))
    ref = lab.parse(single)
    assert isinstance(ref, dpdata.LabeledSystem), ref
    got = res.final  # measured: 2e-6 eV, 5e-6 eV/Å, 4e-5 eV (with the 3-decimal cell: 1e-5, 4e-4, 2e-4)
    assert got["energies"][0] == pytest.approx(ref["energies"][0], abs=1e-5)
    assert np.allclose(got["forces"], ref["forces"], atol=1e-4)
    assert np.allclose(got["virials"], ref["virials"], atol=1e-3)
    assert np.array_equal(got["cells"], res.structure["cells"])

    # no labels when the last evaluation's SCF failed, or when it is not the last frame's
    text = (relax / "output").read_text()
    at = text.rindex("ENERGY| Total FORCE_EVAL")
    (relax / "output").write_text(text[:at] + " *** SCF run NOT converged ***\n" + text[at:])
    assert job.parse(relax).final is None
    (relax / "output").write_text(text)
    frc = (relax / "DPGEN-frc-1.xyz").read_text().splitlines()
    (relax / "DPGEN-frc-1.xyz").write_text("\n".join(frc[:-7]) + "\n")  # the last frame (5 atoms) gone
    assert job.parse(relax).final is None


def test_cp2k_energy_line_of_old_and_new_versions():
    """CP2K before 2023 prints "energy (a.u.):" (the real fixture), Debian's 2023 "energy [a.u.]:"."""
    from dpgen_ng.fp.cp2k_motion import ENERGY

    old = (DATA / "cp2k" / "cp2k_nocon_output").read_text()
    assert [float(m.group(1)) for m in ENERGY.finditer(old)] == [-7732.736668957968504]
    assert ENERGY.search(" ENERGY| Total FORCE_EVAL ( QS ) energy [a.u.]:     -8.0558567998\n")
