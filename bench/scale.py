"""Benchmark: the engine's own cost per task in an iteration of thousands of tasks.

One iteration's exploration and labeling with N MD tasks and N fp tasks, through the real stage
code (make, dispatch through dpdispatcher's Shell batch on LocalContext with the example's
``group_size``, harvest, ledger, selection, candidate extraction, label parsing), where the engines
are stand-ins that only copy a prepared output: a three-frame ``model_devi.out`` and trajectory
for ``lmp``, a CH4 ``.engrad`` for ``xtb``. Training is not run (four empty graph files), nor the
post_fp summary (it evaluates the models). Whatever the wall time is beyond the stand-ins' own
run time (the union of the intervals each task records) is ours: the per-task overhead.

Each size runs in a fresh child process, which reports its peak memory (VmHWM). Then ``dpgen
status`` is timed on the largest work dir. Target: ≤ 20 ms per task, memory flat, status instant.
A figure, not a test.

    python bench/scale.py [--tasks 200,2000] [--group-size 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "methane"
TEMPS = 20  # MD tasks per configuration
FRAMES = ((0, 0.05), (10, 0.12), (20, 0.15))  # (step, max_devi_f): two candidates per task


def fixtures(work: Path, frames: tuple[tuple[int, float], ...] = FRAMES, replicate: int = 1) -> Path:
    """The stand-in engines' outputs and the two scripts that copy them into the task dir: the
    frames' (step, max_devi_f), of CH4 (``replicate`` times along each axis)."""
    import dpdata
    import numpy as np

    fix = work / "fake"
    fix.mkdir()
    sys_ = dpdata.System(str(EXAMPLE / "CH4.POSCAR"), fmt="vasp/poscar", type_map=["H", "C"])
    sys_ = sys_.replicate((replicate,) * 3)
    cell, coords, types = sys_["cells"][0], sys_["coords"][0], sys_["atom_types"]
    rows = ["#       step         max_devi_v         min_devi_v         avg_devi_v"
            "         max_devi_f         min_devi_f         avg_devi_f"]
    rows += [f"{s:12d} {0.01:18.6e} {0.0:18.6e} {0.005:18.6e} {f:18.6e} {0.0:18.6e} {f / 2:18.6e}"
             for s, f in frames]
    (fix / "model_devi.out").write_text("\n".join(rows) + "\n")
    dump = []
    for s, _ in frames:
        dump += ["ITEM: TIMESTEP", str(s), "ITEM: NUMBER OF ATOMS", str(len(types)),
                 "ITEM: BOX BOUNDS pp pp pp", *(f"0.0 {cell[i, i]:.6f}" for i in range(3)),
                 "ITEM: ATOMS id type x y z fx fy fz"]
        dump += [f"{i + 1} {t + 1} {x:.6f} {y:.6f} {z:.6f} 0 0 0"
                 for i, (t, (x, y, z)) in enumerate(zip(types, coords))]
    (fix / "all.lammpstrj").write_text("\n".join(dump) + "\n")
    grad = np.linspace(-0.01, 0.01, 3 * len(types))
    (fix / "conf.engrad").write_text("\n".join(
        ["#", str(len(types)), "#", "-4.17", "#", *(f"{g:.9f}" for g in grad)]) + "\n")
    for name, body in (("lmp", f"cp {fix}/model_devi.out {fix}/all.lammpstrj . && : > model_devi.log"),
                       ("xtb", f"cp {fix}/conf.engrad . && echo 'normal termination of xtb'")):
        script = fix / name
        script.write_text(f"#!/bin/bash\n{body}\n")
        script.chmod(0o755)
    return fix


