"""Rollback plans on a synthetic work dir, and finished tasks taken back from the archive by the
dispatcher (dpdispatcher's real Shell batch, tiny shell tasks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpgen_ng.dispatch import Dispatcher
from dpgen_ng.errors import UserError
from dpgen_ng.ledger import Ledger
from dpgen_ng.record import read_record
from dpgen_ng.rollback import apply, make_plan, parse_target
from tests.test_dispatch import make_tasks, stage


def workdir(tmp_path: Path) -> Path:
    """Iteration 0 finished, iteration 1 up to run_model_devi (step 4)."""
    w = tmp_path / "run"
    for d in ("iter.000000/00.train", "iter.000000/01.model_devi", "iter.000000/02.fp",
              "iter.000001/00.train", "iter.000001/01.model_devi"):
        (w / d).mkdir(parents=True)
        (w / d / "out.txt").write_text(d)
    (w / "iter.000000" / "summary.json").write_text("{}")
    (w / "record.dpgen").write_text("".join(f"{i} {s}\n" for i, s in
                                            [(0, s) for s in range(9)] + [(1, s) for s in range(5)]))
    return w


def test_parse_target():
    assert parse_target("3") == (3, 0)
    assert parse_target("3:7") == (3, 7)
    assert parse_target("3:make_fp") == (3, 6)
    for bad in ("x", "3:9", "-1", "3:fp", ""):
        with pytest.raises(UserError):
            parse_target(bad)


def test_plans(tmp_path):
    w = workdir(tmp_path)
    p = make_plan(w, (1, 3))
    assert p.keep_lines[-1] == "1 2" and len(p.keep_lines) == 12
    assert p.move == ("iter.000001/01.model_devi",) and p.in_place is None
    p = make_plan(w, (0, 7))
    assert p.keep_lines[-1] == "0 6"
    assert p.in_place == "iter.000000/02.fp"
    assert p.move == ("iter.000000/summary.json", "iter.000001")
    p = make_plan(w, (0, 0))
    assert p.keep_lines == () and p.move == ("iter.000000", "iter.000001")
    assert p.archive == ".dpgen/rollback/001"
    with pytest.raises(UserError, match="has not finished yet"):
        make_plan(w, (1, 5))
    with pytest.raises(UserError, match="no record.dpgen"):
        make_plan(tmp_path, (0, 0))
    (w / "record.dpgen").write_text("0 0\n0 1\n0 5\n")  # edited by hand
    with pytest.raises(UserError, match="no line '0 3' in record.dpgen"):
        make_plan(w, (0, 4))
    assert make_plan(w, (0, 2)).keep_lines == ("0 0", "0 1")


def test_apply_moves_and_cuts_the_record(tmp_path):
    w = workdir(tmp_path)
    with Ledger(w) as led:
        led.step_done(1, 2, 0.0, 1.0)
        led.step_done(0, 8, 0.0, 1.0)
        apply(make_plan(w, (0, 7)), led)
        assert set(led.step_times()) == set()  # 0 8 and 1 2 come after 0 7
        assert led.meta_get("stop_kind") == "rolled_back"
    assert read_record(w) == (0, 6)
    arch = w / ".dpgen" / "rollback" / "001"
    assert (arch / "iter.000001" / "01.model_devi" / "out.txt").read_text() == "iter.000001/01.model_devi"
    assert (arch / "record.dpgen").read_text().endswith("1 4\n")
    assert (w / "iter.000000" / "02.fp" / "out.txt").exists()  # in place: run_fp is redone there
    assert not (w / "iter.000001").exists()
    assert make_plan(w, (0, 0)).archive == ".dpgen/rollback/002"


def test_finished_tasks_come_back_from_the_archive_unless_their_inputs_changed(tmp_path):
    w = tmp_path / "run"
    base = w / "iter.000000" / "02.fp"
    counter = tmp_path / "count.log"
    body = f"echo run >> {counter}; cat in.txt > out.txt"
    specs = make_tasks(base, 3, body)
    (w / "record.dpgen").write_text("".join(f"0 {s}\n" for s in range(9)))
    with Ledger(w) as led:
        disp = Dispatcher(w, stage(tmp_path), led)
        disp.run(0, "fp", base, specs)
        assert counter.read_text().count("run") == 3
        apply(make_plan(w, (0, 6)), led)
        assert not base.exists()
        specs = make_tasks(base, 3, body)  # make_fp again: same inputs, except task 2's
        (base / "task.002" / "in.txt").write_text("changed\n")
        res = disp.run(0, "fp", base, specs)
        assert [r.rc for r in res] == [0, 0, 0]
        assert counter.read_text().count("run") == 4  # only the changed task ran
        assert [(base / f"task.{i:03d}" / "out.txt").read_text() for i in range(3)] == ["0\n", "1\n",
                                                                                       "changed\n"]
        assert all(r.runs == 1 for r in led.tasks())
    arch = w / ".dpgen" / "rollback" / "001" / "iter.000000" / "02.fp"
    assert (arch / "task.002" / "out.txt").read_text() == "2\n"  # the old result is still there
    assert not (arch / "task.000" / "out.txt").exists()  # moved back into the run
