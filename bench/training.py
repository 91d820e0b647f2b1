"""Benchmark: training from earlier models, and the cost of each DeePMD-kit backend.

1. ``training_reuse_iter`` against from-scratch training on the methane example: two real
   ``dpgen run``s of ``--iters`` exploration iterations plus the final training (the example's
   job repeated, a criterion that never holds, up to ``--budget`` labels in every iteration: no
   accurate-ratio throttling, trust_lo 0.05), one training every model from scratch with
   ``--steps`` steps, one that from iteration 1 continues each model from its previous checkpoint
   with ``--reuse-steps`` steps (old data drawn with probability ``auto``). Printed: the training
   step's wall time per iteration (the ledger's step times) and the held-out force RMSE of the
   committee after each training (``00.train/validation.json``), for both runs.
2. Seconds per training step and per MD step, one thread, for TensorFlow se_e2_a, PyTorch se_e2_a
   and PyTorch DPA-3 (the descriptor of ``param-pytorch-dpa3.json``): each model trained twice on
   the initial data (``--short`` and ``--long`` steps; the difference removes start-up, import
   and freeze), then LAMMPS with a committee of four copies on the CH4 configuration (the loop
   time LAMMPS prints, per step; start-up is printed apart).

A figure, not a test. Runs are kept under ``--root`` and resumed (a finished part is not run
again).

    python bench/training.py [--root DIR] [--iters 3] [--models 2] [--steps 2000] [--reuse-steps 500]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]

from bench.data_efficiency import INIT, curve, dpgen, new_work, shared_data  # noqa: E402
from dpgen_ng.ledger import Ledger  # noqa: E402

EXAMPLE = ROOT / "examples" / "methane"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "DP_INTRA_OP_PARALLELISM_THREADS": "1",
              "DP_INTER_OP_PARALLELISM_THREADS": "1", "NUM_WORKERS": "0"}


def loop_run(root: Path, data: Path, name: str, args: argparse.Namespace, **over: object) -> Path:
    work = root / name
    if not (work / "done").is_file():
        shutil.rmtree(work, ignore_errors=True)
        p, job = new_work(work, data, args.iters)
        p["default_training_param"]["training"]["numb_steps"] = args.steps
        # every iteration labels up to the budget (no accurate-ratio throttling, a lower trust_lo),
        # so that every iteration trains
        p.update(numb_models=args.models, model_devi_jobs=[job], fp_task_max=args.budget,
                 fp_accurate_threshold=1.0, fp_accurate_soft_threshold=1.0, model_devi_f_trust_lo=0.05,
                 convergence=[{"type": "validation", "force_rmse": 1e-9}], **over)
        (work / "param.json").write_text(json.dumps(p, indent=1))
        dpgen("run", "param.json", "machine.json", cwd=work)
        (work / "done").write_text("")
    return work


def train_seconds(work: Path) -> dict[int, float]:
    with Ledger(work) as ledger:
        times = ledger.step_times()
    return {it: sec for (it, step), sec in sorted(times.items()) if step == 1}


def reuse_vs_scratch(root: Path, data: Path, args: argparse.Namespace) -> None:
    scratch = loop_run(root, data, "scratch", args)
    reuse = loop_run(root, data, "reuse", args, training_reuse_iter=1,
                     training_reuse_numb_steps=args.reuse_steps, training_reuse_old_ratio="auto")
    print(f"\n1. training_reuse_iter 1 ({args.reuse_steps} steps) vs from scratch ({args.steps} steps), "
          f"{args.models} models, ≤ {args.budget} labels per iteration")
    print(f"{'iter':>4} {'train s scratch':>16} {'train s reuse':>14} {'RMSE F scratch':>15} "
          f"{'RMSE F reuse':>13}")
    ts, tr = train_seconds(scratch), train_seconds(reuse)
    cs, cr = dict(enumerate(curve(scratch))), dict(enumerate(curve(reuse)))
    for it in sorted(set(ts) | set(tr)):
        rs = cs.get(it, (None, float("nan")))[1]
        rr = cr.get(it, (None, float("nan")))[1]
        nan = float("nan")
        print(f"{it:>4} {ts.get(it, nan):>16.1f} {tr.get(it, nan):>14.1f} {rs:>15.4f} {rr:>13.4f}")
    later = [it for it in ts if it >= 1 and it in tr]
    if later:
        t_r, t_s = sum(tr[i] for i in later), sum(ts[i] for i in later)
        print(f"iterations ≥ 1: training {t_r:.0f} s with reuse vs {t_s:.0f} s from scratch "
              f"({t_r / t_s:.2f}×); "
              f"final committee's held-out force RMSE {cr[max(cr)][1]:.4f} vs {cs[max(cs)][1]:.4f} eV/Å")


def models() -> dict[str, tuple[str, dict]]:
    p = json.loads((EXAMPLE / "param.json").read_text())["default_training_param"]
    dpa3 = json.loads((EXAMPLE / "param-pytorch-dpa3.json").read_text())["default_training_param"]
    return {"TensorFlow se_e2_a": ("--tf", p), "PyTorch se_e2_a": ("--pt", p),
            "PyTorch DPA-3": ("--pt", dpa3)}


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} in {cwd} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def per_step(root: Path, data: Path, args: argparse.Namespace) -> None:
    system = str((data / INIT / "02.md" / "sys-0004-0001" / "deepmd").resolve())
    conf = sorted((data / INIT / "01.scale_pert").glob("sys-0004-0001/scale*/000000/POSCAR"))[0]
    print(f"\n2. per step, one thread (training: the difference of a {args.long}- and a {args.short}-step "
          "training, ×5 for TensorFlow; "
          "MD: LAMMPS' loop time, 4-model committee, CH4 (5 atoms), deviation every 10 steps)")
    print(f"{'model':<20} {'s/train step':>13} {'s/MD step':>10} {'MD start-up s':>14}")
    import dpdata

    for name, (flag, base) in models().items():
        d = root / "per-step" / name.replace(" ", "_")
        d.mkdir(parents=True, exist_ok=True)
        times = {}
        scale = 5 if flag == "--tf" else 1  # TensorFlow is ~5x faster per step: a longer difference
        short, long = args.short * scale, args.long * scale
        for n in (short, long):
            run = d / f"steps{n}"
            run.mkdir(exist_ok=True)
            jin = json.loads(json.dumps(base))
            jin["model"]["type_map"] = ["H", "C"]
            # disp_freq = save_freq: DeePMD-kit 3.2's TensorFlow trainer saves a checkpoint only at a
            # step that is a multiple of both (and at the end unless numb_steps % save_freq == 0)
            every = max(1, n // 5)
            jin["training"].update(numb_steps=n, disp_freq=every, save_freq=every, seed=1,
                                   training_data={"systems": [system], "batch_size": "auto"})
            jin["training"].pop("validation_data", None)
            (run / "input.json").write_text(json.dumps(jin))
            suffix = ".pb" if flag == "--tf" else ".pth"
            times[n] = timed(["dp", flag, "train", "input.json"], run)
            if n == long:
                timed(["dp", flag, "freeze", "-o", f"model{suffix}"], run)
        train_step = (times[long] - times[short]) / (long - short)
        md = d / "md"
        md.mkdir(exist_ok=True)
        model = run / f"model{suffix}"
        system_md = dpdata.System(str(conf), fmt="vasp/poscar", type_map=["H", "C"])
        system_md.to("lammps/lmp", str(md / "conf.lmp"))
        graphs = " ".join(str(model) for _ in range(4))
        nsteps = args.md_steps if flag == "--tf" else max(100, args.md_steps // 5)
        (md / "in.lmp").write_text(
            "units metal\nboundary p p p\natom_style atomic\nread_data conf.lmp\n"
            "mass 1 1.008\nmass 2 12.011\n"
            f"pair_style deepmd {graphs} out_freq 10 out_file model_devi.out\npair_coeff * *\n"
            "velocity all create 300.0 1 mom yes rot yes dist gaussian\nfix 1 all nvt temp 300 300 0.05\n"
            f"timestep 0.0005\nthermo 100\nrun {nsteps}\n")
        wall = timed(["lmp", "-in", "in.lmp", "-log", "log.lammps"], md)
        loop = float(re.search(r"Loop time of ([0-9.eE+-]+)", (md / "log.lammps").read_text()).group(1))
        print(f"{name:<20} {train_step:>13.4f} {loop / nsteps:>10.5f} {wall - loop:>14.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=ROOT / "bench-runs" / "training")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--models", type=int, default=2)
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--reuse-steps", type=int, default=500)
    ap.add_argument("--short", type=int, default=50)
    ap.add_argument("--long", type=int, default=250)
    ap.add_argument("--md-steps", type=int, default=2000)
    ap.add_argument("--only", choices=("reuse", "per-step"), default=None)
    args = ap.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    data = shared_data(args.root)
    print(f"bench/training.py on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    if args.only != "per-step":
        reuse_vs_scratch(args.root, data, args)
    if args.only != "reuse":
        per_step(args.root, data, args)


if __name__ == "__main__":
    main()
