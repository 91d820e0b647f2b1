"""`dpgen collect`: init data and every iteration's labels into one deepmd/npy or HDF5 set."""

from __future__ import annotations

import json

import dpdata
import numpy as np
from click.testing import CliRunner

from dpgen_ng.cli import main
from tests.conftest import fake_deepmd


def _job(tmp_path):
    """A run's work dir: init data (3 frames of CH4) and labels of two iterations, system 0 (CH4)
    in both and system 1 (CH3) in the second; formula dirs as our fp stage writes them."""
    job = tmp_path / "job"
    fake_deepmd(job / "init" / "ch4", nframes=3)
    fake_deepmd(job / "iter.000000" / "02.fp" / "data.000" / "C1H4", nframes=2)
    fake_deepmd(job / "iter.000001" / "02.fp" / "data.000" / "C1H4", nframes=4)
    fake_deepmd(job / "iter.000001" / "02.fp" / "data.001" / "C1H3", types=(1, 0, 0, 0), nframes=5)
    (job / "iter.000001" / "02.fp" / "failed.000").mkdir()  # failed labels are not collected
    (job / "param.json").write_text(json.dumps({"init_data_prefix": "", "init_data_sys": ["init/ch4"]}))
    return job


def _frames(path):
    return dpdata.LabeledSystem(str(path), fmt="deepmd/npy").get_nframes()


def test_collect_npy_by_system_and_merged(tmp_path):
    job = _job(tmp_path)
    res = CliRunner().invoke(main, ["collect", str(job), str(tmp_path / "out"), "-v"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["init.000", "sys.000", "sys.001"]
    assert [_frames(tmp_path / "out" / n) for n in ("init.000", "sys.000", "sys.001")] == [3, 6, 5]
    assert "collected 14 frames in 3 systems" in res.output
    # the labels are the iterations' own, in order (iteration 0 first)
    first = np.load(job / "iter.000000" / "02.fp" / "data.000" / "C1H4" / "set.000" / "energy.npy")
    got = dpdata.LabeledSystem(str(tmp_path / "out" / "sys.000"), fmt="deepmd/npy")["energies"]
    assert np.allclose(got[:2], first)
    res = CliRunner().invoke(main, ["collect", str(job), str(tmp_path / "merged"), "-m"])
    assert res.exit_code == 0, res.output
    # dpdata's formulas, in type_map order
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == ["init.000", "sys.H3C1", "sys.H4C1"]


def test_collect_hdf5_shuffled_is_deterministic(tmp_path):
    job = _job(tmp_path)
    out = []
    for name in ("a.h5", "b.h5"):
        res = CliRunner().invoke(main, ["collect", str(job), str(tmp_path / name), "--hdf5", "-s"])
        assert res.exit_code == 0, res.output
        ms = dpdata.MultiSystems().from_deepmd_hdf5(str(tmp_path / name))
        assert ms.get_nframes() == 14
        out.append(dpdata.LabeledSystem(f"{tmp_path / name}#sys.000", fmt="deepmd/hdf5")["energies"])
    assert np.array_equal(out[0], out[1])  # one seed, one order
    plain = dpdata.LabeledSystem(str(job / "iter.000000" / "02.fp" / "data.000" / "C1H4"), fmt="deepmd/npy")
    assert not np.array_equal(out[0][:2], plain["energies"])  # shuffled


def test_collect_refuses_to_write_over_files_and_missing_init(tmp_path):
    job = _job(tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    res = CliRunner().invoke(main, ["collect", str(job), str(tmp_path / "busy")])
    assert res.exit_code == 2 and "exists and is not empty" in res.output
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    (job / "param.json").write_text(json.dumps({"init_data_sys": ["nope"]}))
    res = CliRunner().invoke(main, ["collect", str(job), str(tmp_path / "out")])
    assert res.exit_code == 2 and "init_data_sys[0]" in res.output and not (tmp_path / "out").exists()
