"""Live progress: the step read from the tail of a task's file, and the plain log lines a
non-terminal sees while dpdispatcher's real Shell batch runs a slow fake engine."""

from __future__ import annotations

import io
import logging
import re

from dpgen_ng.dispatch import Dispatcher, TaskSpec
from dpgen_ng.dispatch.progress import Meter, Watch, last_step
from dpgen_ng.ledger import Ledger
from tests.test_dispatch import stage


def test_last_step_reads_the_last_complete_data_line():
    lcurve = "#  step  rmse_trn\n      0  1.0e+00\n    100  5.0e-01\n"
    assert last_step(lcurve) == 100
    assert last_step(lcurve + "    2") == 100  # a line still being written is not read
    assert last_step("#  step  rmse\n") is None
    assert last_step("") is None
    devi = "#       step         max_devi_v\n          0   1.2e-02\n         30   2.0e-02\n"
    assert last_step(devi) == 30


def test_non_terminal_gets_plain_progress_lines(tmp_path, monkeypatch, caplog):
    """A fake engine (bash) that appends a step to lcurve.out every 0.3 s, as `dp train` does."""
    monkeypatch.setenv("DPGEN_PROGRESS_SECONDS", "0.5")
    base = tmp_path / "stage"
    body = 'for i in 1 2 3 4 5 6 7 8; do echo "$((i * 10)) 0.1" >> lcurve.out; sleep 0.3; done; touch out.txt'
    specs = []
    for i in range(2):
        (base / f"task.{i:03d}").mkdir(parents=True)
        (base / f"task.{i:03d}" / "in.txt").write_text(f"{i}\n")
        specs.append(TaskSpec(f"task.{i:03d}", body, ("in.txt",), ("out.txt", "lcurve.out"),
                              watch=Watch("lcurve.out", 80)))
    caplog.set_level(logging.INFO, logger="dpgen_ng.progress")
    with Ledger(tmp_path) as led:
        res = Dispatcher(tmp_path, stage(tmp_path), led).run(0, "train", base, specs)
    assert [r.rc for r in res] == [0, 0]
    lines = [r.getMessage() for r in caplog.records if r.name == "dpgen_ng.progress"]
    assert lines, "no progress line"
    assert all(m.startswith("train: ") for m in lines)
    steps = [int(s) for m in lines for s in re.findall(r"(\d+)/80", m)]
    assert steps and max(steps) > 0, lines
    assert any("ETA" in m for m in lines), lines


def test_meter_is_quiet_between_lines(monkeypatch, caplog):
    monkeypatch.setenv("DPGEN_PROGRESS_SECONDS", "3600")
    caplog.set_level(logging.INFO, logger="dpgen_ng.progress")
    meter = Meter("fp", 10, 0, stream=io.StringIO())
    for done in range(5):
        meter.update(done, [])
    assert not [r for r in caplog.records if r.name == "dpgen_ng.progress"]
