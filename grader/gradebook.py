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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import Any

from .errors import GradebookError
from .results import SubmissionResult

FILE_NAME = "gradebook.sqlite"  # in the output folder, unless given

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
CREATE TABLE IF NOT EXISTS executed (
    student   TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    notebook  BLOB NOT NULL,
    PRIMARY KEY (student, cache_key)
);
CREATE TABLE IF NOT EXISTS pages (
    student  TEXT PRIMARY KEY,
    page_key TEXT NOT NULL,
    parts    BLOB NOT NULL
);
"""
# Columns added after the first release: (table, column, declaration). Opening an older
# gradebook adds them; nothing is rewritten.
MIGRATIONS = (
    ("manual_scores", "comment", "TEXT NOT NULL DEFAULT ''"),
    ("manual_scores", "answer_hash", "TEXT NOT NULL DEFAULT ''"),
)


@dataclass(frozen=True)
class ManualScore:
    """A human's score for one answer: points (None: a comment only), the comment, and the
    hash of the answer it graded, so a changed answer is never silently given the old score."""

    points: float | None
    comment: str = ""
    answer_hash: str = ""
    updated_at: str = ""


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
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise GradebookError(
                f"cannot open the gradebook {self.path}: {exc}",
                hint="pass another --gradebook path, or move the damaged file aside",
            ) from exc

    def _migrate(self) -> None:
        for table, column, decl in MIGRATIONS:
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

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

    def save(
        self,
        result: SubmissionResult,
        cache_key: str,
        executed: bytes | None = None,
        page: tuple[str, bytes] | None = None,
    ) -> None:
        """Record one graded submission and make it the student's current result.

        `executed`: the notebook as the grader ran it (compressed JSON, see grader/executed.py).
        `page`: its feedback page's drawn parts as (key, compressed parts), see grader/pages.py.
        """
        data = json.dumps(result.to_dict(), sort_keys=True)
        with self._tx() as db:
            if page is not None:
                db.execute("INSERT OR REPLACE INTO pages VALUES (?,?,?)", (result.student, *page))
            if executed is not None:
                db.execute(
                    "INSERT OR REPLACE INTO executed VALUES (?,?,?)",
                    (result.student, cache_key, executed),
                )
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

    def page(self, student: str, page_key: str) -> bytes | None:
        """The student's kept feedback parts (compressed), if drawn for `page_key`."""
        row = self._db.execute(
            "SELECT parts FROM pages WHERE student=? AND page_key=?", (student, page_key)
        ).fetchone()
        return _blob(row)

    def set_page(self, student: str, page_key: str, parts: bytes) -> None:
        """Keep parts drawn again (one row per student: it replaces the older one). Parts that
        cannot be kept at once (the gradebook busy or read-only) are only drawn again next
        time: one statement, no retry."""
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO pages VALUES (?,?,?)", (student, page_key, parts)
            )
        except sqlite3.Error:
            pass

    def executed(self, student: str) -> bytes | None:
        """The student's current executed notebook (compressed), if it was kept."""
        row = self._db.execute(
            "SELECT e.notebook FROM current c JOIN executed e "
            "ON e.student=c.student AND e.cache_key=c.cache_key WHERE c.student=?",
            (student,),
        ).fetchone()
        return _blob(row)

    def set_manual(
        self,
        student: str,
        question: str,
        points: float | None,
        comment: str = "",
        answer_hash: str = "",
    ) -> None:
        self.set_manual_many([(student, question, ManualScore(points, comment, answer_hash))])

    def set_manual_many(self, scores: list[tuple[str, str, ManualScore]]) -> None:
        """Every score in one transaction: all are saved, or none. NULL points: not scored."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO manual_scores "
                "(student, question, points, updated_at, comment, answer_hash) "
                "VALUES (?,?,?,?,?,?)",
                [
                    (s, q, -1.0 if m.points is None else m.points, _now(), m.comment, m.answer_hash)
                    for s, q, m in scores
                ],
            )

    def update_manual(
        self,
        student: str,
        question: str,
        answer_hash: str,
        points: float | EllipsisType | None = ...,
        comment: str | EllipsisType = ...,
    ) -> ManualScore:
        """Change the points, the comment or both (`...`: leave as it is), in one transaction:
        two browser tabs editing different fields of one answer do not undo each other."""
        with self._tx() as db:
            row = db.execute(
                "SELECT points, comment, answer_hash FROM manual_scores WHERE student=? AND question=?",
                (student, question),
            ).fetchone()
            old = ManualScore(
                None if row is None or row[0] < 0 else float(row[0]),
                row[1] if row else "",
                row[2] if row else "",
            )
            if old.answer_hash != answer_hash:  # a score for another answer: start afresh
                old = ManualScore(None, old.comment)
            new = ManualScore(
                old.points if points is ... else points,
                old.comment if comment is ... else comment,
                answer_hash,
                _now(),
            )
            db.execute(
                "INSERT OR REPLACE INTO manual_scores "
                "(student, question, points, updated_at, comment, answer_hash) VALUES (?,?,?,?,?,?)",
                (
                    student,
                    question,
                    -1.0 if new.points is None else new.points,
                    new.updated_at,
                    new.comment,
                    answer_hash,
                ),
            )
        return new

    def manual_entries(self) -> dict[tuple[str, str], ManualScore]:
        rows = self._db.execute(
            "SELECT student, question, points, comment, answer_hash, updated_at FROM manual_scores"
        ).fetchall()
        return {
            (s, q): ManualScore(None if p < 0 else float(p), c, h, t) for s, q, p, c, h, t in rows
        }

    def manual_scores(self) -> dict[tuple[str, str], float]:
        return {key: m.points for key, m in self.manual_entries().items() if m.points is not None}


def _blob(row: tuple[Any, ...] | None) -> bytes | None:
    """A stored blob, None without a row. A row that holds anything else (a gradebook edited
    by hand) gives b"", which its reader takes for damaged (drawn again, or said)."""
    if row is None:
        return None
    return row[0] if isinstance(row[0], bytes) else b""
