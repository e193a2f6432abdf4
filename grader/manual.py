"""Scores given by hand to free-response answers: checked, saved whole, tied to the answer.

A manual score records the hash of the answer it graded. When the student resubmits with a
different answer, the score is kept in the gradebook but not applied: the question shows
"answer changed since it was scored: review again" until someone scores it again. The same
rules serve the review page (grader/review_server.py) and `manual.csv` import.
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

from .errors import UsageError
from .feedback import REVIEW_AGAIN, REVIEW_POINTS
from .gradebook import Gradebook, ManualScore
from .report import csv_unescape
from .results import Q_MANUAL, QuestionResult, SubmissionResult
from .scoring import apply_manual_score
from .spec import AssignmentSpec

MAX_COMMENT_CHARS = 10_000


def answer_hash(text: str) -> str:
    """What identifies an answer: its text without trailing blanks or line-ending style."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    norm = "\n".join(line.rstrip() for line in lines).strip()
    return hashlib.sha256(norm.encode("utf-8", "replace")).hexdigest()[:16]


def check_points(value: object, max_points: float) -> float | None:
    """A points value typed by a person: blank is None; else a number 0..max in halves.

    Raises ValueError with a message for the person."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("points must be a number")
    if isinstance(value, int | float):
        points = float(value)
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            points = float(text.replace(",", "."))
        except ValueError:
            raise ValueError(f"points must be a number, not {text[:20]!r}") from None
    if not math.isfinite(points) or not 0 <= points <= max_points:
        raise ValueError(f"points must be between 0 and {max_points:g}")
    if points * 2 != round(points * 2):
        raise ValueError("points go in halves (0, 0.5, 1, ...)")
    return points


def check_comment(value: object) -> str:
    text = "" if value is None else str(value)
    if len(text) > MAX_COMMENT_CHARS:
        raise ValueError(f"a comment holds at most {MAX_COMMENT_CHARS:,} characters")
    return text.replace("\r\n", "\n").replace("\x00", "")


def apply_manual(
    spec: AssignmentSpec,
    results: list[SubmissionResult],
    entries: dict[tuple[str, str], ManualScore],
) -> list[SubmissionResult]:
    """Put the hand-given scores and comments into the results (in place, and returned)."""
    manual = {q.id: q.points for q in spec.manual_questions}  # worth now (edited since?)
    for r in results:
        for i, q in enumerate(r.questions):
            entry = entries.get((r.student, q.id))
            if q.id in manual and entry is not None:
                worth = min(q.max_points, manual[q.id])
                r.questions[i] = applied(q, entry, r.manual_answers.get(q.id, ""), worth)
        r.settle_status()  # `needs manual grading` until every answer has its score
    return results


def applied(
    q: QuestionResult, entry: ManualScore, answer: str, worth: float | None = None
) -> QuestionResult:
    """One question with its manual entry: scored, commented, or 'review again' (the answer
    changed since, or the question's points were lowered below the score given)."""
    if entry.answer_hash and entry.answer_hash != answer_hash(answer):
        before = "" if entry.points is None else f" (it had {entry.points:g} points)"
        return QuestionResult(q.id, Q_MANUAL, 0.0, q.max_points, [], REVIEW_AGAIN + before)
    worth = q.max_points if worth is None else worth
    if entry.points is not None and entry.points > worth:
        before = f" (it had {entry.points:g} of {worth:g} points)"
        return QuestionResult(q.id, Q_MANUAL, 0.0, q.max_points, [], REVIEW_POINTS + before)
    scored = apply_manual_score(q, entry.points) if entry.points is not None else q
    if entry.comment:
        message = (
            ""
            if scored.message in ("scored by hand", "waits for a manual score")
            else scored.message
        )
        comment = f"Comment: {entry.comment}"
        scored = QuestionResult(
            scored.id,
            scored.status,
            scored.points,
            scored.max_points,
            scored.checks,
            f"{message}\n{comment}".strip(),
        )
    return scored


def import_manual(spec: AssignmentSpec, csv_path: Path, gradebook: Path) -> int:
    """Merge a filled-in manual.csv into the gradebook; returns how many rows were set.

    Every row is checked before any is written, and all are written in one transaction: a
    sheet with one bad row changes nothing. A row's `answer_hash` (as grader wrote it) ties
    the score to the answer that was read; without the column, the current answer."""
    manual_ids = {q.id: q for q in spec.manual_questions}
    if not gradebook.is_file():
        raise UsageError(
            f"no gradebook at {gradebook}", hint="grade the submissions first, or pass --gradebook"
        )
    try:
        handle = csv_path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise UsageError(f"cannot read {csv_path}: {exc.strerror}") from exc
    scores: list[tuple[str, str, ManualScore]] = []
    with handle, Gradebook(gradebook) as book:
        answers = {r.student: r.manual_answers for r in book.current_results()}
        try:
            rows = list(csv.DictReader(handle))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{csv_path}: not a readable CSV file: {exc}") from None
        for line, row in enumerate(rows, start=2):
            where = f"{csv_path} line {line}"
            qid = row.get("question") or ""
            if qid not in manual_ids:
                raise UsageError(f"{where}: unknown manual question {qid[:40]!r}")
            try:
                points = check_points(row.get("points"), manual_ids[qid].points)
                comment = check_comment(csv_unescape(row.get("comment") or ""))
            except ValueError as exc:
                raise UsageError(f"{where}: {exc}") from None
            if points is None and not comment:
                continue
            student = csv_unescape(row.get("student") or "")
            if student not in answers:
                raise UsageError(
                    f"{where}: no graded submission from student {student[:60]!r}",
                    hint="keep the student column as grader wrote it in manual.csv",
                )
            digest = (row.get("answer_hash") or "").strip() or answer_hash(
                answers[student].get(qid, "")
            )
            scores.append((student, qid, ManualScore(points, comment, digest)))
        book.set_manual_many(scores)
    return len(scores)
