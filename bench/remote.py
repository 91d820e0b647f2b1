"""Benchmark: bytes brought back from an SSH machine for one iteration's exploration and selection.

The model_devi stage runs on a real sshd on 127.0.0.1 (tests/infra/slurm-sshd-up.sh with
WITH_SLURM=0, on its own port and state dir; stopped at the end) through dpdispatcher's Shell batch
on SSHContext, with bench/scale.py's stand-in LAMMPS: every task leaves a trajectory of ``--frames``
frames of CH4 replicated 3×3×3 (135 atoms) and its deviations, a third of the frames candidates.
Then selection picks ``fp_task_max`` frames. Printed: the trajectories' size on the machine, the
bytes that came back (the files each task sends back, plus the frames read over SFTP) and what
the same iteration brings back when the trajectories are downloaded (LocalContext: the files
each task sends back, trajectory included). Target: bytes back ≪ trajectory size. A figure, not
a test.

    python bench/remote.py [--tasks 200] [--frames 101] [--picks 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]

from bench.scale import fixtures, inputs  # noqa: E402

INFRA = ROOT / "tests" / "infra"
SENT = ("model_devi.out", "all.lammpstrj.index", "model_devi.log", "lmp.out", "lmp.err",
        "dpgen_task.rc")


def _sshd(state: Path, up: bool) -> dict[str, str]:
    env = {**os.environ, "SCHED_DIR": str(state), "SSH_PORT": "2223", "SSH_USER": "root",
           "WITH_SLURM": "0"}
    script = INFRA / ("slurm-sshd-up.sh" if up else "slurm-sshd-down.sh")
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, timeout=300)
    if not up:
        return {}
    values = {}
    for line in (state / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value
    return values


def _explore(work: Path, args: argparse.Namespace, md_machine: dict) -> tuple[int, int, int]:
    """make/run/post model_devi and make_fp; (bytes sent back, SFTP bytes, trajectory bytes)."""
    from dpgen_ng.config.machine import parse_machine
    from dpgen_ng.config.param import parse_run_params
    from dpgen_ng.explore import lammps, remote
    from dpgen_ng.ledger import Ledger
    from dpgen_ng.log import setup_logging
    from dpgen_ng.loop import STEP_FUNCS
    from dpgen_ng.stages.context import IterContext

    work.mkdir(parents=True)
    frames = tuple((10 * k, (0.05, 0.15, 0.3)[k % 3]) for k in range(args.frames))
    fix = fixtures(work, frames, replicate=3)
    raw, raw_machine = inputs(work, args.tasks, 20, fix, md_machine)
    raw["fp_task_max"] = args.picks
    setup_logging(work)
    params, machines = parse_run_params(raw), parse_machine(raw_machine)
    with Ledger(work) as ledger:
        ctx = IterContext(work.resolve(), 0, params, machines, ledger)
        ctx.stage_dir(0).mkdir(parents=True)
        for k in range(params.numb_models):
            (ctx.stage_dir(0) / params.backend.graph(k)).write_bytes(b"")
        for func in STEP_FUNCS[3:7]:
            func(ctx)
        md_dir = ctx.stage_dir(1)
        sent = sum(p.stat().st_size for p in md_dir.glob("task.*/*")
                   if p.name in (*SENT, lammps.TRAJ))
        if remote.read_location(md_dir) is None:
            return sent, 0, sum(p.stat().st_size for p in md_dir.glob(f"task.*/{lammps.TRAJ}"))
        line = next(ln for ln in (work / "dpgen.log").read_text().splitlines()
                    if "trajectory byte(s) kept on" in ln)
        read = int(line.split("read ")[1].split()[0])
        total = int(line.split(" byte(s) of the ")[1].split()[0])
        return sent, read, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200, help="MD tasks")
    ap.add_argument("--frames", type=int, default=101, help="frames per trajectory")
    ap.add_argument("--picks", type=int, default=100, help="fp_task_max")
    ap.add_argument("--keep", type=Path, help="parent dir of the work dirs (default: a temp dir)")
    args = ap.parse_args()
    top = args.keep or Path(tempfile.mkdtemp(prefix="dpgen-remote-"))
    shutil.rmtree(top, ignore_errors=True)
    top.mkdir(parents=True)
    state = top / "sshd"
    env = _sshd(state, up=True)
    try:
        root = f"{env['SCHED_REMOTE_ROOT']}/{uuid.uuid4().hex}"
        profile = {"hostname": env["SCHED_SSH_HOST"], "port": int(env["SCHED_SSH_PORT"]),
                   "username": env["SCHED_SSH_USER"], "key_filename": env["SCHED_SSH_KEY"],
                   "look_for_keys": False, "timeout": 10}
        ssh = {"batch_type": "Shell", "context_type": "SSHContext", "local_root": "./",
               "remote_root": root, "remote_profile": profile}
        local = {"batch_type": "Shell", "context_type": "LocalContext", "local_root": "./",
                 "remote_root": "./.dpgen/remote"}
        sent, read, total = _explore(top / "ssh", args, ssh)
        here, _, traj_here = _explore(top / "local", args, local)
        shutil.rmtree(root, ignore_errors=True)  # loopback: the machine's files are on this host
    finally:
        _sshd(state, up=False)
    mb = 1e6
    print(f"{args.tasks} MD tasks × {args.frames} frames of 135 atoms, {args.picks} frames picked")
    print(f"trajectories kept on the SSH machine   {total / mb:9.2f} MB")
    print(f"bytes brought back                     {(sent + read) / mb:9.2f} MB "
          f"({sent / mb:.2f} MB of deviations, logs and frame index + {read / mb:.2f} MB of frames "
          f"read over SFTP) = {100 * (sent + read) / total:.1f} % of the trajectories")
    print(f"downloading the trajectories instead  {here / mb:9.2f} MB "
          f"(of which trajectories {traj_here / mb:.2f} MB)")
    print(json.dumps({"trajectory_bytes": total, "bytes_back": sent + read, "sftp_bytes": read,
                      "bytes_back_downloading": here}))
    if not args.keep:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
