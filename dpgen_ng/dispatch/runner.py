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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dpgen_ng.config.machine import StageMachine
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.io import tail
from dpgen_ng.ledger import Ledger, TaskUpdate

RC_FILE = "dpgen_task.rc"
LOCAL_CONTEXTS = ("LocalContext", "Local", "local", "localcontext")
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
    """A hash of what the task depends on: its command and its forward files' contents."""
    h = hashlib.sha256(spec.command.encode() + b"\0")
    for name in sorted(spec.forward_files):
        _hash_path(h, Path(work_base) / spec.path / name, name)
    return h.hexdigest()[:24]


def wrap_command(command: str, tid: str, tolerate_failure: bool, outputs: Sequence[str] = ()) -> str:
    """The command as submitted: runs ``command`` in a subshell and leaves the rc file.

    With ``tolerate_failure`` the job always succeeds for the scheduler, and declared outputs
    that the command did not make are created empty (dpdispatcher refuses to download a
    missing file) and named in the rc file, so the parser reports them as missing.
    """
    final = "0" if tolerate_failure else "$_dpgen_rc"
    fill = ""
    plain = [o for o in outputs if not any(c in o for c in "*?[")]
    if tolerate_failure and plain:
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


class Dispatcher:
    """Runs tasks of one stage on the machine configured for it."""

    def __init__(self, workdir: Path, settings: StageMachine, ledger: Ledger) -> None:
        self.workdir = Path(workdir)
        self.settings = settings
        self.ledger = ledger

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

    def run(
        self,
        iteration: int,
        stage: str,
        work_base: Path,
        specs: Sequence[TaskSpec],
        common_files: Sequence[str] = (),
        tolerate_failure: bool = False,
    ) -> list[TaskResult]:
        """Run every task not yet done; return one result per spec, in order.

        With ``tolerate_failure`` a task's non-zero exit is a result (rc ≠ 0), not an error, and
        jobs lost after retries give ``rc=None``; otherwise any failure raises :class:`StageError`
        naming each failed task's directory, exit code and the tail of its stderr.
        """
        work_base = Path(work_base).resolve()

        def result(spec: TaskSpec, tid: str, reason: str | None = None) -> TaskResult | None:
            info = read_task_rc(work_base / spec.path)
            if info is None or info.task_id != tid:
                return None if reason is None else TaskResult(spec.path, tid, None, reason=reason)
            return TaskResult(spec.path, tid, info.rc, info.start, info.end,
                              None if info.rc == 0 else f"exit code {info.rc}")

        def where(spec: TaskSpec) -> str:
            return str((work_base / spec.path).relative_to(self.workdir))

        def ledger_rows(rows: list[tuple[TaskSpec, TaskResult]]) -> list[TaskUpdate]:
            return [TaskUpdate(r.task_id, iteration, stage, where(s), "finished" if r.ok else "failed",
                               r.reason, seconds=_secs(r)) for s, r in rows]

        results: dict[str, TaskResult] = {}
        pending: list[tuple[TaskSpec, str]] = []
        for spec in specs:
            tid = task_id(work_base, spec)
            done = result(spec, tid)
            if done is not None and (done.ok or tolerate_failure):
                results[spec.path] = done
            else:
                pending.append((spec, tid))
        self.ledger.update(ledger_rows([(s, results[s.path]) for s in specs if s.path in results]))
        if not pending:
            return [results[s.path] for s in specs]

        log.info("%s: %d task(s) to run, %d already done", stage, len(pending), len(results))
        self.ledger.update(TaskUpdate(tid, iteration, stage, where(s), "submitted") for s, tid in pending)
        error = self._submit(work_base, pending, common_files, tolerate_failure)
        finished = [(s, result(s, tid, error or "no result came back")) for s, tid in pending]
        self.ledger.update(ledger_rows(finished))
        results.update((s.path, r) for s, r in finished)
        bad = [(s, r) for s, r in finished if not r.ok]
        if bad and not tolerate_failure:
            lines = [f"{len(bad)} {stage} task(s) failed:"]
            for spec, res in bad:
                code = "no exit code (job lost)" if res.rc is None else f"exit code {res.rc}"
                err = tail(work_base / spec.path / spec.errlog, 3) or (res.reason or "")[-300:]
                lines.append(f"  {work_base / spec.path}: {code}; stderr: {err}")
            raise StageError("\n".join(lines))
        return [results[s.path] for s in specs]

    def _user_file(self, name: str) -> Path:
        """A ``user_forward_files`` entry (absolute, or relative to the work dir), which must exist."""
        path = Path(name).expanduser()
        path = path if path.is_absolute() else self.workdir / path
        if not path.exists():
            raise UserError(f"{path} does not exist", f"{self.settings.stage}.user_forward_files",
                            "files to copy into every task of the stage")
        return path.resolve()

    def _submit(
        self,
        work_base: Path,
        pending: list[tuple[TaskSpec, str]],
        common_files: Sequence[str],
        tolerate_failure: bool,
    ) -> str | None:
        from dpdispatcher import Machine, Resources, Submission, Task

        st = self.settings
        user_files = [self._user_file(f) for f in st.user_forward_files]
        for spec, _ in pending:
            for src in user_files:
                link = work_base / spec.path / src.name
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(src)
        tasks = [
            Task(
                command=wrap_command(spec.command, tid, tolerate_failure,
                                     list(spec.backward_files) + list(st.user_backward_files)),
                task_work_path=spec.path,
                forward_files=list(spec.forward_files) + [f.name for f in user_files],
                backward_files=list(spec.backward_files) + [RC_FILE] + list(st.user_backward_files),
                outlog=spec.outlog,
                errlog=spec.errlog,
            )
            for spec, tid in pending
        ]
        machine = Machine.load_from_dict(self._machine_dict(work_base))
        resources = Resources.load_from_dict(dict(st.resources))
        submission = Submission(
            work_base=str(work_base),
            machine=machine,
            resources=resources,
            task_list=tasks,
            forward_common_files=list(common_files),
            backward_common_files=[],
        )
        try:
            submission.run_submission(check_interval=st.check_interval, continue_on_failure=True)
        except RuntimeError as exc:  # retries exhausted for some job(s)
            log.warning("dispatch of %d task(s) in %s ended with failures", len(pending), work_base)
            return " ".join(str(exc).split())[:2000]
        return None


def _secs(res: TaskResult) -> float | None:
    if res.start is None or res.end is None:
        return None
    return res.end - res.start

