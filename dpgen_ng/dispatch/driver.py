"""Drive dpdispatcher submissions with our own poll loop.

dpdispatcher's ``run_submission`` blocks until every job is done and downloads everything at
the end. Here each job is harvested (its files downloaded, the ledger told) as soon as it ends,
job ids reach the ledger when they change, lost scheduler/SSH contact is retried with backoff,
and stragglers can be given up on (``resources.strategy.ratio_unfinished``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paramiko.ssh_exception import SSHException

from dpgen_ng import failpoint
from dpgen_ng.errors import StageError

log = logging.getLogger("dpgen_ng.dispatch")

# What a poll may raise while the scheduler or the SSH link is away, before dpdispatcher's own
# retries give up; we wait and try again up to ``reconnect_timeout``.
TRANSIENT: tuple[type[BaseException], ...] = (OSError, EOFError, RuntimeError, SSHException)


@dataclass
class Batch:
    """One dpdispatcher submission and the ledger batch it belongs to."""

    batch_id: int
    submission: Any  # dpdispatcher.Submission
    harvested: set[str] = field(default_factory=set)  # job hashes
    job_ids: dict[str, str] = field(default_factory=dict)  # job hash -> last job id seen


def _status():  # noqa: ANN202 - dpdispatcher's enum, imported lazily
    from dpdispatcher.utils.job_status import JobStatus

    return JobStatus


class Driver:
    """Runs batches to the end. Callbacks tell the caller about submissions and finished jobs."""

    def __init__(
        self,
        interval: float,
        on_submitted: Callable[[Any, Any], None],
        on_job_done: Callable[[Batch, Any], None],
        ratio_unfinished: float = 0.0,
        reconnect_timeout: float = 1800.0,
        on_tick: Callable[[list[Batch]], None] | None = None,
        recover: Callable[[Batch], None] | None = None,
    ) -> None:
        self.interval = interval
        self.on_submitted = on_submitted
        self.on_job_done = on_job_done
        self.ratio_unfinished = ratio_unfinished
        self.reconnect_timeout = reconnect_timeout
        self.on_tick = on_tick
        self.recover = recover  # fills job ids the recovery file lacks (from the ledger)
        self._batches: list[Batch] = []
        self._submitted = 0  # jobs this driver submitted

    def _revive(self) -> None:
        """Reconnect SSH sessions whose link dropped (dpdispatcher only does so on some paths,
        and keeps a dead SFTP channel otherwise)."""
        for batch in self._batches:
            session = getattr(batch.submission.machine.context, "ssh_session", None)
            if session is None:
                continue
            try:
                session.ensure_alive(max_check=3, sleep_time=2)
            except Exception as exc:  # noqa: BLE001 - the caller's retry loop decides
                log.debug("reconnect failed: %s", exc)

    def _retrying(self, what: str, func: Callable[[], None]) -> None:
        """Run ``func``; while the link to the machine is down, retry with backoff."""
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 1.0
        while True:
            try:
                func()
                return
            except TRANSIENT as exc:
                if time.monotonic() + delay > deadline:
                    raise StageError(f"{what}: no contact with the machine for "
                                     f"{self.reconnect_timeout:.0f} s: {exc}") from exc
                log.warning("%s failed (%s: %s); retrying in %.0f s", what, type(exc).__name__,
                            (str(exc).splitlines() or [""])[0], delay)
                time.sleep(delay)
                delay = min(2 * delay, 60.0)
                self._revive()

    def _report_jobs(self, batch: Batch, jobs: Any = None) -> None:
        for job in batch.submission.belonging_jobs if jobs is None else jobs:
            if job.job_id and batch.job_ids.get(job.job_hash) != job.job_id:
                batch.job_ids[job.job_hash] = job.job_id
                self.on_submitted(batch, job)

    def _start(self, batch: Batch) -> None:
        sub = batch.submission

        def start() -> None:
            sub.try_recover_from_json()
            if self.recover is not None:
                self.recover(batch)
            sub.update_submission_state()
            if not sub.check_all_finished():
                sub.upload_jobs()
                self._submit_each(batch)

        self._retrying("submit", start)
        log.debug("submission %s: %d job(s)", sub.submission_hash, len(sub.belonging_jobs))
        self._report_jobs(batch)

    def _submit_each(self, batch: Batch) -> None:
        """Submit (or resubmit) jobs one by one, recording each job id in the ledger at once.

        dpdispatcher's own call submits every job and then writes its recovery file; a crash in
        between leaves jobs nobody knows about, which a restart would submit again. Here each new
        job id reaches the ledger (``on_submitted``) as soon as it exists, and a restart takes the
        ids its recovery file lacks from there (``recover``). The recovery file itself, which
        grows with the number of tasks, is rewritten only when a job id changed, and during a
        long round at most once per ten times its own writing time (once per round at least).
        """
        sub = batch.submission
        dirty, next_write = False, 0.0
        for job in sub.belonging_jobs:
            before = job.job_id
            job.handle_unexpected_job_state(continue_on_failure=True)
            if job.job_id != before:
                self._report_jobs(batch, [job])
                dirty = True
                self._submitted += 1
                failpoint.reach(f"after-submit:{self._submitted}")  # the resume tests' kill
                if time.monotonic() >= next_write:
                    next_write = self._write_json(sub)
                    dirty = False
        if dirty:
            self._write_json(sub)

    @staticmethod
    def _write_json(sub: Any) -> float:
        """Write dpdispatcher's recovery file; return when the next write is due."""
        t0 = time.monotonic()
        sub.submission_to_json()
        t1 = time.monotonic()
        return t1 + max(1.0, 10 * (t1 - t0))

    def _poll(self, batch: Batch) -> None:
        sub = batch.submission

        def poll() -> None:
            sub.update_submission_state()
            self._submit_each(batch)

        self._retrying("poll", poll)
        self._report_jobs(batch)

    def _download(self, batch: Batch, job: Any) -> None:
        """Fetch one job's task files (whatever exists: failed tasks may lack outputs)."""
        sub = batch.submission
        saved = sub.belonging_tasks, sub.belonging_jobs
        sub.belonging_tasks, sub.belonging_jobs = list(job.job_task_list), [job]
        try:
            self._retrying("download", lambda: sub.machine.context.download(
                sub, check_exists=True, mark_failure=False))
        finally:
            sub.belonging_tasks, sub.belonging_jobs = saved

    def _harvest(self, batches: list[Batch]) -> int:
        """Download and report every newly ended job; return how many jobs are still running."""
        status = _status()
        running = 0
        for batch in batches:
            for job in batch.submission.belonging_jobs:
                if job.job_hash in batch.harvested:
                    continue
                if job.job_state in (status.finished, status.failed):
                    self._download(batch, job)
                    batch.harvested.add(job.job_hash)
                    self.on_job_done(batch, job)
                else:
                    running += 1
        return running

    def _give_up_stragglers(self, batches: list[Batch]) -> bool:
        """Kill the last jobs once the unfinished share is at most ``ratio_unfinished``."""
        if self.ratio_unfinished <= 0:
            return False
        tasks = [(b, j) for b in batches for j in b.submission.belonging_jobs]
        total = sum(len(j.job_task_list) for _, j in tasks)
        left = [(b, j) for b, j in tasks if j.job_hash not in b.harvested]
        n_left = sum(len(j.job_task_list) for _, j in left)
        if not left or n_left / total > self.ratio_unfinished:
            return False
        log.warning("%d of %d task(s) unfinished (≤ ratio_unfinished %.3g): stopping them", n_left,
                    total, self.ratio_unfinished)
        for batch, job in left:
            self._retrying("kill", lambda job=job, batch=batch: batch.submission.machine.kill(job))
            job.job_state = _status().failed
            job.failure_reason = "stopped unfinished (ratio_unfinished)"
        self._harvest(batches)
        return True

    def drive(self, batches: list[Batch]) -> None:
        self._batches = batches
        for batch in batches:
            self._start(batch)
        while self._harvest(batches):
            if self._give_up_stragglers(batches):
                break
            if self.on_tick is not None:
                self.on_tick(batches)
            time.sleep(self.interval)
            for batch in batches:
                self._poll(batch)
        for batch in batches:
            # everything useful (outputs, rc files, logs) is local now: a failed job's state must
            # not be recovered by a later attempt, so the remote directory always goes
            self._retrying("clean", batch.submission.clean_jobs)
