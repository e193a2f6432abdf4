"""A batch's course context: when each submission came in, extensions, the roster.

* submission times come from, in order: an explicit `submissions.csv` (student, file,
  submitted_at), the entry time of a class zip downloaded from the LMS, the file's
  modification time (with a warning when a deadline is set: copying a file changes it);
* `extensions.csv` (student, then `due` as an ISO time or `days` of extra time) moves one
  student's due time, and the cut-off with it;
* the roster adds a `missing` row for every student without a submission.

The roster and extensions given to `grader grade` are kept in the output folder, so
`grader export` rebuilds the same grades without being given them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .errors import UsageError
from .fileio import atomic_write_bytes
from .lateness import DeadlinePolicy, lateness, parse_time
from .results import SubmissionResult
from .roster import MISSING, apply_roster, csv_rows, read_roster, submission_keys
from .spec import AssignmentSpec

SOURCE_CSV = "submissions.csv"
SOURCE_ZIP = "zip entry time"
SOURCE_MTIME = "file modification time"
KEPT = {"roster": "roster.csv", "extensions": "extensions.csv"}


def _rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    header, rows = csv_rows(path, "the file")
    columns = {c.strip() for c in header}
    absent = [c for c in required if c not in columns]
    if absent:
        raise UsageError(f"{path} has no column {', '.join(absent)}")
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in rows]


def read_submission_times(path: Path) -> dict[tuple[str, str], datetime]:
    """(student, file name or '') -> submitted_at, from a submissions.csv."""
    table: dict[tuple[str, str], datetime] = {}
    for line, row in enumerate(_rows(path, ("student", "submitted_at")), start=2):
        try:
            when = datetime.fromisoformat(row["submitted_at"])
        except ValueError:
            raise UsageError(f"{path} line {line}: {row['submitted_at']!r} is not an ISO time") from None
        if when.tzinfo is None:
            raise UsageError(
                f"{path} line {line}: {row['submitted_at']!r} has no time zone",
                hint="write times with their offset, e.g. 2026-03-07T23:59:00-05:00",
            )
        key = (row["student"].casefold(), Path(row.get("file", "")).name)
        if not key[0]:
            raise UsageError(f"{path} line {line}: no student named")
        if key in table and table[key] != when:
            raise UsageError(
                f"{path} line {line}: a second time for {row['student']!r}"
                + (f" and {key[1]!r}" if key[1] else ""),
                hint="give one time per submission file (the one that was graded)",
            )
        table[key] = when
    return table


def time_for(
    table: dict[tuple[str, str], datetime], student: str, label: str
) -> datetime | None:
    """The explicit time of one submission: by student and file, else by student alone."""
    name = Path(label.split(":")[-1]).name
    return table.get((student.casefold(), name)) or table.get((student.casefold(), ""))


def read_extensions(path: Path, policy: DeadlinePolicy | None) -> dict[str, datetime]:
    """student -> the new due time."""
    if policy is None:
        raise UsageError("extensions were given but the assignment has no [deadline]")
    table: dict[str, datetime] = {}
    for line, row in enumerate(_rows(path, ("student",)), start=2):
        where = f"{path} line {line}"
        student = row["student"].casefold()
        if not student:
            raise UsageError(f"{where}: no student named")  # never an extension for everyone
        if student in table:
            raise UsageError(f"{where}: a second extension for {row['student']!r}")
        if row.get("due"):
            table[student] = parse_time(row["due"], policy.timezone, where)
        elif row.get("days"):
            try:
                days = float(row["days"])
                local = policy.due.replace(tzinfo=None) + timedelta(days=days)
            except (ValueError, OverflowError):
                raise UsageError(f"{where}: days must be a number of days, such as 2 or 0.5") from None
            table[student] = local.replace(tzinfo=policy.zone)
        else:
            raise UsageError(f"{where}: give the new `due` time or the extra `days`")
    return table


def apply_deadline(
    policy: DeadlinePolicy | None,
    results: list[SubmissionResult],
    extensions: dict[str, datetime],
) -> list[str]:
    """Set each result's `late` record; returns warnings for the batch."""
    warnings = []
    by_mtime = []
    for r in results:
        r.late = {}
        if policy is None or r.status == MISSING:
            continue
        keys = (submission_keys(r) | {str(r.origin.get("roster_id", "")).casefold()}) - {""}
        new_due = next((extensions[k] for k in sorted(keys) if k in extensions), None)
        applied = policy.extended(new_due) if new_due is not None else policy
        submitted = _parse(r.submitted_at)
        verdict = lateness(applied, submitted)
        source = str(r.origin.get("time_source", ""))
        explanation = verdict.explanation
        if new_due is not None:
            explanation += f" (extension to {new_due.isoformat(timespec='minutes')})"
        if source:
            explanation += f"; time from the {source}"
        if source == SOURCE_MTIME:
            by_mtime.append(r.student)
        if r.origin.get("canvas_late") and verdict.late_seconds == 0:
            explanation += "; Canvas marked it LATE but its time is inside the deadline"
        r.late = {
            **verdict.to_dict(),
            "explanation": explanation,
            "due": applied.due.isoformat(timespec="minutes"),
            "submitted_at": r.submitted_at,
            "time_source": source,
        }
    if by_mtime:
        warnings.append(
            f"{len(by_mtime)} submission time(s) taken from file modification times, which "
            "copying changes: pass --submissions-csv for exact ones ("
            + ", ".join(sorted(by_mtime)[:10]) + ")"
        )  # fmt: skip
    unused = set(extensions) - {
        k for r in results for k in submission_keys(r) | {str(r.origin.get("roster_id", "")).casefold()}
    }
    if unused:
        warnings.append("extensions for students without a submission: " + ", ".join(sorted(unused)))
    return warnings


def _parse(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass
class CourseFiles:
    roster: Path | None = None
    extensions: Path | None = None


@dataclass
class CourseReport:
    unknown: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _kept(out: Path, name: str, given: Path | None) -> Path | None:
    kept = out / KEPT[name]
    if given is not None:
        if not given.is_file():
            raise UsageError(f"no {name} file at {given}")
        if given.resolve() != kept.resolve():
            atomic_write_bytes(kept, given.read_bytes())  # a crash never leaves half a roster
        return kept
    return kept if kept.is_file() else None


def finish_results(
    spec: AssignmentSpec, results: list[SubmissionResult], out: Path, files: CourseFiles | None = None
) -> tuple[list[SubmissionResult], CourseReport]:
    """Roster rows and late penalties on top of the gradebook's results."""
    files = files or CourseFiles()
    report = CourseReport()
    roster_path = _kept(out, "roster", files.roster)
    if roster_path is not None:
        match = apply_roster(spec, results, read_roster(roster_path))
        results = match.results
        report.unknown, report.ambiguous = match.unknown, match.ambiguous
        report.missing = [r.student for r in results if r.status == MISSING]
        if match.unknown:
            report.warnings.append("submissions from students not on the roster: " + ", ".join(match.unknown))
        if match.ambiguous:
            report.warnings.append(
                "not matched one to one with the roster (left as they are): " + "; ".join(match.ambiguous)
            )
    ext_path = _kept(out, "extensions", files.extensions)
    extensions = read_extensions(ext_path, spec.deadline) if ext_path is not None else {}
    report.warnings += apply_deadline(spec.deadline, results, extensions)
    return results, report
