"""``dpgen rollback WORKDIR ITER[:STEP]``: continue a run from an earlier step.

The record is cut back to the step before the target, and what the undone steps made is moved
(never deleted) into ``.dpgen/rollback/NNN``. When the run goes on, a task whose inputs and
command are the same as those of a finished task in such an archive takes that task's outputs
back instead of running again (``dispatch/reuse.py``): the task ledger and the rc file name
the task by the hash of its inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dpgen_ng.dispatch.reuse import ARCHIVES_KEY
from dpgen_ng.errors import UserError
from dpgen_ng.io import atomic_write_text
from dpgen_ng.ledger import Ledger
from dpgen_ng.record import RECORD_NAME, STAGE_DIRS, STEPS, iter_name, next_step, read_record
from dpgen_ng.summary import SUMMARY_FILE

ARCHIVE_ROOT = Path(".dpgen") / "rollback"


def parse_target(text: str) -> tuple[int, int]:
    """``ITER`` or ``ITER:STEP`` (STEP a number 0-8 or a step name such as run_fp)."""
    it_s, _, step_s = text.partition(":")
    try:
        it = int(it_s)
        step = 0 if not step_s else STEPS.index(step_s) if step_s in STEPS else int(step_s)
    except ValueError:
        raise UserError(f"cannot read {text!r}", "ITER[:STEP]",
                        f"an iteration number, optionally ':' and a step 0-8 or one of {', '.join(STEPS)}"
                        ) from None
    if it < 0 or not 0 <= step < len(STEPS):
        raise UserError(f"{text!r} is out of range", "ITER[:STEP]", "iteration ≥ 0 and step 0-8")
    return it, step


def step_label(it: int, step: int) -> str:
    return f"{iter_name(it)} step {step} ({STEPS[step]})"


@dataclass(frozen=True)
class Plan:
    workdir: Path
    last: tuple[int, int]  # the last finished step now
    target: tuple[int, int]  # the first step to run again
    keep_lines: tuple[str, ...]  # record.dpgen after the rollback
    move: tuple[str, ...]  # paths (relative to the work dir) that go into the archive
    in_place: str | None  # a stage dir that stays, its run or post step undone
    archive: str

    def lines(self, dry_run: bool) -> list[str]:
        would = "would be " if dry_run else ""
        it, step = self.target
        before = "nothing" if self.target == (0, 0) else step_label(*_prev(self.target))
        now = would or "is now "
        out = [f"record.dpgen: the last finished step {now}{before} (was {step_label(*self.last)}); "
               f"`dpgen run` continues at {step_label(it, step)}"]
        if self.move:
            out.append(f"{would or 'were '}moved to {self.archive} (nothing is deleted; a finished task "
                       f"whose inputs do not change is taken back from there): {', '.join(self.move)}")
        if self.in_place:
            what = "run and post steps run" if step % 3 == 1 else "post step runs"
            out.append(f"{self.in_place} stays in place with its tasks; its {what} again"
                       + ("; a task whose inputs or command changed is run again and its old outputs are "
                          "overwritten" if step % 3 == 1 else ""))
        return out


def _prev(target: tuple[int, int]) -> tuple[int, int]:
    it, step = target
    return (it - 1, len(STEPS) - 1) if step == 0 else (it, step - 1)


def make_plan(workdir: Path, target: tuple[int, int]) -> Plan:
    workdir = Path(workdir).resolve()
    record = workdir / RECORD_NAME
    if not record.is_file():
        raise UserError("no record.dpgen here", str(workdir), "the work dir of a `dpgen run`")
    last = read_record(workdir)
    if target >= next_step(last):
        raise UserError(f"{step_label(*target)} has not finished yet", "ITER[:STEP]",
                        f"a finished step, at most {step_label(*last)}")
    lines = [ln for ln in record.read_text().splitlines() if ln.strip()]
    keep: list[str] = []
    if target != (0, 0):
        prev = "{} {}".format(*_prev(target))
        idx = max((i for i, ln in enumerate(lines) if " ".join(ln.split()) == prev), default=None)
        if idx is None:  # a hand-edited record that skips it
            raise UserError(f"no line '{prev}' in record.dpgen", str(record),
                            "a record with a line for the step before the target")
        keep = lines[: idx + 1]
    it, step = target
    stage = step // 3
    move: list[str] = []
    in_place = None
    here = workdir / iter_name(it)
    if step == 0:
        move.append(iter_name(it))
    else:
        first = stage if step % 3 == 0 else stage + 1
        if step % 3:
            in_place = f"{iter_name(it)}/{STAGE_DIRS[stage]}"
        move += [f"{iter_name(it)}/{d}" for d in STAGE_DIRS[first:] if (here / d).exists()]
        if (here / SUMMARY_FILE).exists():
            move.append(f"{iter_name(it)}/{SUMMARY_FILE}")
    later = it + 1
    while (workdir / iter_name(later)).exists():
        move.append(iter_name(later))
        later += 1
    root = workdir / ARCHIVE_ROOT
    n = 1 + max((int(p.name) for p in root.glob("[0-9][0-9][0-9]") if p.is_dir()), default=0)
    return Plan(workdir, last, target, tuple(keep), tuple(m for m in move if (workdir / m).exists()),
                in_place, str(ARCHIVE_ROOT / f"{n:03d}"))


def apply(plan: Plan, ledger: Ledger) -> None:
    """Move, then cut the record (the record last: a crash before it leaves the run as it was,
    with some outputs in the archive, from where the rerun takes them back)."""
    w = plan.workdir
    archive = w / plan.archive
    archive.mkdir(parents=True)
    shutil.copy2(w / RECORD_NAME, archive / RECORD_NAME)
    (archive / "ROLLBACK.txt").write_text("\n".join(plan.lines(dry_run=False)) + "\n"
                                          + f"at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    archives = json.loads(ledger.meta_get(ARCHIVES_KEY) or "[]")
    ledger.meta_set(ARCHIVES_KEY, json.dumps([*archives, plan.archive]))
    for rel in plan.move:
        dest = archive / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(w / rel, dest)
    ledger.forget_after(*plan.target)
    ledger.meta_set("stop_kind", "rolled_back")
    ledger.meta_set("stop_reason", f"rolled back: `dpgen run` continues at {step_label(*plan.target)}")
    atomic_write_text(w / RECORD_NAME, "".join(f"{ln}\n" for ln in plan.keep_lines))
