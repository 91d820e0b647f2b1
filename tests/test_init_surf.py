"""init_surf: Cu slabs (layers, vacuum, z_min), the elongation series against hand computations,
scale/elongate/perturb paths, one-line errors for bad keys, and the EMT example end to end feeding
a run param's sys_configs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dpdata
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from dpgen_ng.config.initsurf import parse_initsurf_params
from dpgen_ng.config.machine import parse_machine
from dpgen_ng.config.param import parse_run_params
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.initsurf.slab import unit_cell
from dpgen_ng.initsurf.surf import init_surf, place
from dpgen_ng.initsurf.vacuum import elongations
from dpgen_ng.stages.model_devi import conf_paths, read_conf
from tests.conftest import ROOT

CU = ROOT / "examples" / "cu"
D111 = 3.6 / np.sqrt(3)  # fcc(111) interplanar spacing at a = 3.6 Å


def base(**changes) -> dict:
    """fcc Cu, stage 1 + 2 without relaxation (no engine run needed)."""
    raw = {"stages": [1, 2], "elements": ["Cu"], "cell_type": "fcc", "latt": 3.6, "super_cell": [1, 1, 1],
           "millers": [[1, 1, 1]], "layer_numb": 3, "vacuum_max": 3.0, "vacuum_resol": [1.0],
           "skip_relax": True, "init_fp_style": "emt", "seed": 3}
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


def planes(system: dpdata.System) -> np.ndarray:
    return np.unique(np.round(system["coords"][0][:, 2], 4))


def placed_system(tmp_path: Path, **changes) -> dpdata.System:
    params = parse_initsurf_params(base(**changes), tmp_path)
    paths, _ = place(params, tmp_path / params.out_dir_name())
    assert len(paths) == 1
    return dpdata.System(str(tmp_path / params.out_dir_name() / "00.place_ele" / paths[0] / "POSCAR"),
                         fmt="vasp/poscar", type_map=["Cu"])


def test_fcc111_slab_has_three_layers_and_the_vacuum_along_z(tmp_path):
    s = placed_system(tmp_path, vacuum_min=4.0)
    cell, z = s["cells"][0], planes(s)
    assert s.get_natoms() == 12 and len(z) == 3  # 4 atoms per (111) plane of the cubic cell's surface cell
    assert np.allclose(np.diff(z), D111, atol=1e-4)
    assert np.allclose(cell[2], [0, 0, 2 * 4.0 + 2 * D111], atol=1e-6)  # c along z: vacuum_min each side
    assert np.allclose(cell[:2, 2], 0) and np.linalg.norm(cell[0]) == pytest.approx(3.6 / np.sqrt(2) * 2)
    gap = cell[2][2] - (z[-1] - z[0])  # slab to its periodic image
    assert gap == pytest.approx(8.0, abs=1e-4)
    # ASE's layers are repeats of the surface cell: fcc(100) from the cubic cell has two planes each
    s100 = placed_system(tmp_path / "100", millers=[[1, 0, 0]], layer_numb=2, vacuum_min=4.0)
    assert len(planes(s100)) == 4 and s100.get_natoms() == 8
    # super_cell repeats in-plane only; its third value just names the directory (as in DP-GEN)
    wide = placed_system(tmp_path / "wide", super_cell=[2, 2, 3], vacuum_min=4.0)
    assert wide.get_natoms() == 48 and len(planes(wide)) == 3
    assert np.allclose(wide["cells"][0][:2], 2 * cell[:2]) and np.allclose(wide["cells"][0][2], cell[2])
    assert (tmp_path / "wide" / "surf.cu.fcc.02x02x03").is_dir()


def test_z_min_takes_the_fewest_layers_reaching_it_and_default_vacuum(tmp_path):
    # default vacuum_min: Cu's atomic radius 1.35 Å; cell height with n layers = 2·1.35 + (n-1)·d111
    # n = 4: 8.935 Å < 9; n = 5: 11.01 Å ≥ 9 (DP-GEN's rule: the vacuum counts)
    s = placed_system(tmp_path, layer_numb=None, z_min=9)
    assert len(planes(s)) == 5
    assert s["cells"][0][2][2] == pytest.approx(2 * 1.35 + 4 * D111, abs=1e-6)
    assert len(planes(placed_system(tmp_path / "b", layer_numb=None, z_min=8.9))) == 4
    with pytest.raises(UserError, match="z_min"):
        parse_initsurf_params(base(layer_numb=None, z_min=500), tmp_path)


@pytest.mark.parametrize("keys,expected", [
    # DP-GEN's own test values (tests/data/surf.json and surf_poscar.json)
    ({"vacuum_resol": [0.5, 1], "mid_point": 4.0, "vacuum_max": 9.0},
     [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0]),
    ({"vacuum_resol": [0.5, 2], "mid_point": 2.0, "vacuum_max": 5.0}, [0.5, 1.0, 1.5, 2.0, 4.0]),
    ({"vacuum_resol": [0.3], "vacuum_max": 1.2}, [0.3, 0.6, 0.9]),  # 1.2 itself is not below vacuum_max
    ({"vacuum_resol": [0.1], "vacuum_max": 0.5}, [0.1, 0.2, 0.3, 0.4]),
    # no vacuum_resol: head = int(10·0.5) = 5 points 0…2, tail = 5 steps 2…6
    ({"vacuum_numb": 10, "head_ratio": 0.5, "mid_point": 2.0, "vacuum_max": 6.0},
     [0.0, 0.5, 1.0, 1.5, 2.0, 2.8, 3.6, 4.4, 5.2, 6.0]),
    # head = int(7·0.4) = 2 points (0, 1) (truncated, not rounded), tail = 5 steps 1…3.5
    ({"vacuum_numb": 7, "head_ratio": 0.4, "mid_point": 1.0, "vacuum_max": 3.5},
     [0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]),
])
def test_elongations_equal_a_hand_computation(keys, expected, tmp_path):
    params = parse_initsurf_params({**base(vacuum_resol=None), **keys}, tmp_path)
    assert params.elongs == pytest.approx(expected, abs=1e-12)
    assert elongations(keys["vacuum_max"], tuple(keys.get("vacuum_resol", ())) or None, keys.get("mid_point"),
                       keys.get("vacuum_numb"), keys.get("head_ratio")) == pytest.approx(expected, abs=1e-12)


def test_vacuum_resol_wins_over_vacuum_numb_with_a_note(tmp_path):
    """DP-GEN's examples/init/surf.json gives both: vacuum_resol is used, the rest is noted."""
    params = parse_initsurf_params(base(vacuum_resol=[0.5, 1], mid_point=4.0, vacuum_max=9.0,
                                        vacuum_numb=20, head_ratio=0.6), tmp_path)
    assert len(params.elongs) == 12
    assert [n.split("'")[1] for n in params.ignored] == ["vacuum_numb", "head_ratio"]
    # structures only (skip_relax, DP-GEN's default VASP): no VASP input needed
    assert parse_initsurf_params(base(init_fp_style=None), tmp_path).fp_settings is None
    shown = json.loads(json.dumps(params.effective(), default=str))  # what `dpgen check` prints
    assert shown["surfaces"] == ["surf-111"] and shown["vacuum_min"] == 1.35


