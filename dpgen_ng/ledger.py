"""The task ledger: a small sqlite (WAL) table of every task's state, keyed by a content hash.

States: ``made`` → ``submitted`` → ``finished`` | ``failed`` (with a reason). A task id is a hash
of the task's inputs, so a re-made step yields the same ids and finished work is recognised.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LEDGER_PATH = Path(".dpgen") / "ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id   TEXT PRIMARY KEY,
    iteration INTEGER NOT NULL,
    stage     TEXT NOT NULL,
    path      TEXT NOT NULL,
    state     TEXT NOT NULL,
    reason    TEXT,
    job_id    TEXT,
    runs      INTEGER NOT NULL DEFAULT 0,
    seconds   REAL,
    updated   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_stage ON tasks (iteration, stage);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    batch_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    iteration       INTEGER NOT NULL,
    stage           TEXT NOT NULL,
    work_base       TEXT NOT NULL,
    submission_hash TEXT NOT NULL,
    task_ids        TEXT NOT NULL,
    state           TEXT NOT NULL,
    created         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    iteration INTEGER NOT NULL,
    step      INTEGER NOT NULL,
    started   REAL NOT NULL,
    ended     REAL NOT NULL,
    PRIMARY KEY (iteration, step)
);
"""

STATES = ("made", "submitted", "finished", "failed")


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    iteration: int
    stage: str
    path: str
    state: str
    reason: str | None
    job_id: str | None
    runs: int
    seconds: float | None


@dataclass(frozen=True)
class BatchRow:
    """One submission of a stage's tasks, kept so that a restart re-attaches to its jobs."""

    batch_id: int
    submission_hash: str
    task_ids: tuple[str, ...]
    created: float = 0.0


@dataclass(frozen=True)
class TaskUpdate:
    task_id: str
    iteration: int
    stage: str
    path: str
    state: str
    reason: str | None = None
    job_id: str | None = None
    seconds: float | None = None


_BUSY_SECONDS = 30.0


