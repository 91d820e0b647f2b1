"""Benchmark: labels needed to reach a held-out accuracy, per selection strategy (``fp_pick``).

The methane workload of ``examples/methane`` (xtb labels, CH4 at 300/450 K), its held-out set
(``valid.json``: xtb MD at 450 K, never trained on) and one set of initial data, made once. For
every strategy and seed, a real ``dpgen run`` of ``--iters`` exploration iterations with at most
``--budget`` labels per iteration (the same job, repeated with ``max_iter`` and a criterion that
never holds, so no run stops early), plus the final training. After every training the committee
is evaluated on the held-out set (``00.train/validation.json``); the figure is the committee-mean
force RMSE against the number of labels trained on so far.

Printed: per strategy, the RMSE after each iteration (mean ± spread over seeds), the labels needed
to reach ``--target`` (the labels behind the first committee at or below it; none: not reached),
and each strategy's ratio to ``random``. A figure, not a test. Runs are kept under ``--root`` and
resumed: running again only runs what is missing.

    python bench/data_efficiency.py [--root DIR] [--seeds 1 2 3] [--iters 3] [--budget 10] [--models 2]

The defaults are the measured configuration of docs/param.md (about 8–12 min per run on 2 cores).
The label budget goes through DP-GEN's accurate-ratio throttling of the example (soft 0.9, hard
0.99), so a run may label fewer than ``--budget`` frames in an iteration; the labels axis counts
what was labeled.
    python bench/data_efficiency.py --selection-cost [--frames 100000] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]

EXAMPLE = ROOT / "examples" / "methane"
INIT = "CH4.POSCAR.01x01x01"
STRATEGIES = ("random", "max-devi", "fps")


def dpgen(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "dpgen_ng.cli", *args], cwd=cwd, capture_output=True,
                          text=True)
    if done.returncode not in (0,):
        sys.exit(f"dpgen {' '.join(args)} in {cwd} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def shared_data(root: Path) -> Path:
    """Initial data and the held-out set, made once under ``root/data``."""
    data = root / "data"
    if not (data / "done").is_file():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        for f in EXAMPLE.iterdir():
            shutil.copy(f, data / f.name)
        dpgen("init_bulk", "init.json", "machine.json", cwd=data)
        dpgen("init_bulk", "valid.json", "machine.json", "-w", "valid", cwd=data)
        (data / "done").write_text("")
    return data


def new_work(work: Path, data: Path, iters: int) -> tuple[dict, dict]:
    """A run dir on the shared data; the example's param and its job repeated ``iters`` times."""
    work.mkdir(parents=True)
    for f in ("machine.json", "CH4.POSCAR"):
        shutil.copy(data / f, work / f)
    (work / INIT).symlink_to(data / INIT)
    (work / "valid").symlink_to(data / "valid")
    p = json.loads((EXAMPLE / "param.json").read_text())
    return p, dict(p["model_devi_jobs"][0], max_iter=iters, fatal_at_max=False)


def run_dir(root: Path, data: Path, strategy: str, seed: int, args: argparse.Namespace) -> Path:
    work = root / f"{strategy}.seed{seed}"
    if not work.is_dir():
        p, job = new_work(work, data, args.iters)
        p.update(seed=seed, fp_pick=strategy, fp_task_max=args.budget, model_devi_jobs=[job],
                 numb_models=args.models,
                 convergence=[{"type": "validation", "force_rmse": 1e-9}])  # never: no early stop
        (work / "param.json").write_text(json.dumps(p, indent=1))
    return work


def curve(work: Path) -> list[tuple[int, float]]:
    """(labels trained on, committee-mean held-out force RMSE) after every training."""
    out, labels = [], 0
    for it in range(1000):
        it_dir = work / f"iter.{it:06d}"
        val = it_dir / "00.train" / "validation.json"
        if not val.is_file():
            break
        out.append((labels, json.loads(val.read_text())["mean"]["force"]))
        lab = it_dir / "02.fp" / "labels.json"
        labels += json.loads(lab.read_text())["labeled"] if lab.is_file() else 0
    return out


def labels_to(points: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, rmse in points if rmse <= target), None)


def report(curves: dict[str, dict[int, list[tuple[int, float]]]], targets: list[float]) -> None:
    print("\nheld-out force RMSE (eV/Å) of the committee mean after each training, mean±std over seeds,"
          "\nafter the labels shown (mean over seeds)")
    for strategy, by_seed in curves.items():
        n = min(len(c) for c in by_seed.values())
        rm = np.array([[r for _, r in c[:n]] for c in by_seed.values()])
        labels = np.array([[n_lab for n_lab, _ in c[:n]] for c in by_seed.values()]).mean(0)
        cells = "  ".join(f"{lab:4.0f}: {m:.4f}±{s:.4f}" for lab, m, s in zip(labels, rm.mean(0), rm.std(0),
                                                                            strict=True))
        print(f"{strategy:<9} {cells}")
    for target in targets:
        labels_table(curves, target)
    print("\nfinal RMSE (after every label) per strategy, mean over seeds, and ratio to random")
    finals = {s: float(np.mean([c[-1][1] for c in by_seed.values()])) for s, by_seed in curves.items()}
    for s, f in finals.items():
        print(f"{s:<9} {f:.4f}" + (f"   ratio {f / finals['random']:.2f}" if "random" in finals else ""))


