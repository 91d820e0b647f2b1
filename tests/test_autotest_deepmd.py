"""`dpgen test` with a real DeePMD model in LAMMPS (a tiny Cu model trained here on EMT frames)
against EMT: the LAMMPS numbers must be the model's own (checked with DeePMD-kit's Python
inference), in the frame of the POSCAR even for a cell LAMMPS has to rotate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dpdata
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from dpgen_ng.autotest.lammps import DeepmdLammps
from tests.conftest import write_json
from tests.test_autotest import CU_MACHINE, dpgen

pytestmark = [pytest.mark.engine, pytest.mark.slow]

TRAIN = {
    "model": {"type_map": ["Cu"],
              "descriptor": {"type": "se_e2_a", "sel": [60], "rcut": 4.5, "rcut_smth": 2.0, "neuron": [8, 16],
                             "axis_neuron": 4, "resnet_dt": False, "seed": 1},
              "fitting_net": {"neuron": [16, 16], "resnet_dt": True, "seed": 1}},
    "learning_rate": {"type": "exp", "start_lr": 0.003, "stop_lr": 1e-4, "decay_steps": 50},
    "loss": {"type": "ener", "start_pref_e": 1, "limit_pref_e": 1, "start_pref_f": 10, "limit_pref_f": 1,
             "start_pref_v": 0.1, "limit_pref_v": 0.1},
    "training": {"training_data": {"systems": ["data"], "batch_size": 2}, "numb_steps": 400, "seed": 1,
                 "disp_file": "lcurve.out", "disp_freq": 100, "save_freq": 400},
}


@pytest.fixture(scope="module")
def cu_model(tmp_path_factory) -> Path:
    """A frozen TF model of fcc Cu fitted to 40 EMT frames (strained, rattled 32-atom cells)."""
    d = tmp_path_factory.mktemp("cu-model")
    rng = np.random.default_rng(0)
    data = None
    for scale in np.linspace(0.96, 1.04, 10):
        for _ in range(4):
            atoms = bulk("Cu", "fcc", a=3.59 * scale, cubic=True).repeat((2, 2, 2))
            atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.01, (3, 3))), scale_atoms=True)
            atoms.positions += rng.normal(0, 0.04, atoms.positions.shape)
            atoms.calc = EMT()
            frame = dpdata.LabeledSystem(atoms, fmt="ase/structure", type_map=["Cu"])
            data = frame if data is None else data + frame
    data.to("deepmd/npy", str(d / "data"), set_size=data.get_nframes())
    write_json(d / "input.json", TRAIN)
    for cmd in (["dp", "--tf", "train", "input.json"], ["dp", "--tf", "freeze", "-o", "cu.pb"]):
        res = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
    return d / "cu.pb"


def deeppot_energy(model: Path, system: dpdata.System) -> tuple[float, np.ndarray, np.ndarray]:
    from deepmd.infer import DeepPot

    e, f, v = DeepPot(str(model)).eval(system["coords"].reshape(1, -1), system["cells"].reshape(1, -1),
                                       system["atom_types"])
    return float(np.ravel(e)[0]), f.reshape(-1, 3), v.reshape(3, 3)


def test_lammps_labels_are_the_models_in_the_poscar_frame(cu_model, tmp_path):
    """A rattled primitive fcc cell (LAMMPS must rotate it): energy, forces and virial from
    LAMMPS, rotated back, equal DeePMD-kit's Python inference on the POSCAR as given."""
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=3)
    system = dpdata.System(atoms, fmt="ase/structure", type_map=["Cu"])
    job = DeepmdLammps(cu_model, ("Cu",)).jobs({"relax_pos": False})["single"]
    job.write(system, tmp_path)
    res = subprocess.run(job.command("lmp"), shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    labels = job.parse(tmp_path)
    e, f, v = deeppot_energy(cu_model, system)
    assert labels["energies"][0] == pytest.approx(e, abs=1e-8)
    np.testing.assert_allclose(labels["forces"][0], f, atol=1e-8)
    np.testing.assert_allclose(labels["virials"][0], v, atol=1e-5)  # LAMMPS prints the pressure in bar
    np.testing.assert_allclose(labels["cells"][0], system["cells"][0], atol=1e-9)


def test_dpgen_test_deepmd_in_lammps_against_emt(cu_model, tmp_path):
    conf = tmp_path / "confs" / "prim-fcc"
    conf.mkdir(parents=True)
    write(conf / "POSCAR", bulk("Cu", "fcc", a=3.6), format="vasp", direct=True)
    m = json.loads(CU_MACHINE.read_text())
    for stage in ("model_devi", "fp"):
        m[stage]["check_interval"] = 0.2
    write_json(tmp_path / "machine.json", m)
    write_json(tmp_path / "test.json", {
        "structures": ["confs/*"],
        "interaction": {"type": "deepmd", "model": str(cu_model), "type_map": {"Cu": 0},
                        "deepmd_version": "3.2"},
        "reference": {"type": "emt"},
        "properties": [{"type": "eos", "vol_start": 0.94, "vol_end": 1.07, "vol_step": 0.03},
                       {"type": "vacancy", "supercell": [2, 2, 2]}]})
    res = dpgen("test", "test.json", "machine.json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((tmp_path / "test_report.json").read_text())["structures"][0]
    assert report["problems"] == {"model": {}, "reference": {}}
    model, ref = report["results"]["model"], report["results"]["reference"]

    # every EOS point is the model's own energy of the task's structure
    eos = model["eos"]
    tasks = sorted((conf / "eos_00").glob("task.*"))
    assert len(tasks) == len(eos["energy_per_atom"]) == 5
    for task, epa in zip(tasks, eos["energy_per_atom"]):
        final = dpdata.System(str(task / "POSCAR"), fmt="vasp/poscar", type_map=["Cu"])
        e, _, _ = deeppot_energy(cu_model, final)
        assert epa == pytest.approx(e, abs=1e-6)

    # the model learnt EMT's Cu: the compared numbers are close (a loose bound: a 400-step model)
    vpa = ref["relaxation"]["volume_per_atom"]
    assert model["relaxation"]["volume_per_atom"] == pytest.approx(vpa, rel=0.03)
    assert eos["fit"]["V0"] == pytest.approx(ref["eos"]["fit"]["V0"], rel=0.03)
    rows = {(r["property"], r["quantity"]): r for r in report["rows"]}
    assert rows[("eos", "B0 (GPa)")]["rel_error"] is not None
    assert ("vacancy", "E_vac Cu0 (eV)") in rows
    assert "deepmd" in res.stdout and "rel. error" in res.stdout
    assert (conf / "relaxation" / "relax_task" / "in.lammps").is_file()
    assert (conf / "reference" / "relaxation" / "relax_task" / "driver.json").is_file()
