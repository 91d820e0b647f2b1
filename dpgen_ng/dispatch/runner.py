"""Run a stage's tasks through dpdispatcher, with a content-addressed ledger for resume.

Each task's command is wrapped so that it leaves ``dpgen_task.rc`` (exit code, start, end, task
id) in its directory; that file comes back with the outputs. A task whose directory holds an rc
file with its own id is done and is never submitted again, whatever the ledger says (the disk
is the truth; the ledger is the history). Pending tasks are submitted as one dpdispatcher
submission: because ids, commands and files are deterministic, a rerun after a crash builds the
same submission and dpdispatcher re-attaches to its jobs instead of starting them again.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpgen_ng.config.machine import LOCAL_CONTEXT_NAMES, StageMachine, runs_here
from dpgen_ng.dispatch.driver import Batch, Driver
from dpgen_ng.dispatch.local_stop import stop_jobs
from dpgen_ng.dispatch.progress import Meter, Running, Watch
from dpgen_ng.dispatch.reuse import archives, restore_task
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.interrupt import Interrupted
from dpgen_ng.io import relink, tail
from dpgen_ng.ledger import Ledger, TaskUpdate

RC_FILE = "dpgen_task.rc"
LOCAL_CONTEXTS = LOCAL_CONTEXT_NAMES
log = logging.getLogger("dpgen_ng.dispatch")


@dataclass(frozen=True)
class TaskSpec:
    """One task: a directory (relative to the stage's work base), a command, its files."""

    path: str
    command: str
    forward_files: tuple[str, ...]
    backward_files: tuple[str, ...]
    outlog: str = "log"
    errlog: str = "err"
    watch: Watch | None = None  # a file whose last line tells how far the running task is


@dataclass(frozen=True)
class TaskResult:
    path: str
    task_id: str
    rc: int | None  # None: the job never completed (killed, lost, retries exhausted)
    start: float | None = None
    end: float | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0


def _hash_path(h: hashlib._Hash, path: Path, name: str) -> None:
    if path.is_dir():
        for sub in sorted(path.rglob("*")):
            if sub.is_file():
                _hash_path(h, sub, f"{name}/{sub.relative_to(path)}")
        return
    h.update(name.encode() + b"\0")
    h.update(path.read_bytes() if path.exists() else b"<missing>")
    h.update(b"\0")


def task_id(work_base: Path, spec: TaskSpec) -> str:
    """A hash of what the task is: its directory, command and forward files' contents.

    The directory is part of it: two tasks with identical inputs in two directories (e.g. the
    same structure picked twice) are still two tasks, each with its own results.
    """
    h = hashlib.sha256(spec.path.encode() + b"\0" + spec.command.encode() + b"\0")
    for name in sorted(spec.forward_files):
        _hash_path(h, Path(work_base) / spec.path / name, name)
    return h.hexdigest()[:24]


def wrap_command(command: str, tid: str, exit_zero: bool, outputs: Sequence[str] = ()) -> str:
    """The command as submitted: runs ``command`` in a subshell and leaves the rc file.

    Declared outputs that the command did not make are created empty (dpdispatcher refuses to
    download a missing file) and named in the rc file, so that parsers report them as missing.
    The job exits with the command's exit code (so dpdispatcher retries it up to
    ``retry_count``), or with 0 when ``exit_zero`` (a failure that is a result, not an accident).
    """
    final = "0" if exit_zero else "$_dpgen_rc"
    fill = ""
    plain = [o for o in outputs if not any(c in o for c in "*?[")]
    if plain:
        names = " ".join(shlex.quote(o) for o in plain)
        fill = (f'for _f in {names}; do [ -e "$_f" ] || {{ : > "$_f"; _dpgen_miss="$_dpgen_miss,$_f"; }}; '
                "done; ")
    return (
        '_dpgen_t0=$(date +%s.%N); _dpgen_miss=""; '
        f"( {command} ); _dpgen_rc=$?; {fill}"
        f'echo "$_dpgen_rc $_dpgen_t0 $(date +%s.%N) {tid} ,$_dpgen_miss" > {RC_FILE}.tmp '
        f"&& mv {RC_FILE}.tmp {RC_FILE}; "
        f"exit {final}"
    )


@dataclass(frozen=True)
class RcInfo:
    """What a finished task left in its rc file."""

    rc: int
    start: float
    end: float
    task_id: str
    missing: tuple[str, ...]


def read_task_rc(task_dir: Path) -> RcInfo | None:
    try:
        parts = (Path(task_dir) / RC_FILE).read_text().split()
        missing = tuple(m for m in (parts[4] if len(parts) > 4 else "").split(",") if m)
        return RcInfo(int(parts[0]), float(parts[1]), float(parts[2]), parts[3], missing)
    except (OSError, ValueError, IndexError):
        return None


def exit_code(task_dir: Path) -> int | None:
    """The exit code a finished task left in its rc file (None if it never finished)."""
    info = read_task_rc(task_dir)
    return None if info is None else info.rc


@dataclass
class _StageRun:
    """The tasks of one ``Dispatcher.run`` call and what is known about them."""

    workdir: Path
    iteration: int
    stage: str
    work_base: Path
    specs: Sequence[TaskSpec]
    allow_failures: bool
    ids: dict[str, str] = field(default_factory=dict)  # task path -> task id
    reasons: dict[str, str] = field(default_factory=dict)  # task path -> why its job failed

    def __post_init__(self) -> None:
        self.ids = {spec.path: task_id(self.work_base, spec) for spec in self.specs}

    def where(self, path: str) -> str:
        """A task directory as the ledger names it (relative to the work dir when inside it)."""
        full = self.work_base / path
        return str(full.relative_to(self.workdir)) if full.is_relative_to(self.workdir) else str(full)

    def result(self, spec: TaskSpec) -> TaskResult:
        tid = self.ids[spec.path]
        info = read_task_rc(self.work_base / spec.path)
        if info is None or info.task_id != tid:
            return TaskResult(spec.path, tid, None, reason=self.reasons.get(spec.path, "not run"))
        return TaskResult(spec.path, tid, info.rc, info.start, info.end,
                          None if info.rc == 0 else f"exit code {info.rc}")

    def done(self, spec: TaskSpec) -> bool:
        res = self.result(spec)
        return res.ok or (res.rc is not None and self.allow_failures)

    def settled(self, spec: TaskSpec) -> TaskUpdate:
        res = self.result(spec)
        return TaskUpdate(res.task_id, self.iteration, self.stage, self.where(spec.path),
                          "finished" if res.ok else "failed", res.reason, seconds=_secs(res))

    def submitted(self, path: str, job_id: str) -> TaskUpdate:
        return TaskUpdate(self.ids[path], self.iteration, self.stage, self.where(path), "submitted",
                          job_id=job_id)


class Dispatcher:
    """Runs tasks of one stage on the machine configured for it."""

    def __init__(self, workdir: Path, settings: StageMachine, ledger: Ledger) -> None:
        self.workdir = Path(workdir)
        self.settings = settings
        self.ledger = ledger

    def run(
        self,
        iteration: int,
        stage: str,
        work_base: Path,
        specs: Sequence[TaskSpec],
        common_files: Sequence[str] = (),
        *,
        allow_failures: bool = False,
        retry_failures: bool = True,
    ) -> list[TaskResult]:
        """Run every task not yet done; return one result per spec, in order.

        A failed job is resubmitted up to the machine's ``retry_count`` (with ``retry_failures``
        off a non-zero exit is final at once). Then, with ``allow_failures`` a failed task is a
        result (rc ≠ 0, or rc None for a job that never completed); without it a
        :class:`StageError` names each failed task's directory, exit code and stderr tail.
        """
        run = _StageRun(self.workdir, iteration, stage, Path(work_base).resolve(), specs, allow_failures)
        found_in = archives(self.ledger)
        if found_in:
            back = [s for s in specs if not run.done(s) and restore_task(
                self.workdir, found_in, run.where(s.path), run.work_base / s.path, run.ids[s.path], RC_FILE)]
            if back:
                log.info("%s: %d finished task(s) with the same inputs taken back from the rollback "
                         "archive", stage, len(back))
        self.ledger.update(run.settled(s) for s in specs if run.done(s))
        pending = [s for s in specs if not run.done(s)]
        if pending:
            log.info("%s: %d task(s) to run, %d already done", stage, len(pending),
                     len(specs) - len(pending))
            self._dispatch(run, pending, common_files, retry_failures)
        for spec in specs:
            _drop_placeholders(run.work_base / spec.path)
        out = [run.result(s) for s in specs]
        bad = [(s, r) for s, r in zip(specs, out) if not r.ok]
        if bad and not allow_failures:
            lines = [f"{len(bad)} {stage} task(s) failed:"]
            for spec, res in bad:
                code = "no exit code (job lost)" if res.rc is None else f"exit code {res.rc}"
                err = tail(run.work_base / spec.path / spec.errlog, 3) or (res.reason or "")[-400:]
                lines.append(f"  {run.work_base / spec.path}: {code}; stderr: {err}")
            raise StageError("\n".join(lines))
        return out

    def _dispatch(self, run: _StageRun, pending: list[TaskSpec], common_files: Sequence[str],
                  retry_failures: bool) -> None:
        st = self.settings
        user_files = [self._user_file(f) for f in st.user_forward_files]
        for spec in pending:
            for src in user_files:
                relink(run.work_base / spec.path / src.name, src)
        by_id = {run.ids[s.path]: s for s in run.specs}
        pending_ids = {run.ids[s.path] for s in pending}
        base_key = run.where(".")

        def build(ids: Sequence[str]):  # noqa: ANN202 - a dpdispatcher Submission
            return self._submission(run.work_base, [(by_id[t], t) for t in ids], common_files,
                                    retry_failures, user_files)

        batches, reattached, covered = self._reattach(run, base_key, pending_ids, build)
        rest = [run.ids[s.path] for s in pending if run.ids[s.path] not in covered]
        if rest:
            sub = build(rest)
            bid = self.ledger.add_batch(run.iteration, run.stage, base_key, sub.submission_hash, rest)
            batches.append(Batch(bid, sub))

        ours = {s.path: s for s in pending}

        def on_submitted(batch: Batch, job: Any) -> None:
            self.ledger.update(run.submitted(t.task_work_path, str(job.job_id))
                               for t in job.job_task_list if t.task_work_path in ours)

        def on_job_done(batch: Batch, job: Any) -> None:
            reason = getattr(job, "failure_reason", None)
            mine = [t.task_work_path for t in job.job_task_list if t.task_work_path in ours]
            if reason:
                run.reasons.update((p, " ".join(str(reason).split())[:1000]) for p in mine)
            self.ledger.update(run.settled(ours[p]) for p in mine)

        def recover(batch: Batch) -> None:
            if batch.batch_id in reattached:
                _recover_job_ids(batch, run.ids, self.ledger, reattached[batch.batch_id])

        ratio = float((st.resources.get("strategy") or {}).get("ratio_unfinished", 0.0))
        if ratio and not run.allow_failures:
            log.warning("%s: ratio_unfinished is ignored: every %s task must succeed", run.stage, run.stage)
            ratio = 0.0
        meter = Meter(run.stage, len(run.specs), len(run.specs) - len(pending))

        def on_tick(batches: list[Batch]) -> None:
            left = [(b, t) for b in batches for j in b.submission.belonging_jobs
                    if j.job_hash not in b.harvested for t in j.job_task_list if t.task_work_path in ours]
            running = [Running(b.submission.machine.context, run.work_base, t.task_work_path,
                               ours[t.task_work_path].watch) for b, t in left]
            meter.update(len(run.specs) - len(running), running)

        try:
            Driver(st.check_interval, on_submitted, on_job_done, ratio, on_tick=on_tick,
                   recover=recover).drive(batches)
        except Interrupted as exc:
            self._settle(run.stage, batches, exc)
            raise
        finally:
            meter.close()
        for batch in batches:
            self.ledger.close_batch(batch.batch_id)

    def _reattach(self, run: _StageRun, base_key: str, pending_ids: set[str],
                  build: Callable[[Sequence[str]], Any],
                  ) -> tuple[list[Batch], dict[int, float], set[str]]:
        """The batches a killed run left behind that can be re-attached (same tasks, same
        submission hash), when each was created, and their task ids; the others are closed."""
        batches: list[Batch] = []
        covered: set[str] = set()
        reattached: dict[int, float] = {}  # batch id -> when it was created
        for row in self.ledger.open_batches(run.iteration, run.stage, base_key):
            if not set(row.task_ids) <= set(run.ids.values()):
                log.warning("%s: the inputs of batch %d changed since it was submitted; its jobs are "
                            "not re-attached", run.stage, row.batch_id)
                self.ledger.close_batch(row.batch_id, "abandoned")
                continue
            if not set(row.task_ids) & pending_ids:
                self.ledger.close_batch(row.batch_id)
                continue
            sub = build(row.task_ids)
            if sub.submission_hash != row.submission_hash:
                log.warning("%s: the machine settings changed since batch %d was submitted; its "
                            "unfinished tasks are submitted anew", run.stage, row.batch_id)
                self.ledger.close_batch(row.batch_id, "abandoned")
                continue
            log.info("%s: re-attaching to %d task(s) submitted earlier", run.stage, len(row.task_ids))
            batches.append(Batch(row.batch_id, sub))
            reattached[row.batch_id] = row.created
            covered |= set(row.task_ids)
        return batches, reattached, covered

    def _settle(self, stage: str, batches: list[Batch], exc: Interrupted) -> None:
        """On SIGINT / SIGTERM: stop the jobs of a local Shell batch (their engines ignore the
        terminal's SIGINT and would run on unwatched); jobs under a scheduler or on a remote
        machine go on, and the next run re-attaches to them. Both are noted on ``exc``."""
        jobs = [str(j.job_id) for b in batches for j in b.submission.belonging_jobs
                if j.job_hash not in b.harvested and j.job_id]
        st = self.settings
        if runs_here(st.machine):
            exc.stopped += [(stage, j) for j in stop_jobs(jobs)]
        else:
            exc.left += [(stage, j, st.batch_type) for j in jobs]

    def _machine_dict(self, work_base: Path) -> dict:
        m = dict(self.settings.machine)
        m["local_root"] = str(work_base)
        remote = m.get("remote_root")
        if m["context_type"] in LOCAL_CONTEXTS:
            remote = remote or str(self.workdir / ".dpgen" / "remote")
            if not Path(remote).is_absolute():
                remote = str((self.workdir / remote).resolve())
            m["remote_root"] = remote
        return m

    def _user_file(self, name: str) -> Path:
        """A ``user_forward_files`` entry (absolute, or relative to the work dir), which must exist."""
        path = Path(name).expanduser()
        path = path if path.is_absolute() else self.workdir / path
        if not path.exists():
            raise UserError(f"{path} does not exist", f"{self.settings.stage}.user_forward_files",
                            "files to copy into every task of the stage")
        return path.resolve()

    def _submission(self, work_base: Path, items: list[tuple[TaskSpec, str]],
                    common_files: Sequence[str], retry_failures: bool, user_files: list[Path]) -> Any:
        from dpdispatcher import Machine, Resources, Submission, Task

        st = self.settings
        tasks = []
        for spec, tid in items:
            backward = list(dict.fromkeys([*spec.backward_files, *st.user_backward_files,
                                           spec.outlog, spec.errlog]))
            tasks.append(Task(
                command=wrap_command(spec.command, tid, not retry_failures, backward),
                task_work_path=spec.path,
                forward_files=list(spec.forward_files) + [f.name for f in user_files],
                backward_files=backward + [RC_FILE],
                outlog=spec.outlog,
                errlog=spec.errlog,
            ))
        sub = Submission(
            work_base=str(work_base),
            machine=Machine.load_from_dict(self._machine_dict(work_base)),
            resources=Resources.load_from_dict(dict(st.resources)),
            task_list=tasks,
            forward_common_files=list(common_files),
            backward_common_files=[],
            continue_on_failure=True,
        )
        sub.generate_jobs()
        return sub


def _recover_job_ids(batch: Batch, ids: dict[str, str], ledger: Ledger, since: float) -> None:
    """Give the jobs of a re-attached batch that dpdispatcher's recovery file left without a job
    id (a kill came between a submission and the file's next write) the id the ledger recorded
    for their tasks since the batch was made; dpdispatcher then asks the scheduler about that
    job instead of submitting it again."""
    lost = [job for job in batch.submission.belonging_jobs if not job.job_id]
    if not lost:
        return
    known = ledger.job_ids((ids[t.task_work_path] for job in lost for t in job.job_task_list), since)
    found = 0
    for job in lost:
        seen = {known.get(ids[t.task_work_path]) for t in job.job_task_list} - {None}
        if len(seen) == 1:
            job.job_id = seen.pop()
            found += 1
    if found:
        log.info("%d job id(s) taken from the ledger", found)


def _drop_placeholders(task_dir: Path) -> None:
    """Remove the empty stand-ins the wrapper made for outputs a task did not produce (so that
    dpdispatcher could download something): a failed task must not leave a file that looks like a
    result. The rc file still names them, which is what parsers read."""
    info = read_task_rc(task_dir)
    for name in info.missing if info is not None else ():
        path = task_dir / name
        if path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
            path.unlink()


def _secs(res: TaskResult) -> float | None:
    if res.start is None or res.end is None:
        return None
    return res.end - res.start