def frames_under(root: Path) -> list[str]:
    found = root.glob("01.scale_pert/*/*/scale-*/elong-*/[0-9]*/POSCAR")
    return sorted(str(p.relative_to(root)) for p in found)


def test_scale_elongate_perturb_paths_counts_and_geometry(tmp_path):
    raw = base(millers=[[1, 1, 1], [1, 0, 0]], scale=[0.98, 1.0], vacuum_max=2.5, pert_numb=3,
               pert_box=0.02, pert_atom=0.05, vacuum_min=2.0)
    params = parse_initsurf_params(raw, tmp_path)
    report = init_surf(params, tmp_path / "a", None)
    out = tmp_path / "a" / "surf.cu.fcc.01x01x01"
    assert report["systems"] == ["surf-111/sys-0012", "surf-100/sys-0012"]
    assert report["structures"] == {"surf-111/sys-0012": 16, "surf-100/sys-0012": 16}  # 2 scales·2 elongs·4
    expected = [f"01.scale_pert/{surf}/sys-0012/scale-{s}/elong-{e}/{k:06d}/POSCAR"
                for surf in ("surf-100", "surf-111") for s in ("0.980", "1.000") for e in ("1.000", "2.000")
                for k in range(4)]
    assert frames_under(out) == sorted(expected)
    start = dpdata.System(str(out / "00.place_ele/surf-111/sys-0012/POSCAR"), fmt="vasp/poscar")
    elong = out / "01.scale_pert/surf-111/sys-0012/scale-0.980/elong-2.000"
    e = dpdata.System(str(elong / "POSCAR"), fmt="vasp/poscar")
    c = e["cells"][0][2][2]
    assert c == pytest.approx(0.98 * start["cells"][0][2][2] + 2.0, abs=1e-6)  # scaled, then elongated
    assert e["coords"][0][:, 2].mean() == pytest.approx(c / 2, abs=1e-6)  # slab centred along z
    assert np.allclose(e["cells"][0][:2], 0.98 * start["cells"][0][:2], atol=1e-8)
    frame0 = dpdata.System(str(elong / "000000" / "POSCAR"), fmt="vasp/poscar")
    frame1 = dpdata.System(str(elong / "000001" / "POSCAR"), fmt="vasp/poscar")
    assert np.allclose(frame0["coords"], e["coords"]) and np.allclose(frame0["cells"], e["cells"])
    assert not np.allclose(frame1["coords"], e["coords"], atol=1e-3)
    strain = np.abs(frame1["cells"] - e["cells"]).max()
    assert 0 < strain < 0.02 * 10 * 1.25  # within pert_box of the ~10 Å cell vectors
    # seeded: the same settings give the same bytes; another seed other perturbations
    init_surf(params, tmp_path / "b", None)
    again = tmp_path / "b" / "surf.cu.fcc.01x01x01"
    assert all((out / p).read_bytes() == (again / p).read_bytes() for p in expected)
    init_surf(parse_initsurf_params({**raw, "seed": 4}, tmp_path), tmp_path / "c", None)
    other = tmp_path / "c" / "surf.cu.fcc.01x01x01" / expected[1]
    assert other.read_bytes() != (out / expected[1]).read_bytes()


