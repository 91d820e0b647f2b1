"""DP-GEN 0.14 on bench/iteration.py's workload, when it is installed in a side venv.

Nothing here installs DP-GEN. Point ``--dpgen`` (or ``DPGEN_PYTHON``) at the Python of a venv
where ``import dpgen`` works, for example:

    python -m venv /opt/dpgen-side
    echo "$PWD/.venv/lib/python3.11/site-packages" > /opt/dpgen-side/lib/python3.11/site-packages/zz.pth
    /opt/dpgen-side/bin/pip install --no-deps "dpgen==0.14.0"

so that both runs use the same dp, lmp, xtb, dpdata and dpdispatcher. DP-GEN gets the same init
data, param (only ``fp_style`` differs: DP-GEN has no xtb style, so ``custom`` runs
bench/dpgen_xtb.py, the same xtb command line) and machine.json. Its run is stopped when
``record.dpgen`` says iteration 0's post_fp is done.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from dpgen_ng.errors import UserError
from dpgen_ng.record import STEPS, read_record

HERE = Path(__file__).resolve().parent
OURS_ONLY = {"seed"}  # keys DP-GEN's strict check refuses (its seeds come from its own generator)
LAST_STEP = {"train": 2, "explore": 5, "label": 8}  # record.dpgen step after which a stage is done


def dpgen_param(raw: dict) -> dict:
    """Our methane param in DP-GEN's terms: one exploration job, xtb through ``custom``."""
    param = {k: v for k, v in raw.items() if not k.startswith("_") and k not in OURS_ONLY}
    param["model_devi_jobs"] = raw["model_devi_jobs"][:1]
    param["fp_style"] = "custom"
    param["fp_params"] = {"input_fmt": "deepmd/raw", "input_fn": "input",
                          "output_fmt": "deepmd/raw", "output_fn": "labels"}
    return param


def dpgen_machine(raw: dict) -> dict:
    machine = json.loads(json.dumps(raw))
    machine["fp"]["command"] = f"{sys.executable} {HERE / 'dpgen_xtb.py'}"
    return machine


def _last_step(work: Path) -> int:
    """Iteration 0's last finished step in DP-GEN's record.dpgen (our format, and our reader)."""
    try:
        it, step = read_record(work)
    except UserError:  # a line being written
        return -1
    return step if it == 0 else len(STEPS) - 1


def run_dpgen(python: Path, init_dir: Path, work: Path, param: dict, machine: dict) -> dict[str, float]:
    """Run DP-GEN's iteration 0 in ``work``; the seconds until each stage ended, and the total."""
    work.mkdir(parents=True)
    shutil.copytree(init_dir, work / init_dir.name)
    (work / "param.json").write_text(json.dumps(dpgen_param(param), indent=1))
    (work / "machine.json").write_text(json.dumps(dpgen_machine(machine), indent=1))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(python), "-c", "import sys; from dpgen.main import main; sys.exit(main())",
           "run", "param.json", "machine.json"]
    ends: dict[str, float] = {}
    with open(work / "dpgen.stdout", "w") as out:
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while "label" not in ends:
                if proc.poll() is not None:
                    raise RuntimeError(f"DP-GEN stopped (rc {proc.returncode}) before iteration 0 "
                                       f"ended: see {work / 'dpgen.stdout'}")
                last = _last_step(work)
                for stage, step in LAST_STEP.items():
                    if last >= step and stage not in ends:
                        ends[stage] = time.time() - t0
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
    return {"train": ends["train"], "explore": ends["explore"] - ends["train"],
            "label": ends["label"] - ends["explore"], "total": ends["label"]}