def _enter_wal(db: sqlite3.Connection) -> None:
    """Put the database in WAL mode (persistent, so this is a read once it is set).

    Switching a new file to WAL needs an exclusive lock, and sqlite answers "database is locked"
    at once, without its busy timeout, when another process opening the same new ledger holds it
    (``dpgen status`` started next to ``dpgen run``). Retried here for as long as the timeout."""
    deadline = time.monotonic() + _BUSY_SECONDS
    delay = 0.01
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class Ledger:
    """One ledger per work dir. Every write is its own committed transaction."""

    def __init__(self, workdir: Path) -> None:
        path = Path(workdir) / LEDGER_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=_BUSY_SECONDS, isolation_level=None)
        _enter_wal(self._db)
        self._db.execute("PRAGMA synchronous=FULL")
        # under a write lock taken up front: a schema statement that reads, then writes, would get
        # "locked" at once (no busy timeout) if another process created the tables in between
        self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, updates: Iterable[TaskUpdate]) -> None:
        """Record new states for tasks, all in one transaction. ``runs`` counts finished/failed ends."""
        now = time.time()
        rows = [
            (u.task_id, u.iteration, u.stage, u.path, u.state, u.reason, u.job_id, u.seconds, now)
            for u in updates
        ]
        for row in rows:
            if row[4] not in STATES:
                raise ValueError(f"unknown task state {row[4]!r}")
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                """INSERT INTO tasks (task_id, iteration, stage, path, state, reason, job_id,
                                      seconds, updated, runs)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,
                           CASE WHEN ?5 IN ('finished', 'failed') THEN 1 ELSE 0 END)
                   ON CONFLICT(task_id) DO UPDATE SET
                       iteration=excluded.iteration, stage=excluded.stage, path=excluded.path,
                       state=excluded.state, reason=excluded.reason,
                       job_id=COALESCE(excluded.job_id, tasks.job_id),
                       seconds=COALESCE(excluded.seconds, tasks.seconds),
                       updated=excluded.updated,
                       runs=tasks.runs + CASE WHEN excluded.state IN ('finished', 'failed')
                                                   AND tasks.state NOT IN ('finished', 'failed')
                                              THEN 1 ELSE 0 END""",
                rows,
            )

    def get(self, task_id: str) -> TaskRow | None:
        cur = self._db.execute(
            "SELECT task_id, iteration, stage, path, state, reason, job_id, runs, seconds "
            "FROM tasks WHERE task_id = ?",
            (task_id,),
        )
        row = cur.fetchone()
        return TaskRow(*row) if row else None

    def tasks(self, iteration: int | None = None, stage: str | None = None) -> list[TaskRow]:
        query = (
            "SELECT task_id, iteration, stage, path, state, reason, job_id, runs, seconds FROM tasks"
        )
        clauses, args = [], []
        if iteration is not None:
            clauses.append("iteration = ?")
            args.append(iteration)
        if stage is not None:
            clauses.append("stage = ?")
            args.append(stage)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY iteration, stage, path"
        return [TaskRow(*r) for r in self._db.execute(query, args).fetchall()]

    def add_batch(self, iteration: int, stage: str, work_base: str, submission_hash: str,
                  task_ids: list[str]) -> int:
        with self._db:
            cur = self._db.execute(
                "INSERT INTO batches (iteration, stage, work_base, submission_hash, task_ids, state, "
                "created) VALUES (?, ?, ?, ?, ?, 'open', ?)",
                (iteration, stage, work_base, submission_hash, json.dumps(task_ids), time.time()),
            )
        return int(cur.lastrowid)

    def open_batches(self, iteration: int, stage: str, work_base: str) -> list[BatchRow]:
        rows = self._db.execute(
            "SELECT batch_id, submission_hash, task_ids, created FROM batches WHERE iteration = ? "
            "AND stage = ? AND work_base = ? AND state = 'open' ORDER BY batch_id",
            (iteration, stage, work_base),
        ).fetchall()
        return [BatchRow(r[0], r[1], tuple(json.loads(r[2])), r[3]) for r in rows]

    def job_ids(self, task_ids: Iterable[str], since: float) -> dict[str, str]:
        """The job id recorded for each of these tasks by an update at or after ``since``."""
        rows = self._db.execute(
            "SELECT task_id, job_id FROM tasks WHERE job_id IS NOT NULL AND updated >= ? "
            "AND task_id IN (SELECT value FROM json_each(?))", (since, json.dumps(list(task_ids))))
        return dict(rows.fetchall())

    def close_batch(self, batch_id: int, state: str = "done") -> None:
        with self._db:
            self._db.execute("UPDATE batches SET state = ? WHERE batch_id = ?", (state, batch_id))

    def step_done(self, iteration: int, step: int, started: float, ended: float) -> None:
        """The wall-clock span of one finished step (the last run of it wins)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO steps (iteration, step, started, ended) "
                             "VALUES (?, ?, ?, ?)", (iteration, step, started, ended))

    def forget_after(self, iteration: int, step: int) -> None:
        """Drop the step times and open batches from (iteration, step) on (a rollback)."""
        with self._db:
            self._db.execute("DELETE FROM steps WHERE iteration > ? OR (iteration = ? AND step >= ?)",
                             (iteration, iteration, step))
            self._db.execute(
                "UPDATE batches SET state = 'abandoned' WHERE state = 'open' AND (iteration > ? OR "
                "(iteration = ? AND stage IN (SELECT value FROM json_each(?))))",
                (iteration, iteration, json.dumps(["train", "model_devi", "fp"][step // 3:])))

    def step_times(self) -> dict[tuple[int, int], float]:
        """Seconds each finished step took, by (iteration, step)."""
        rows = self._db.execute("SELECT iteration, step, ended - started FROM steps").fetchall()
        return {(r[0], r[1]): float(r[2]) for r in rows}

    def meta_get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def meta_set(self, key: str, value: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )
