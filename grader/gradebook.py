"""The gradebook: every submission's result, kept in an embedded SQLite database.

All access goes through this module, so a server database can replace it later. Each graded
submission is committed on its own, so a batch killed half way keeps everything it finished;
rerun, it skips what is already there (same content, same grader) and grades the rest.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from .errors import GradebookError
from .results import SubmissionResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    student      TEXT NOT NULL,
    cache_key    TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    file         TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    graded_at    TEXT NOT NULL,
    status       TEXT NOT NULL,
    total        REAL NOT NULL,
    result_json  TEXT NOT NULL,
    PRIMARY KEY (student, cache_key)
);
CREATE TABLE IF NOT EXISTS question_results (
    student   TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    question  TEXT NOT NULL,
    status    TEXT NOT NULL,
    points    REAL NOT NULL,
    max_points REAL NOT NULL,
    message   TEXT NOT NULL,
    PRIMARY KEY (student, cache_key, question)
);
CREATE TABLE IF NOT EXISTS current (
    student   TEXT PRIMARY KEY,
    cache_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS manual_scores (
    student    TEXT NOT NULL,
    question   TEXT NOT NULL,
    points     REAL NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (student, question)
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Gradebook:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise GradebookError(
                f"cannot open the gradebook {self.path}: {exc}",
                hint="pass another --gradebook path, or move the damaged file aside",
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Gradebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        for attempt in range(50):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    def save(self, result: SubmissionResult, cache_key: str) -> None:
        """Record one graded submission and make it the student's current result."""
        data = json.dumps(result.to_dict(), sort_keys=True)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    result.student,
                    cache_key,
                    result.content_hash,
                    result.file,
                    result.submitted_at,
                    _now(),
                    result.status,
                    result.total,
                    data,
                ),
            )
            db.execute(
                "DELETE FROM question_results WHERE student=? AND cache_key=?",
                (result.student, cache_key),
            )
            db.executemany(
                "INSERT INTO question_results VALUES (?,?,?,?,?,?,?)",
                [
                    (result.student, cache_key, q.id, q.status, q.points, q.max_points, q.message)
                    for q in result.questions
                ],
            )
            db.execute("INSERT OR REPLACE INTO current VALUES (?,?)", (result.student, cache_key))

    def cached(self, student: str, cache_key: str) -> SubmissionResult | None:
        row = self._db.execute(
            "SELECT result_json FROM results WHERE student=? AND cache_key=?",
            (student, cache_key),
        ).fetchone()
        return SubmissionResult.from_dict(json.loads(row[0])) if row else None

    def set_current(self, student: str, cache_key: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO current VALUES (?,?)", (student, cache_key))

    def current_results(self) -> list[SubmissionResult]:
        rows = self._db.execute(
            "SELECT r.result_json FROM current c JOIN results r "
            "ON r.student=c.student AND r.cache_key=c.cache_key ORDER BY c.student"
        ).fetchall()
        return [SubmissionResult.from_dict(json.loads(row[0])) for row in rows]

    def set_manual(self, student: str, question: str, points: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO manual_scores VALUES (?,?,?,?)",
                (student, question, points, _now()),
            )

    def manual_scores(self) -> dict[tuple[str, str], float]:
        rows = self._db.execute("SELECT student, question, points FROM manual_scores").fetchall()
        return {(s, q): float(p) for s, q, p in rows}

    def count(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM current").fetchone()
        return int(row[0])
