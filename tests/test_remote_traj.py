"""Selecting where the data is: with the MD on an SSH machine (the real sshd of tests/infra on
127.0.0.1), the trajectories stay there and only the deviations, the frame index and the picked
frames come back; the labeled data are the same as when everything runs here.

The MD engine is a stand-in (a Python script writing a seeded trajectory and deviations): a real
LAMMPS needs a trained committee, which this module does not train; test_cluster's methane run
over SSH takes the same path with the real LAMMPS. Labels come from the real xtb.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import dpdata
import numpy as np
import pytest

from dpgen_ng.config.machine import parse_machine
from dpgen_ng.config.param import parse_run_params
from dpgen_ng.explore import lammps, remote
from dpgen_ng.ledger import Ledger
from dpgen_ng.log import setup_logging
from dpgen_ng.loop import STEP_FUNCS
from dpgen_ng.stages import fp, model_devi
from dpgen_ng.stages.context import IterContext
from tests.conftest import EXAMPLE
from tests.test_cluster import remote_profile

FRAMES = 51  # per trajectory (500 steps, every 10)

FAKE_LMP = """#!{python}
import sys, zlib
import numpy as np
text = open("input.lammps").read() + open("conf.lmp").read()
rng = np.random.default_rng(zlib.crc32(text.encode()))
cell = np.array({cell})
coords = np.array({coords})
types = {types}
dev, dump = ["# step max_devi_v min_devi_v avg_devi_v max_devi_f min_devi_f avg_devi_f"], []
for k in range({frames}):
    f = rng.uniform(0.0, 0.3)
    cols = [0.01, 0.0, 0.005, f, 0.0, f / 2]
    dev.append(f"{{10 * k:12d}}" + "".join(f" {{c:18.6e}}" for c in cols))
    x = coords + rng.normal(scale=0.03, size=coords.shape)
    dump += ["ITEM: TIMESTEP", str(10 * k), "ITEM: NUMBER OF ATOMS", str(len(types)),
             "ITEM: BOX BOUNDS pp pp pp", *(f"0.0 {{cell[i][i]:.6f}}" for i in range(3)),
             "ITEM: ATOMS id type x y z fx fy fz"]
    dump += [f"{{i + 1}} {{t + 1}} {{a:.6f}} {{b:.6f}} {{c:.6f}} 0 0 0"
             for i, (t, (a, b, c)) in enumerate(zip(types, x))]
