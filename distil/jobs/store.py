"""The job store: jobs, their state, history and artifacts in SQLite (survives restarts).

States: queued -> starting -> running -> completed | failed | cancelled. A job can also
be cancelled while queued or starting, and fail while starting. ``resume`` puts a failed
or cancelled job back in the queue (the driver continues from its prompt cursor and the
learner from its last checkpoint).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distil.paths import data_dir

State = Literal["queued", "starting", "running", "completed", "failed", "cancelled"]
ACTIVE: tuple[State, ...] = ("starting", "running")
FINAL: tuple[State, ...] = ("completed", "failed", "cancelled")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("starting", "cancelled", "failed"),
    "starting": ("running", "completed", "failed", "cancelled", "queued"),  # completed: nothing left to train
    "running": ("completed", "failed", "cancelled", "queued"),
    "completed": (),
    "failed": ("queued",),
    "cancelled": ("queued",),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT, state TEXT NOT NULL, spec TEXT NOT NULL,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL, reason TEXT NOT NULL DEFAULT '',
    step INTEGER NOT NULL DEFAULT 0, policy_version INTEGER NOT NULL DEFAULT 0,
    cursor TEXT NOT NULL DEFAULT '{}', cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at);
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL, ts REAL NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (job_id, kind, step)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL, step INTEGER NOT NULL, policy_version INTEGER NOT NULL, path TEXT NOT NULL,
    ts REAL NOT NULL, PRIMARY KEY (job_id, step)
);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, ts REAL NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_job ON samples(job_id, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, ts REAL NOT NULL, kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
"""


class JobNotFound(KeyError):
    pass


