"""Benchmark: one methane iteration (train → explore → label) on this machine.

Prints the wall time, the time spent inside external programs (dp, lmp, xtb: the union of the
start–end intervals every task records in its ``dpgen_task.rc``), and the engine's own overhead
(the rest: input writing, selection, parsing, dpdispatcher submission and polling).
Target: overhead ≤ 2 % of the iteration. A figure, not a test.

With ``--dpgen PYTHON`` (or ``DPGEN_PYTHON``), the Python of a side venv where DP-GEN 0.14 is
installed, DP-GEN then runs the same iteration from the same init data (bench/dpgen_side.py) and
both times are printed. Without it, the ratio is to DP-GEN's last figure measured here.

    python bench/iteration.py [--keep DIR] [--steps N] [--dpgen PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]

from dpgen_side import run_dpgen  # noqa: E402  (bench/ is the script's dir)

from dpgen_ng.config.init import parse_init_params  # noqa: E402
from dpgen_ng.config.machine import parse_machine  # noqa: E402
from dpgen_ng.config.param import parse_run_params  # noqa: E402
from dpgen_ng.dispatch import read_task_rc  # noqa: E402
from dpgen_ng.initbulk.bulk import init_bulk  # noqa: E402
from dpgen_ng.ledger import Ledger  # noqa: E402
from dpgen_ng.log import setup_logging  # noqa: E402
from dpgen_ng.loop import STEP_FUNCS  # noqa: E402
from dpgen_ng.record import STEPS, append_record  # noqa: E402
from dpgen_ng.stages.context import IterContext  # noqa: E402

EXAMPLE = ROOT / "examples" / "methane"
INIT_DIR = "CH4.POSCAR.01x01x01"  # init_bulk's output for CH4.POSCAR, 1×1×1
# DP-GEN 0.14 (PyPI, in a side venv sharing this venv's dp, lmp, dpdata, dpdispatcher), one methane
# iteration on the 2-core CI box, 2026-12-02: train 123.1 s, explore 31.1 s, label 31.5 s
DPGEN_ITERATION_S = 185.7


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def task_intervals(stage_dir: Path) -> list[tuple[float, float]]:
    out = []
    for rc in stage_dir.glob("*/dpgen_task.rc"):
        info = read_task_rc(rc.parent)
        if info is not None:
            out.append((info.start, info.end))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work dir to use and keep (default: a temp dir)")
    ap.add_argument("--steps", type=int, default=None, help="override training numb_steps")
    ap.add_argument("--dpgen", type=Path, default=os.environ.get("DPGEN_PYTHON") or None,
                    help="Python of a venv with DP-GEN 0.14 installed: run it too (bench/dpgen_side.py)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dpgen-bench-"))
    dpgen_work = work.with_name(work.name + "-dpgen")  # DP-GEN's run, with --dpgen
    for old in (work, dpgen_work):
        shutil.rmtree(old, ignore_errors=True)
    work.mkdir(parents=True)
    for f in EXAMPLE.iterdir():
        shutil.copy(f, work / f.name)
    setup_logging(work)
    raw_machine = json.loads((EXAMPLE / "machine.json").read_text())
    machines = parse_machine(raw_machine)
    init = parse_init_params(json.loads((EXAMPLE / "init.json").read_text()), work)
    init_bulk(init, work, machines)
    raw = json.loads((EXAMPLE / "param-dpgen.json").read_text())  # no held-out set to make
    if args.steps:
        raw["default_training_param"]["training"]["numb_steps"] = args.steps
    params = parse_run_params(raw)

    step_wall: dict[str, float] = {}
    t_start = time.time()
    with Ledger(work) as ledger:
        ctx = IterContext(work.resolve(), 0, params, machines, ledger)
        for step, func in enumerate(STEP_FUNCS):
            t0 = time.time()
            func(ctx)
            append_record(work, 0, step)
            step_wall[STEPS[step]] = time.time() - t0
    wall = time.time() - t_start

    stage_dirs = {"train": ctx.stage_dir(0), "model_devi": ctx.stage_dir(1), "fp": ctx.stage_dir(2)}
    external = {k: union_seconds(task_intervals(d)) for k, d in stage_dirs.items()}
    # post_fp's DeePMD-kit evaluation of the committee (a child process, not a dispatched task)
    cal = ctx.stage_dir(2) / "calibration.json"
    evaluation = json.loads(cal.read_text()).get("seconds", 0.0) if cal.is_file() else 0.0
    ext_total = sum(external.values()) + evaluation
    overhead = wall - ext_total
    print(f"methane iteration 0 in {work}")
    print(f"{'step':<18}{'wall s':>9}")
    for name, secs in step_wall.items():
        print(f"{name:<18}{secs:>9.2f}")
    print()
    for stage, secs in external.items():
        run = step_wall[f"run_{stage}"]
        print(f"{stage:<11} external programs {secs:7.2f} s   run step {run:7.2f} s   "
              f"dispatch overhead {run - secs:6.2f} s")
    print(f"evaluation  DeePMD-kit inference {evaluation:7.2f} s   (post_fp: calibration on the new labels)")
    print()
    print(f"wall time of the iteration   {wall:8.2f} s")
    print(f"inside external programs     {ext_total:8.2f} s")
    print(f"engine overhead (the rest)   {overhead:8.2f} s = {100 * overhead / wall:.1f} % (target ≤ 2 %)")
    if args.dpgen:
        dp = run_dpgen(args.dpgen, work / INIT_DIR, dpgen_work, raw, raw_machine)
        print(f"DP-GEN 0.14 in {dpgen_work}: train {dp['train']:.1f} s, explore {dp['explore']:.1f} s, "
              f"label {dp['label']:.1f} s, iteration {dp['total']:.1f} s (measured now)")
        reference, how = dp["total"], "measured now"
    else:
        reference, how = DPGEN_ITERATION_S, "its figure measured on 2026-12-02, not now"
    print(f"ratio to DP-GEN 0.14's {reference:.1f} s ({how}): {wall / reference:.2f}x, "
          f"{(wall - evaluation) / reference:.2f}x without the calibration DP-GEN does not do "
          "(target ≤ 0.70x)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dpgen_work, ignore_errors=True)


if __name__ == "__main__":
    main()
