"""Job records in SQLite: they outlive the service process; a restart marks running jobs ``interrupted``."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from schemas.paths import is_within

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, name TEXT, state TEXT, spec TEXT, output TEXT, created REAL, updated REAL,
    progress TEXT, funnel TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS logs (job TEXT, at REAL, line TEXT);
"""
ACTIVE = ("queued", "running", "cancelling")
RESUMABLE = ("interrupted", "cancelled", "failed")


class OutputTaken(ValueError):
    """The output location is, contains or lies inside another job's output."""


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.executescript(SCHEMA)

    def _run(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._db.row_factory = sqlite3.Row
            return self._db.execute(sql, args).fetchall()

    def mark_interrupted(self) -> int:
        rows = self._run("SELECT id FROM jobs WHERE state IN ('queued', 'running', 'cancelling')")
        for row in rows:
            self.update(row["id"], state="interrupted")
            self.log(row["id"], "the service stopped while the job ran: resume it with POST /jobs/{id}/resume")
        return len(rows)

    def create(self, name: str, spec: dict[str, Any], output: str) -> str:
        """Record a new job and claim its output in one transaction: two submissions naming the same, a nested
        or an enclosing output cannot both succeed (:class:`OutputTaken` for the loser)."""
        job_id = uuid.uuid4().hex[:12]
        now = time.time()
        with self._lock:
            self._db.row_factory = sqlite3.Row
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in self._db.execute("SELECT id, output FROM jobs").fetchall():
                    if is_within(output, row["output"]) or is_within(row["output"], output):
                        raise OutputTaken(f"output {output!r} overlaps the output of job {row['id']}")
                self._db.execute(
                    "INSERT INTO jobs VALUES (?, ?, 'queued', ?, ?, ?, ?, '{}', NULL, NULL)",
                    (job_id, name, json.dumps(spec), output, now, now),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return job_id

    def transition(self, job_id: str, before: tuple[str, ...], after: str, **fields: Any) -> bool:
        """Compare-and-set of a job's state: True for the one caller that moved it from one of ``before``."""
        marks = ", ".join("?" for _ in before)
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE jobs SET state = ?, updated = ? WHERE id = ? AND state IN ({marks})",
                (after, time.time(), job_id, *before),
            )
            moved = cursor.rowcount == 1
        if moved and fields:
            self.update(job_id, **fields)
        return moved

    def update(self, job_id: str, **fields: Any) -> None:
        """One statement for every field: a reader never sees ``state: failed`` before its ``error``."""
        columns, values = [], []
        for key, value in fields.items():
            if key not in ("state", "progress", "funnel", "error"):  # names from this list only reach the SQL
                raise KeyError(key)
            columns.append(f"{key} = ?")
            values.append(json.dumps(value) if key in ("progress", "funnel") else value)
        if columns:
            self._run(f"UPDATE jobs SET {', '.join(columns)}, updated = ? WHERE id = ?", (*values, time.time(), job_id))

    def get(self, job_id: str) -> dict[str, Any] | None:
        rows = self._run("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _record(rows[0]) if rows else None

    def list(self) -> list[dict[str, Any]]:
        return [_record(r) for r in self._run("SELECT * FROM jobs ORDER BY created DESC")]

    def log(self, job_id: str, line: str) -> None:
        self._run("INSERT INTO logs VALUES (?, ?, ?)", (job_id, time.time(), line))

    def logs(self, job_id: str) -> list[str]:
        return [r["line"] for r in self._run("SELECT line FROM logs WHERE job = ? ORDER BY at", (job_id,))]


def _record(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "state": row["state"],
        "spec": json.loads(row["spec"]),
        "output": row["output"],
        "created": row["created"],
        "updated": row["updated"],
        "progress": json.loads(row["progress"] or "{}"),
        "funnel": json.loads(row["funnel"]) if row["funnel"] else None,
        "error": row["error"],
    }