def inputs(work: Path, n_tasks: int, group_size: int, fix: Path,
            md_machine: dict | None = None) -> tuple[dict, dict]:
    confs = max(1, n_tasks // TEMPS)
    for c in range(confs):
        (work / "confs" / f"{c:04d}").mkdir(parents=True)
        shutil.copy(EXAMPLE / "CH4.POSCAR", work / "confs" / f"{c:04d}" / "POSCAR")
    raw = json.loads((EXAMPLE / "param-dpgen.json").read_text())
    raw.update(sys_configs=[["confs/*/POSCAR"]], fp_task_max=confs * TEMPS, ratio_failed=0.5,
               model_devi_f_trust_lo=0.1, model_devi_f_trust_hi=0.2)
    raw["model_devi_jobs"] = [{"sys_idx": [0], "temps": [300 + 10 * t for t in range(TEMPS)],
                               "trj_freq": 10, "nsteps": 20, "ensemble": "nvt"}]
    machine = json.loads((EXAMPLE / "machine.json").read_text())
    for stage in ("model_devi", "fp"):
        machine[stage]["command"] = str(fix / ("lmp" if stage == "model_devi" else "xtb"))
        machine[stage]["resources"]["group_size"] = group_size
    if md_machine is not None:
        machine["model_devi"]["machine"] = md_machine
    return raw, machine


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_size(work: Path, n_tasks: int, group_size: int) -> dict:
    """Run one size in this process; return its figures."""
    sys.path.insert(0, str(ROOT))
    from bench.iteration import task_intervals, union_seconds
    from dpgen_ng.config.machine import parse_machine
    from dpgen_ng.config.param import parse_run_params
    from dpgen_ng.ledger import Ledger
    from dpgen_ng.log import setup_logging
    from dpgen_ng.loop import STEP_FUNCS
    from dpgen_ng.record import STEPS, append_record
    from dpgen_ng.stages import fp
    from dpgen_ng.stages.context import IterContext

    work.mkdir(parents=True)
    fix = fixtures(work)
    raw, raw_machine = inputs(work, n_tasks, group_size, fix)
    setup_logging(work)
    params, machines = parse_run_params(raw), parse_machine(raw_machine)
    walls: dict[str, float] = {}
    with Ledger(work) as ledger:
        ctx = IterContext(work.resolve(), 0, params, machines, ledger)
        train = ctx.stage_dir(0)
        train.mkdir(parents=True)
        for k in range(params.numb_models):  # stand-ins: the MD stand-in never opens them
            (train / params.backend.graph(k)).write_bytes(b"")
        for step in range(3):
            append_record(work, 0, step)
        steps = [(s, STEP_FUNCS[s]) for s in range(3, 8)] + [(8, fp.collect_labels)]
        t_start = time.time()
        for step, func in steps:
            t0 = time.time()
            func(ctx)
            append_record(work, 0, step)
            walls[STEPS[step]] = time.time() - t0
        wall = time.time() - t_start
        n_md = len(list(ctx.stage_dir(1).glob("task.*")))
        n_fp = len(list(ctx.stage_dir(2).glob("task.*")))
        engines = sum(union_seconds(task_intervals(ctx.stage_dir(s))) for s in (1, 2))
    labels = json.loads((ctx.stage_dir(2) / "labels.json").read_text())
    return {"md_tasks": n_md, "fp_tasks": n_fp, "labeled": labels["labeled"], "wall": wall,
            "engines": engines, "steps": walls, "peak_rss_mb": _peak_rss_mb()}


def _status_seconds(work: Path) -> float:
    dpgen = Path(sys.executable).parent / "dpgen"
    t0 = time.perf_counter()
    subprocess.run([str(dpgen), "status", str(work)], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="200,2000", help="MD (and fp) tasks per run, comma-separated")
    ap.add_argument("--group-size", type=int, default=20, help="tasks per job (both stages)")
    ap.add_argument("--keep", type=Path, help="parent dir of the work dirs (default: a temp dir)")
    ap.add_argument("--child", nargs=3, metavar=("WORK", "N", "GROUP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_size(Path(args.child[0]), int(args.child[1]), int(args.child[2]))))
        return
    top = args.keep or Path(tempfile.mkdtemp(prefix="dpgen-scale-"))
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    print(f"group_size {args.group_size}, Shell batch on LocalContext, {os.cpu_count()} cores; "
          f"work dirs under {top}")
    print(f"{'MD+fp tasks':>12}{'labeled':>9}{'wall s':>9}{'engines s':>11}{'ours ms/task':>14}"
          f"{'peak MB':>9}   per step (s)")
    last = None
    for n in (int(x) for x in args.tasks.split(",")):
        work = top / f"n{n}"
        shutil.rmtree(work, ignore_errors=True)
        out = subprocess.run([sys.executable, __file__, "--child", str(work), str(n),
                              str(args.group_size)], env=env, check=True, capture_output=True,
                             text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        tasks = r["md_tasks"] + r["fp_tasks"]
        ours = 1000 * (r["wall"] - r["engines"]) / tasks
        steps = " ".join(f"{k} {v:.1f}" for k, v in r["steps"].items())
        print(f"{tasks:>12}{r['labeled']:>9}{r['wall']:>9.1f}{r['engines']:>11.1f}{ours:>14.1f}"
              f"{r['peak_rss_mb']:>9.0f}   {steps}")
        last = work
    if last is not None:
        print(f"dpgen status on the largest work dir: {_status_seconds(last):.2f} s")
    print("target: ≤ 20 ms per task of our own time, flat memory, status instant")
    if not args.keep:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