class InvalidTransition(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    name: str | None
    state: State
    spec: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    reason: str
    step: int
    policy_version: int
    cursor: dict[str, Any]
    cancel_requested: bool

    def public(self) -> dict[str, Any]:
        """What the API shows (the cursor is the driver's business)."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "step": self.step,
            "steps": self.spec.get("steps"),
            "policy_version": self.policy_version,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "cancel_requested": self.cancel_requested,
        }


def default_path() -> Path:
    return data_dir() / "jobs.sqlite3"


class JobStore:
    """Thread-safe; one connection per process, WAL so readers never block the writer."""

    def __init__(self, path: str | Path | None = None, *, max_samples: int = 200) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_samples = max_samples
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _q(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _tx(self, fn):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    # ------------------------------------------------------------------ jobs

    def create(self, spec: dict[str, Any], *, name: str | None = None) -> JobRecord:
        job_id = f"job-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        now = time.time()

        def tx(db):
            db.execute(
                "INSERT INTO jobs (id, name, state, spec, created_at) VALUES (?, ?, 'queued', ?, ?)",
                (job_id, name, json.dumps(spec), now),
            )
            self._event(db, job_id, "state", {"state": "queued"})

        self._tx(tx)
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        rows = self._q("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return _record(rows[0])

    def list(self, state: str | None = None, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        if state:
            rows = self._q(
                "SELECT * FROM jobs WHERE state = ? ORDER BY created_at DESC LIMIT ? OFFSET ?",
                (state, limit, offset),
            )
        else:
            rows = self._q("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ? OFFSET ?", (limit, offset))
        return [_record(r) for r in rows]

    def active(self) -> list[JobRecord]:
        return [_record(r) for r in self._q("SELECT * FROM jobs WHERE state IN ('starting', 'running')")]

    def next_queued(self) -> JobRecord | None:
        rows = self._q("SELECT * FROM jobs WHERE state = 'queued' ORDER BY created_at LIMIT 1")
        return _record(rows[0]) if rows else None

    def transition(self, job_id: str, to: State, reason: str = "") -> JobRecord:
        """Move a job to ``to``; raises InvalidTransition for a move the state machine forbids."""
        now = time.time()

        def tx(db):
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            current = row["state"]
            if to not in TRANSITIONS[current]:
                raise InvalidTransition(f"job {job_id} is {current}; it cannot become {to}")
            sets = ["state = ?", "reason = ?"]
            args: list[Any] = [to, reason]
            if to == "starting":
                sets.append("started_at = ?")
                args.append(now)
            if to in FINAL:
                sets.append("finished_at = ?")
                args.append(now)
            if to == "queued":
                sets += ["finished_at = NULL", "cancel_requested = 0"]
            db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*args, job_id))
            self._event(db, job_id, "state", {"state": to, "reason": reason})

        self._tx(tx)
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> JobRecord:
        """Queued jobs are cancelled at once; active ones are flagged for their driver."""
        job = self.get(job_id)
        if job.state == "queued":
            return self.transition(job_id, "cancelled", "cancelled by the user before it started")
        if job.state in ACTIVE:
            self._q("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            self.add_event(job_id, "cancel_requested", {})
            return self.get(job_id)
        raise InvalidTransition(f"job {job_id} is {job.state}; there is nothing to cancel")

    def set_progress(
        self, job_id: str, *, step: int | None = None, policy_version: int | None = None
    ) -> None:
        if step is not None:
            self._q("UPDATE jobs SET step = MAX(step, ?) WHERE id = ?", (step, job_id))
        if policy_version is not None:
            self._q(
                "UPDATE jobs SET policy_version = MAX(policy_version, ?) WHERE id = ?",
                (policy_version, job_id),
            )

    def save_cursor(self, job_id: str, cursor: dict[str, Any]) -> None:
        self._q("UPDATE jobs SET cursor = ? WHERE id = ?", (json.dumps(cursor), job_id))

    # ------------------------------------------------------------------ history

    def add_metrics(self, job_id: str, step: int, metrics: dict[str, float], kind: str = "train") -> None:
        self._q(
            "INSERT OR REPLACE INTO metrics (job_id, step, kind, ts, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, step, kind, time.time(), json.dumps(metrics)),
        )

    def metrics(self, job_id: str, kind: str | None = None, since_step: int = -1) -> list[dict[str, Any]]:
        sql = "SELECT step, kind, ts, data FROM metrics WHERE job_id = ? AND step > ?"
        args: tuple = (job_id, since_step)
        if kind:
            sql += " AND kind = ?"
            args += (kind,)
        rows = self._q(sql + " ORDER BY kind, step", args)
        return [{"step": r["step"], "kind": r["kind"], "ts": r["ts"], **json.loads(r["data"])} for r in rows]

    def add_checkpoint(self, job_id: str, step: int, policy_version: int, path: str) -> None:
        self._q(
            "INSERT OR REPLACE INTO checkpoints (job_id, step, policy_version, path, ts) VALUES (?, ?, ?, ?, ?)",
            (job_id, step, policy_version, path, time.time()),
        )

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT step, policy_version, path, ts FROM checkpoints WHERE job_id = ? ORDER BY step", (job_id,)
        )
        return [dict(r) for r in rows]

    def add_samples(self, job_id: str, samples: list[dict[str, Any]]) -> None:
        if not samples:
            return
        now = time.time()

        def tx(db):
            db.executemany(
                "INSERT INTO samples (job_id, ts, data) VALUES (?, ?, ?)",
                [(job_id, now, json.dumps(s)) for s in samples],
            )
            db.execute(
                "DELETE FROM samples WHERE job_id = ? AND seq NOT IN "
                "(SELECT seq FROM samples WHERE job_id = ? ORDER BY seq DESC LIMIT ?)",
                (job_id, job_id, self.max_samples),
            )

        self._tx(tx)

    def samples(self, job_id: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT ts, data FROM samples WHERE job_id = ? ORDER BY seq DESC LIMIT ?", (job_id, limit)
        )
        return [{"ts": r["ts"], **json.loads(r["data"])} for r in rows]

    def add_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._event(self._db, job_id, kind, data)

    @staticmethod
    def _event(db, job_id: str, kind: str, data: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO events (job_id, ts, kind, data) VALUES (?, ?, ?, ?)",
            (job_id, time.time(), kind, json.dumps(data)),
        )

    def events(self, job_id: str, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT seq, ts, kind, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        )
        return [
            {"seq": r["seq"], "ts": r["ts"], "kind": r["kind"], "data": json.loads(r["data"])} for r in rows
        ]

    def counts(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._q("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        name=row["name"],
        state=row["state"],
        spec=json.loads(row["spec"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        reason=row["reason"],
        step=row["step"],
        policy_version=row["policy_version"],
        cursor=json.loads(row["cursor"]),
        cancel_requested=bool(row["cancel_requested"]),
    )