def test_stage2_rebuilds_and_needs_contcar_without_skip_relax(tmp_path):
    init_surf(parse_initsurf_params(base(vacuum_max=3.0), tmp_path), tmp_path, None)
    out = tmp_path / "surf.cu.fcc.01x01x01"
    assert {p.split("/")[4] for p in frames_under(out)} == {"elong-1.000", "elong-2.000"}
    init_surf(parse_initsurf_params(base(vacuum_max=2.0, stages=[2]), tmp_path), tmp_path, None)
    assert {p.split("/")[4] for p in frames_under(out)} == {"elong-1.000"}  # no stale elong-2.000
    with pytest.raises(StageError, match="CONTCAR is missing"):
        init_surf(parse_initsurf_params(base(stages=[2], skip_relax=False), tmp_path), tmp_path, None)


def test_alloy_compositions_and_from_poscar(tmp_path):
    params = parse_initsurf_params(base(elements=["Cu", "Au"], layer_numb=1), tmp_path)
    paths, layers = place(params, tmp_path / "w")
    assert paths == ["surf-111/sys-0003-0001", "surf-111/sys-0002-0002", "surf-111/sys-0001-0003"]
    assert layers == {"surf-111": 1}
    bulk("Cu", "fcc", a=3.6, cubic=True).write(tmp_path / "Cu.POSCAR", format="vasp")
    from_file = parse_initsurf_params(base(cell_type=None, latt=None, from_poscar=True,
                                           from_poscar_path="Cu.POSCAR", vacuum_min=4.0), tmp_path)
    assert from_file.out_dir_name() == "Cu.POSCAR.01x01x01"
    paths, _ = place(from_file, tmp_path / "p")
    s = dpdata.System(str(tmp_path / "p" / "00.place_ele" / paths[0] / "POSCAR"), fmt="vasp/poscar")
    assert paths == ["surf-111/sys-0012"] and len(planes(s)) == 3
    assert s["cells"][0][2][2] == pytest.approx(8.0 + 2 * D111, abs=1e-6)


def test_hcp_and_diamond_cells_are_dp_gens():
    """hcp: a = latt/√2 (nearest neighbours latt/√2); diamond: fcc primitive cell, cubic constant 2·latt."""
    for cell_type, latt, nn in (("hcp", 3.63, 3.63 / np.sqrt(2)), ("diamond", 2.7, 2 * 2.7 * np.sqrt(3) / 4),
                                ("bcc", 2.87, 2.87 * np.sqrt(3) / 2)):
        unit = unit_cell(cell_type, latt)
        big = unit.repeat((3, 3, 3))
        d = big.get_all_distances(mic=True)
        assert np.min(d[d > 1e-9]) == pytest.approx(nn, rel=1e-9), cell_type