open("model_devi.out", "w").write("\\n".join(dev) + "\\n")
open("all.lammpstrj", "w").write("\\n".join(dump) + "\\n")
open("model_devi.log", "w").write("")
"""


def _fake_lmp(path: Path) -> Path:
    ch4 = dpdata.System(str(EXAMPLE / "CH4.POSCAR"), fmt="vasp/poscar", type_map=["H", "C"])
    ch4 = ch4.replicate((2, 2, 1))  # 20 atoms: frames weigh as in a small real run
    path.write_text(FAKE_LMP.format(python=sys.executable, cell=ch4["cells"][0].tolist(),
                                    coords=ch4["coords"][0].tolist(),
                                    types=ch4["atom_types"].tolist(), frames=FRAMES))
    path.chmod(0o755)
    return path


def _iteration(work: Path, lmp: Path, md_machine: dict) -> IterContext:
    """Exploration and labeling of iteration 0 (training replaced by four empty graph files)."""
    for c in range(4):
        (work / "confs" / f"{c:02d}").mkdir(parents=True)
        (work / "confs" / f"{c:02d}" / "POSCAR").write_text((EXAMPLE / "CH4.POSCAR").read_text())
    raw = json.loads((EXAMPLE / "param-dpgen.json").read_text())
    raw.update(sys_configs=[["confs/*/POSCAR"]], fp_task_max=6, model_devi_f_trust_lo=0.1,
               model_devi_f_trust_hi=0.2)
    raw["model_devi_jobs"] = [{"sys_idx": [0], "temps": [300, 400], "trj_freq": 10, "nsteps": 500,
                               "ensemble": "nvt"}]
    machine = json.loads((EXAMPLE / "machine.json").read_text())
    machine["model_devi"] = {**machine["model_devi"], "command": str(lmp), "machine": md_machine,
                             "check_interval": 0.3}
    params, machines = parse_run_params(raw), parse_machine(machine)
    setup_logging(work)
    ledger = Ledger(work)
    ctx = IterContext(work.resolve(), 0, params, machines, ledger)
    ctx.stage_dir(0).mkdir(parents=True)
    for k in range(params.numb_models):
        (ctx.stage_dir(0) / params.backend.graph(k)).write_bytes(b"")
    for func in (*STEP_FUNCS[3:8], fp.collect_labels):
        func(ctx)
    return ctx


def _bytes_under(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
def test_selection_on_the_ssh_machine_reads_only_the_picked_frames(sched, tmp_path):
    lmp = _fake_lmp(tmp_path / "fake_lmp")
    here = _iteration(tmp_path / "here", lmp, {"batch_type": "Shell", "context_type": "LocalContext",
                                              "local_root": "./", "remote_root": "./.dpgen/remote"})
    root = f"{sched['SCHED_REMOTE_ROOT']}/{uuid.uuid4().hex}"
    there = _iteration(tmp_path / "there", lmp, {
        "batch_type": "Shell", "context_type": "SSHContext", "local_root": "./", "remote_root": root,
        "remote_profile": remote_profile(sched)})
    md_here, md_there = here.stage_dir(1), there.stage_dir(1)
    # the same selection and the same labeled data, to the byte
    sel = [json.loads((c.stage_dir(2) / "selection.json").read_text()) for c in (here, there)]
    assert sel[0] == sel[1] and len(sel[0]["systems"]["000"]["picked"]) == 6
    for name in ("coord.npy", "box.npy", "energy.npy", "force.npy"):
        a, b = (np.load(next(c.stage_dir(2).glob(f"data.000/*/set.000/{name}"))) for c in (here, there))
        assert a.tobytes() == b.tobytes(), name
    for t in sorted(p.name for p in there.stage_dir(2).glob("task.*")):
        assert ((here.stage_dir(2) / t / "conf.xyz").read_bytes()
                == (there.stage_dir(2) / t / "conf.xyz").read_bytes())
    # the trajectories stayed on the SSH machine (its files are on this host: loopback)
    where = remote.read_location(md_there)
    assert where is not None and where["dir"].startswith(root + "/dpgen_ng.trajectories/")
    assert not list(md_there.glob(f"task.*/{lammps.TRAJ}"))
    kept = sorted(Path(where["dir"]).glob(f"task.*/{lammps.TRAJ}"))
    assert len(kept) == 8
    for traj in kept:  # equal to the trajectories of the run here, and the index says where frames are
        assert traj.read_bytes() == (md_here / traj.parent.name / lammps.TRAJ).read_bytes()
    assert remote.read_index(md_there / kept[0].parent.name / remote.INDEX).size == FRAMES + 1
    # bytes that came back: the files each MD task sends back + the frames read over SFTP
    log = (there.workdir / "dpgen.log").read_text()
    line = next(ln for ln in log.splitlines() if "trajectory byte(s) kept on" in ln)
    read = int(line.split("read ")[1].split()[0])
    total = int(line.split(" byte(s) of the ")[1].split()[0])
    sent = (lammps.DEVI, remote.INDEX, lammps.LOG, "lmp.out", "lmp.err", "dpgen_task.rc")
    back = sum(p.stat().st_size for p in md_there.glob("task.*/*") if p.name in sent) + read
    print(f"\nbytes copied back {back} (frames read over SFTP {read}); trajectories kept {total}")
    assert total == sum(t.stat().st_size for t in kept)
    assert read < total / 10 and back < total / 3
    # model_devi_clean_traj removes them there
    model_devi.clean_trajectories(there, 0)
    assert not Path(where["dir"]).exists()
    here.ledger.close()
    there.ledger.close()


def test_the_index_written_where_the_md_ran_is_the_local_frame_index(tmp_path):
    """keep_command's shell (grep -b, wc -c) gives the offsets and size frame_offsets reads here,
    moves the trajectory and keeps LAMMPS' exit code."""
    from dpgen_ng.explore.traj import frame_offsets
    from tests.test_streaming import dump_text

    task = tmp_path / "task"
    task.mkdir()
    text = dump_text(7, natoms=4, seed=3).replace("ITEM: TIMESTEP", "  ITEM: TIMESTEP", 1)
    (task / lammps.TRAJ).write_text(text)
    expected = frame_offsets(task / lammps.TRAJ)
    command = remote.keep_command("sh -c 'exit 3'", str(tmp_path / "kept" / "task"))
    rc = subprocess.run(["bash", "-c", f"( {command} )"], cwd=task).returncode
    assert rc == 3
    assert not (task / lammps.TRAJ).exists()
    assert (tmp_path / "kept" / "task" / lammps.TRAJ).read_text() == text
    assert remote.read_index(task / remote.INDEX).tolist() == expected.tolist()
    assert len(expected) == 8


def test_kept_trajectories_need_the_ssh_machine(tmp_path):
    from dpgen_ng.errors import StageError
    from dpgen_ng.explore.trajectories import Trajectories

    (tmp_path / remote.LOCATION_FILE).write_text(json.dumps({"host": "login1", "dir": "/scratch/x"}))
    (tmp_path / "task.000").mkdir()
    (tmp_path / "task.000" / remote.INDEX).write_text("0\n10\n")
    trajs = Trajectories(tmp_path, [{"path": "task.000"}], ("H", "C"), {"context_type": "LocalContext"})
    with pytest.raises(StageError, match="kept on login1:/scratch/x .*no longer an SSH machine"):
        trajs(0)
