"""The dispatcher on dpdispatcher's real Shell batch + LocalContext (tiny shell tasks)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dpgen_ng.config.machine import parse_stage
from dpgen_ng.dispatch import Dispatcher, TaskSpec, read_task_rc, task_id
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.ledger import Ledger


def stage(tmp_path: Path, group_size: int = 1) -> object:
    return parse_stage({
        "command": "bash",
        "machine": {"batch_type": "Shell", "context_type": "LocalContext", "local_root": "./",
                    "remote_root": str(tmp_path / "remote"), "retry_count": 0},
        "resources": {"group_size": group_size, "para_deg": 2},
        "check_interval": 0.2,
    }, "fp", "fp")


def make_tasks(base: Path, n: int, body: str) -> list[TaskSpec]:
    specs = []
    for i in range(n):
        d = base / f"task.{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "in.txt").write_text(f"{i}\n")
        specs.append(TaskSpec(d.name, body, ("in.txt",), ("out.txt",), "log", "err"))
    return specs


def test_runs_once_then_skips(tmp_path):
    base = tmp_path / "stage"
    counter = tmp_path / "count.log"
    specs = make_tasks(base, 3, f"echo run >> {counter}; cat in.txt > out.txt")
    with Ledger(tmp_path) as led:
        disp = Dispatcher(tmp_path, stage(tmp_path, group_size=2), led)
        res = disp.run(0, "fp", base, specs)
        assert [r.rc for r in res] == [0, 0, 0]
        assert (base / "task.002" / "out.txt").read_text() == "2\n"
        assert counter.read_text().count("run") == 3
        res2 = disp.run(0, "fp", base, specs)  # all done: nothing is submitted again
        assert [r.task_id for r in res2] == [r.task_id for r in res]
        assert counter.read_text().count("run") == 3
        assert {r.state for r in led.tasks()} == {"finished"}
        assert all(r.runs == 1 for r in led.tasks())
        (base / "task.001" / "in.txt").write_text("changed\n")  # new inputs: a new task
        disp.run(0, "fp", base, specs)
        assert counter.read_text().count("run") == 4


def test_task_id_depends_on_inputs(tmp_path):
    specs = make_tasks(tmp_path, 1, "true")
    a = task_id(tmp_path, specs[0])
    assert a == task_id(tmp_path, specs[0])
    (tmp_path / "task.000" / "in.txt").write_text("x")
    assert task_id(tmp_path, specs[0]) != a
    assert task_id(tmp_path, TaskSpec("task.000", "false", ("in.txt",), ())) != a


def test_tolerated_failure_is_a_result(tmp_path):
    base = tmp_path / "stage"
    specs = make_tasks(base, 2, "if [ $(cat in.txt) = 1 ]; then echo boom >&2; exit 3; fi; touch out.txt")
    with Ledger(tmp_path) as led:
        res = Dispatcher(tmp_path, stage(tmp_path), led).run(0, "fp", base, specs, allow_failures=True)
        assert [r.rc for r in res] == [0, 3]
        assert led.get(res[1].task_id).state == "failed"
        assert led.get(res[1].task_id).reason == "exit code 3"
    # the output the failed task never made is declared missing, and no empty stand-in is left
    # behind that looks like a result
    assert read_task_rc(base / "task.001").missing == ("out.txt",)
    assert not (base / "task.001" / "out.txt").exists()
    assert read_task_rc(base / "task.000").missing == ()
    assert (base / "task.000" / "out.txt").is_file()


def test_failure_names_dir_exit_code_and_stderr(tmp_path):
    base = tmp_path / "stage"
    specs = make_tasks(base, 2, "if [ $(cat in.txt) = 1 ]; then echo boom-$(cat in.txt) >&2; exit 3; fi; "
                                "touch out.txt")
    with Ledger(tmp_path) as led, pytest.raises(StageError) as info:
        Dispatcher(tmp_path, stage(tmp_path), led).run(0, "train", base, specs)
    msg = str(info.value)
    assert "1 train task(s) failed" in msg
    assert str(base / "task.001") in msg
    assert "boom-1" in msg


def test_user_forward_files_reach_every_task(tmp_path):
    base = tmp_path / "stage"
    (tmp_path / "shared.dat").write_text("common\n")
    st = dataclasses.replace(stage(tmp_path), user_forward_files=("shared.dat",))
    specs = make_tasks(base, 2, "cat shared.dat > out.txt")
    with Ledger(tmp_path) as led:
        res = Dispatcher(tmp_path, st, led).run(0, "fp", base, specs)
    assert [r.rc for r in res] == [0, 0]
    assert (base / "task.001" / "out.txt").read_text() == "common\n"
    missing = dataclasses.replace(st, user_forward_files=("nope.dat",))
    other = make_tasks(tmp_path / "other", 1, "true")
    with Ledger(tmp_path) as led, pytest.raises(UserError, match="nope.dat"):
        Dispatcher(tmp_path, missing, led).run(0, "fp", tmp_path / "other", other)


def test_lazy_local_context_runs_in_place(tmp_path):
    machine = {"batch_type": "Shell", "context_type": "LazyLocalContext", "local_root": "./"}
    st = parse_stage({"command": "bash", "machine": machine, "resources": {"group_size": 2},
                      "check_interval": 0.2}, "fp", "fp")
    base = tmp_path / "stage"
    specs = make_tasks(base, 2, "pwd > out.txt")
    with Ledger(tmp_path) as led:
        res = Dispatcher(tmp_path, st, led).run(0, "fp", base, specs)
    assert [r.rc for r in res] == [0, 0]
    assert (base / "task.001" / "out.txt").read_text().strip() == str(base / "task.001")


def test_identical_inputs_in_two_directories_are_two_tasks(tmp_path):
    base = tmp_path / "stage"
    specs = make_tasks(base, 2, "cat in.txt > out.txt")
    (base / "task.001" / "in.txt").write_text((base / "task.000" / "in.txt").read_text())
    assert task_id(base, specs[0]) != task_id(base, specs[1])
    with Ledger(tmp_path) as led:
        res = Dispatcher(tmp_path, stage(tmp_path), led).run(0, "fp", base, specs)
    assert [r.rc for r in res] == [0, 0]
    assert (base / "task.001" / "out.txt").read_text() == "0\n"