@pytest.mark.parametrize("changes,where", [
    ({"z_min": 9.0}, "both layer_numb and z_min are given at z_min"),
    ({"layer_numb": None}, "neither layer_numb nor z_min is given at layer_numb"),
    ({"millers": None}, "missing required key 'millers'"),
    ({"vacuum_resol": None, "vacuum_numb": 10, "mid_point": 2.0}, "without head_ratio at head_ratio"),
    ({"vacuum_resol": None}, "no vacuum_resol at vacuum_resol"),
    ({"vacuum_resol": [0.5, 1.0, 2.0]}, "at vacuum_resol"),
    ({"vacuum_resol": [0.5, 1.0]}, "without mid_point at mid_point"),
    ({"vacuum_resol": [0.5, 1.0], "mid_point": 4.0}, "mid_point 4.0 > vacuum_max 3.0 at mid_point"),
    ({"vacuum_resol": [5.0]}, "no elongation below vacuum_max"),
    ({"vacuum_max": None}, "missing required key 'vacuum_max'"),
    ({"stages": [1, 3]}, "at stages[1]: 1 (slabs"),
    ({"md_nstep": 10}, "at md_nstep: init_surf runs no AIMD"),
    ({"millers": [[0, 0, 0]]}, "at millers[0]"),
    ({"millers": [[1, 1]]}, "at millers[0]"),
    ({"latt": None}, "no structure given at latt"),
    ({"vacum_max": 3.0}, "did you mean 'vacuum_max'"),
    ({"head_ratio": 1.5}, "at head_ratio"),
    ({"from_poscar": True}, "from_poscar_path is missing"),
    ({"skip_relax": False, "init_fp_style": "vasp", "potcars": ["POTCAR"]},
     "cannot relax (stage 1) at stages"),
    ({"init_fp_style": "abacus"}, "DP-GEN's init_surf runs VASP only"),
])
def test_bad_keys_give_one_line_errors(changes, where, tmp_path):
    if "potcars" in changes:  # VASP's init keys without relax_incar
        (tmp_path / "POTCAR").write_text("Cu\n")
        changes = {**changes, "potcars": [str(tmp_path / "POTCAR")]}
    with pytest.raises(UserError) as err:
        parse_initsurf_params(base(**changes), tmp_path)
    assert where in str(err.value) and "\n" not in str(err.value)


@pytest.mark.engine
def test_cu_example_end_to_end_feeds_sys_configs(tmp_path):
    """examples/cu/init_surf.json with EMT: relax the Cu(111) slab, then 6 elongations × 3 structures,
    in DP-GEN's layout, found by a run param's sys_configs glob; a second run redoes nothing."""
    raw = json.loads((CU / "init_surf.json").read_text())
    machine = json.loads((CU / "machine.json").read_text())
    machine["fp"]["command"] = sys.executable
    machine["fp"]["machine"]["remote_root"] = str(tmp_path / "remote")
    machine["fp"]["check_interval"] = 0.2
    report = init_surf(parse_initsurf_params(raw, tmp_path), tmp_path, parse_machine(machine, ("fp",)))
    out = tmp_path / "surf.cu.fcc.02x02x01"
    assert report["systems"] == ["surf-111/sys-0048"] and report["layers"] == {"surf-111": 3}
    assert report["relax"]["surf-111/sys-0048"]["converged"]
    assert report["elongations"] == [0.5, 1.0, 1.5, 2.0, 3.0, 4.0]
    relaxed = (out / "00.place_ele/surf-111/sys-0048/CONTCAR")
    atoms = dpdata.System(str(relaxed), fmt="vasp/poscar").to("ase/structure")[0]
    atoms.calc = EMT()
    assert np.abs(atoms.get_forces()).max() < 0.05 + 1e-3  # relax_fmax, EMT's own forces
    scale_dir = out / "01.scale_pert/surf-111/sys-0048/scale-1.000"
    names = sorted(p.name for p in scale_dir.iterdir() if p.is_dir())
    assert names == ["elong-0.500", "elong-1.000", "elong-1.500", "elong-2.000", "elong-3.000", "elong-4.000"]
    # a run param picks them up through sys_configs (relative to the work dir)
    run = json.loads((CU / "param.json").read_text())
    run["sys_configs"] = [report["sys_configs"],
                          ["surf.cu.fcc.02x02x01/01.scale_pert/surf-111/sys-*/scale-*/elong-0.500/00000[0-1]/POSCAR"]]
    run["sys_batch_size"] = ["auto", "auto"]
    params = parse_run_params(run)
    confs = conf_paths(tmp_path, params, 0)
    assert len(confs) == 18 == report["structures"]["surf-111/sys-0048"]
    assert all(read_conf(params, c).get_natoms() == 48 for c in confs)
    assert [c.parent.name for c in conf_paths(tmp_path, params, 1)] == ["000000", "000001"]
    before = relaxed.stat().st_mtime_ns, (relaxed.parent / "traj.extxyz").stat().st_mtime_ns
    again = init_surf(parse_initsurf_params(raw, tmp_path), tmp_path, parse_machine(machine, ("fp",)))
    assert again == report
    assert (relaxed.stat().st_mtime_ns, (relaxed.parent / "traj.extxyz").stat().st_mtime_ns) == before
