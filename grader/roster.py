"""The class roster: every student gets a row, submitted or not.

A roster is a CSV with `id`, `name`, `email` columns, or the gradebook CSV Canvas exports
(`Student`, `ID`, `SIS User ID`, `SIS Login ID`, `Section`). A submission belongs to a roster
student when one of the submission's identifiers (its student name, the Canvas user id in a
Canvas file name) equals one of the student's (id, Canvas id, SIS id, login, e-mail, or the
part of the e-mail before the @), compared without case. Names are never matched: two
students may share one, and a guess would put a grade on the wrong student.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import results as R
from .errors import UsageError
from .results import QuestionResult, SubmissionResult
from .spec import AssignmentSpec

MISSING = "missing"  # the submission status of a roster student who handed in nothing
CANVAS_NON_STUDENT_ROWS = ("points possible", "muted", "manual posting", "posting policy")


@dataclass(frozen=True)
class RosterStudent:
    id: str
    name: str = ""
    email: str = ""
    canvas_id: str = ""
    sis_id: str = ""
    login: str = ""
    section: str = ""

    def keys(self) -> set[str]:
        values = [self.id, self.canvas_id, self.sis_id, self.login, self.email]
        if "@" in self.email:
            values.append(self.email.split("@", 1)[0])
        return {v.strip().casefold() for v in values if v.strip()}


def submission_keys(result: SubmissionResult) -> set[str]:
    """What identifies a submission's author: the student name and any LMS user id."""
    values = [result.student, str(result.origin.get("lms_id", ""))]
    return {v.strip().casefold() for v in values if v.strip()}


def csv_rows(path: Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of an instructor's CSV (a byte-order mark, any line ending, and
    line breaks inside quoted fields allowed); every problem is a UsageError."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from exc
    return list(reader.fieldnames or []), rows


def read_roster(path: Path) -> list[RosterStudent]:
    """A roster CSV (id, name, email) or a Canvas gradebook export."""
    _, rows = csv_rows(path, "the roster")
    if not rows:
        raise UsageError(f"the roster {path} has no students")
    header = {h.strip().casefold(): h for h in rows[0]}
    if "sis user id" in header and "id" in header:
        return _from_canvas(rows)
    if "id" not in header:
        raise UsageError(
            f"the roster {path} has no 'id' column",
            hint="columns: id, name, email (or a gradebook CSV exported from Canvas)",
        )

    def get(row: dict[str, str], key: str) -> str:
        return (row.get(header.get(key, ""), "") or "").strip()

    students = [
        RosterStudent(id=get(row, "id"), name=get(row, "name"), email=get(row, "email"))
        for row in rows
        if get(row, "id")
    ]
    _no_duplicates(students, path)
    return students


def _from_canvas(rows: list[dict[str, str]]) -> list[RosterStudent]:
    students = []
    for row in rows:
        first = (row.get("Student") or "").strip().casefold()
        canvas_id = (row.get("ID") or "").strip()
        if not canvas_id or first in CANVAS_NON_STUDENT_ROWS:
            continue
        students.append(
            RosterStudent(
                id=(row.get("SIS Login ID") or row.get("SIS User ID") or canvas_id).strip(),
                name=(row.get("Student") or "").strip(),
                canvas_id=canvas_id,
                sis_id=(row.get("SIS User ID") or "").strip(),
                login=(row.get("SIS Login ID") or "").strip(),
                section=(row.get("Section") or "").strip(),
            )
        )
    return students


def _no_duplicates(students: list[RosterStudent], path: Path) -> None:
    seen: set[str] = set()
    for s in students:
        if s.id.casefold() in seen:
            raise UsageError(f"the roster {path} lists {s.id!r} twice")
        seen.add(s.id.casefold())


def missing_result(spec: AssignmentSpec, student: RosterStudent) -> SubmissionResult:
    """The row of a roster student without a submission: status `missing`, 0 points."""
    return SubmissionResult(
        student=student.id,
        file="",
        content_hash="",
        status=MISSING,
        questions=[
            QuestionResult(q.id, R.Q_MISSING, 0.0, q.points, message="no submission")
            for q in spec.questions
        ],
        error="no submission received",
        origin={"roster_name": student.name, "roster_id": student.id, **_canvas(student)},
    )


def _canvas(student: RosterStudent) -> dict[str, str]:
    """The Canvas user a roster match found, kept so the Canvas export fills that row alone
    (an id two Canvas students share would match both)."""
    return {"roster_canvas_id": student.canvas_id} if student.canvas_id else {}


@dataclass
class RosterMatch:
    results: list[SubmissionResult]  # every submission, then a `missing` row per absentee
    unknown: list[str]  # submitters not on the roster
    ambiguous: list[str]  # submitters matching more than one roster student


def apply_roster(
    spec: AssignmentSpec, results: Iterable[SubmissionResult], roster: list[RosterStudent]
) -> RosterMatch:
    """Match submissions to the roster; absentees get a `missing` row, strangers are listed.

    Roster students are told apart as rows, not by id: a Canvas export may give two students
    one id (one's login is the other's SIS id); a submission matching both is ambiguous, and
    each of them, absent, gets a row of its own under a name no other row bears."""
    once: dict[str, RosterStudent] = {}
    for s in roster:  # a student listed twice (two sections): once
        once.setdefault((s.canvas_id or s.id).casefold(), s)
    roster = list(once.values())
    counts = Counter(s.id.casefold() for s in roster)

    def label(s: RosterStudent) -> str:
        shared = counts[s.id.casefold()] > 1 and s.canvas_id
        return f"{s.id} (Canvas ID {s.canvas_id})" if shared else s.id

    by_key: dict[str, list[int]] = {}
    for i, s in enumerate(roster):
        for key in s.keys():
            by_key.setdefault(key, []).append(i)
    found: dict[int, list[str]] = {}  # roster row -> the submissions matched to it
    out, unknown, ambiguous = [], [], []
    for r in results:
        matches = sorted({i for key in submission_keys(r) for i in by_key.get(key, [])})
        if len(matches) == 1:
            student = roster[matches[0]]
            found.setdefault(matches[0], []).append(r.student)
            r.origin = {
                **r.origin,
                "roster_id": student.id,
                "roster_name": student.name,
                **_canvas(student),
            }
        elif matches:
            names = sorted(label(roster[i]) for i in matches)
            ambiguous.append(f"{r.student} (matches {', '.join(names)})")
        else:
            unknown.append(r.student)
        out.append(r)
    ambiguous += [
        f"{', '.join(names)} (all match {label(roster[i])})" for i, names in found.items() if len(names) > 1
    ]
    taken = {r.student.casefold() for r in out}
    for i, s in enumerate(roster):
        if i in found:
            continue
        row = missing_result(spec, s)
        row.student = _free_name(label(s), taken)  # never a submission's row or files
        taken.add(row.student.casefold())
        out.append(row)
    return RosterMatch(out, unknown, ambiguous)


def _free_name(name: str, taken: set[str]) -> str:
    """`name`, or `name (no submission)` when a row bears it (e.g. a login that an ambiguous
    file bears), numbered on if that too is taken."""
    candidates = [name, f"{name} (no submission)"]
    candidates += (f"{name} (no submission {n})" for n in range(2, len(taken) + 3))
    return next(c for c in candidates if c.casefold() not in taken)