def labels_table(curves: dict[str, dict[int, list[tuple[int, float]]]], target: float) -> None:
    print(f"\nlabels to reach {target} eV/Å (per seed; '-' not reached), mean, and ratio to random")
    means: dict[str, float | None] = {}
    for strategy, by_seed in curves.items():
        got = [labels_to(c, target) for c in by_seed.values()]
        reached = [g for g in got if g is not None]
        means[strategy] = float(np.mean(reached)) if got and len(reached) == len(got) else None
        shown = " ".join("-" if g is None else str(g) for g in got)
        mean = "-" if means[strategy] is None else f"{means[strategy]:.1f}"
        line = f"{strategy:<9} seeds {sorted(by_seed)}: {shown:<16} mean {mean}"
        base = means.get("random")
        if strategy != "random" and base and means[strategy] is not None:
            line += f"   ratio {means[strategy] / base:.2f}"
        print(line)


def selection_cost(root: Path, frames: int) -> None:
    """Fingerprints and FPS pick for ``frames`` candidates of a 64-atom box (16 CH3 groups,
    positions jiggled): the cost figure of the selection, with a model of a benchmark run."""
    from dpgen_ng.explore.pick import Candidates, picker
    from dpgen_ng.train import fingerprint
    from dpgen_ng.train.fingerprint import FrameSet

    models = sorted(root.glob("*/iter.000000/00.train/graph.000.pb"))
    if not models:
        sys.exit(f"no model under {root}: run the data-efficiency benchmark first")
    rng = np.random.default_rng(0)
    carbons = np.stack(np.meshgrid(np.arange(2), np.arange(2), np.arange(4), indexing="ij"),
                       -1).reshape(-1, 3) * np.array([6.0, 6.0, 3.0])
    arms = np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1]]) * 0.63
    atoms = np.concatenate([carbons, (carbons[:, None, :] + arms[None]).reshape(-1, 3)])
    types = np.array([1] * 16 + [0] * 48)  # type_map H, C
    coords = atoms[None] + rng.normal(scale=0.05, size=(frames, 64, 3))
    cells = np.broadcast_to(np.eye(3) * 12.0, (frames, 3, 3))
    t0 = time.monotonic()
    prints = fingerprint.compute(models[0], ["H", "C"], {"cand": FrameSet(coords, cells, types)})["cand"]
    t1 = time.monotonic()
    devi = rng.uniform(0.08, 0.2, frames)
    cand = Candidates(devi, np.zeros(frames, int), np.arange(frames), prints, prints[:1000])
    picks = picker("fps").pick(cand, 60, np.random.default_rng(1))
    t2 = time.monotonic()
    print(f"{frames} candidates of a 64-atom system, fingerprint size {prints.shape[1]}:")
    print(f"  fingerprints (one DeePMD-kit process, start-up included) {t1 - t0:8.1f} s")
    print(f"  fps pick of {len(picks)} against 1000 training frames (numpy)  {t2 - t1:8.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("bench-data-efficiency"))
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--iters", type=int, default=3, help="exploration iterations per run")
    ap.add_argument("--budget", type=int, default=10, help="fp_task_max: labels per iteration")
    ap.add_argument("--models", type=int, default=2, help="numb_models (2: half the example's training time)")
    ap.add_argument("--target", type=float, nargs="+", default=[0.05, 0.04],
                    help="held-out force RMSE targets, eV/Å")
    ap.add_argument("--selection-cost", action="store_true")
    ap.add_argument("--frames", type=int, default=100_000)
    args = ap.parse_args()
    root = args.root.resolve()
    if args.selection_cost:
        selection_cost(root, args.frames)
        return
    data = shared_data(root)
    curves: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for seed in args.seeds:  # seed by seed, so that an interrupted benchmark compares like with like
        for strategy in args.strategies:
            work = run_dir(root, data, strategy, seed, args)
            t0 = time.monotonic()
            dpgen("run", "param.json", "machine.json", cwd=work)
            print(f"{work.name}: {time.monotonic() - t0:.0f} s", flush=True)
            curves.setdefault(strategy, {})[seed] = curve(work)
    report(curves, args.target)


if __name__ == "__main__":
    main()
