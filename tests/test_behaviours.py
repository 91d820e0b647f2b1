"""Behaviours of the loop that no end-to-end run shows on its own, each on a tiny synthetic
work dir: the repeated first frame of MD runs that share a configuration, reusing the models
after an iteration with too few labels, and model_devi_clean_traj."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dpgen_ng.config.param import parse_run_params
from dpgen_ng.ledger import Ledger
from dpgen_ng.stages import fp, model_devi, train
from dpgen_ng.stages.context import IterContext
from dpgen_ng.summary import IterationSummary, write_summary


def test_first_frames_of_runs_from_one_conf_count_once():
    # three MD runs: two from conf a (300 K, 600 K), one from conf b; 3 frames each
    table = {"task": np.repeat([0, 1, 2], 3), "row": np.tile([0, 1, 2], 3)}
    tasks = [{"conf": "a"}, {"conf": "a"}, {"conf": "b"}]
    copies = fp._first_frame_copies(table, tasks)
    assert copies.tolist() == [False, False, False, True, False, False, False, False, False]
    assert not fp._first_frame_copies(table, [{"conf": "a"}, {"conf": "b"}, {"conf": "c"}]).any()


def context(tmp_path, example_param, iteration: int, **params) -> IterContext:
    p = dataclasses.replace(parse_run_params(example_param), **params)
    return IterContext(tmp_path, iteration, p, None, Ledger(tmp_path))  # type: ignore[arg-type]


@pytest.mark.parametrize("labeled, copied", [(2, True), (4, True), (5, False)])
def test_models_are_reused_after_fewer_labels_than_fp_task_min(tmp_path, example_param, labeled, copied):
    write_summary(tmp_path, IterationSummary(iteration=0, job=0, repeat=0, nsteps=10, systems={},
                                             labeled=labeled, label_failures={}))
    ctx = context(tmp_path, example_param, 1, fp_task_min=5)
    assert train._should_copy(ctx) == (labeled if copied else None)
    if not copied:
        return
    train.make(ctx)
    manifest = json.loads((ctx.stage_dir(0) / "tasks.json").read_text())
    assert manifest == {"tasks": [], "copied": True}
    note = json.loads((ctx.stage_dir(0) / train.COPIED).read_text())
    assert note == {"from_iteration": 0, "labels": labeled}
    train.run(ctx)  # nothing to train: no machine is even looked at (ctx has none)


@pytest.mark.parametrize("clean, iteration, gone", [(False, 3, None), (True, 3, 3), (2, 3, 1), (2, 1, None),
                                                    (1, 0, None)])
def test_which_trajectories_model_devi_clean_traj_removes(clean, iteration, gone):
    assert fp.iteration_to_clean(clean, iteration) == gone


def test_clean_trajectories_keeps_the_deviations(tmp_path, example_param):
    ctx = context(tmp_path, example_param, 2)
    for it in (0, 1):
        task = ctx.iter_path(it) / "01.model_devi" / "task.000.000000"
        task.mkdir(parents=True)
        (task / "all.lammpstrj").write_text("frames")
        (task / "model_devi.out").write_text("# step\n0 0.1\n")
    model_devi.clean_trajectories(ctx, 0)
    assert not (ctx.iter_path(0) / "01.model_devi" / "task.000.000000" / "all.lammpstrj").exists()
    assert (ctx.iter_path(0) / "01.model_devi" / "task.000.000000" / "model_devi.out").is_file()
    assert (ctx.iter_path(1) / "01.model_devi" / "task.000.000000" / "all.lammpstrj").is_file()
    model_devi.clean_trajectories(ctx, 5)  # an iteration that does not exist: nothing happens
