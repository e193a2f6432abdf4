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
        origin={"roster_name": student.name, "roster_id": student.id},
    )


@dataclass
class RosterMatch:
    results: list[SubmissionResult]  # every submission, then a `missing` row per absentee
    unknown: list[str]  # submitters not on the roster
    ambiguous: list[str]  # submitters matching more than one roster student


def apply_roster(
    spec: AssignmentSpec, results: Iterable[SubmissionResult], roster: list[RosterStudent]
) -> RosterMatch:
    """Match submissions to the roster; absentees get a `missing` row, strangers are listed."""
    by_key: dict[str, list[RosterStudent]] = {}
    for s in roster:
        for key in s.keys():
            by_key.setdefault(key, []).append(s)
    found: dict[str, list[str]] = {}  # roster id -> the submissions matched to it
    out, unknown, ambiguous = [], [], []
    for r in results:
        matches = {s.id: s for key in submission_keys(r) for s in by_key.get(key, [])}
        if len(matches) == 1:
            student = next(iter(matches.values()))
            found.setdefault(student.id, []).append(r.student)
            r.origin = {**r.origin, "roster_id": student.id, "roster_name": student.name}
        elif matches:
            ambiguous.append(f"{r.student} (matches {', '.join(sorted(matches))})")
        else:
            unknown.append(r.student)
        out.append(r)
    ambiguous += [
        f"{', '.join(names)} (all match {sid})" for sid, names in found.items() if len(names) > 1
    ]
    absent = {s.id: s for s in roster if s.id not in found}  # once, if listed twice
    submitters = {r.student.casefold() for r in out}
    for s in absent.values():
        row = missing_result(spec, s)
        if row.student.casefold() in submitters:  # e.g. a login that an ambiguous file bears
            row.student = f"{s.id} (no submission)"  # never the submission's row or files
        out.append(row)
    return RosterMatch(out, unknown, ambiguous)
