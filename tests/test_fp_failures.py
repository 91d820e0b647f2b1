"""The fp stage with real xtb labels: one task crashes (overlapping atoms), one does not converge
(a stretched C-H bond with max_iterations 6), one is labeled. The run goes on under
ratio_failed and reports both; above it, the stage stops and names them."""

from __future__ import annotations

import dataclasses
import json

import dpdata
import numpy as np
import pytest

from dpgen_ng.config.machine import parse_machine
from dpgen_ng.config.param import parse_run_params
from dpgen_ng.errors import StageError
from dpgen_ng.ledger import Ledger
from dpgen_ng.stages import fp
from dpgen_ng.stages.context import IterContext, write_manifest
from dpgen_ng.status import collect_status
from tests.conftest import EXAMPLE, load_example

pytestmark = pytest.mark.engine


def frames() -> list[dpdata.System]:
    ok = dpdata.System(str(EXAMPLE / "CH4.POSCAR"), fmt="vasp/poscar", type_map=["H", "C"])
    crash = ok.copy()
    crash.data["coords"][0, 0] = crash.data["coords"][0, 4]  # an H on top of the C
    far = ok.copy()
    far.data["coords"][0, 0] = [6.3, 6.3, 6.3]  # C-H stretched to 2.25 Å
    return [ok, crash, far]


@pytest.fixture
def ctx(tmp_path):
    param = load_example("param-dpgen.json")
    param["fp_params"] = {"max_iterations": 6}
    machine = load_example("machine.json")
    machine["fp"]["machine"]["remote_root"] = str(tmp_path / "remote")
    with Ledger(tmp_path) as ledger:
        c = IterContext(tmp_path, 0, parse_run_params(param), parse_machine(machine), ledger)
        fp_dir = c.stage_dir(2)
        lab = fp.labeler(c)
        tasks = []
        for i, frame in enumerate(frames()):
            d = fp_dir / f"task.000.{i:06d}"
            d.mkdir(parents=True)
            lab.write_inputs(frame, d)
            tasks.append({"path": d.name, "sys_idx": 0, "md_task": "task.000.000000", "step": 10 * i})
        write_manifest(fp_dir, tasks)
        yield c


def test_crash_and_unconverged_are_reported_and_the_run_goes_on(ctx):
    ctx = dataclasses.replace(ctx, params=dataclasses.replace(ctx.params, ratio_failed=0.7))
    fp.run(ctx)
    fp.collect_labels(ctx)  # post_fp's first part (the rest judges the iteration: test_e2e_converge)
    fp_dir = ctx.stage_dir(2)
    labels = json.loads((fp_dir / "labels.json").read_text())
    assert labels["labeled"] == 1 and labels["failed"] == 2
    assert labels["by_reason"] == {"crashed": 1, "unconverged": 1} and labels["by_system"] == {"000": 1}
    kinds = {r["path"]: r.get("kind") for r in labels["tasks"]}
    assert kinds == {"task.000.000000": None, "task.000.000001": "crashed", "task.000.000002": "unconverged"}
    good = dpdata.LabeledSystem(str(next((fp_dir / "data.000").iterdir())), fmt="deepmd/npy")
    assert good.get_nframes() == 1
    kept = dpdata.System(str(next((fp_dir / "failed.000").iterdir())), fmt="deepmd/npy")
    assert kept.get_nframes() == 2  # kept aside, not in data.*
    assert np.allclose(kept["coords"][1][0], [6.3, 6.3, 6.3])
    (ctx.workdir / "record.dpgen").write_text("0 8\n")
    status = collect_status(ctx.workdir)
    assert status["iterations"][0]["label_failures"] == {"crashed": 1, "unconverged": 1}


def test_too_many_failures_stop_the_stage_and_keep_the_good_label(ctx):
    ctx = dataclasses.replace(ctx, params=dataclasses.replace(ctx.params, ratio_failed=0.5))
    fp.run(ctx)
    with pytest.raises(StageError) as info:
        fp.post(ctx)
    msg = str(info.value)
    assert "2 of 3 fp tasks failed" in msg
    assert "task.000.000001: crashed" in msg and "task.000.000002: unconverged" in msg
    assert (ctx.stage_dir(2) / "data.000").is_dir()  # the finished label is not lost
