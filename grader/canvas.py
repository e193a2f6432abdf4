"""Fill one assignment's column of a gradebook CSV exported from Canvas, changing nothing else.

A Canvas export has a header row (`Student, ID, SIS User ID, SIS Login ID, Section`, then
assignment columns named `Title (canvas id)` and read-only totals), then rows that are not
students (`Points Possible`, and a `Manual Posting`/`Muted` row when an assignment's grades
are posted by hand), then one row per student. The file is split into fields by position
(quotes, line endings and the byte-order mark kept) and only the chosen column's field of a
matched student row is rewritten: every other byte comes back as it was.

A row is matched to a result by Canvas user id, SIS user id or SIS login id (see
grader/roster.py for the identifiers of a result); rows and results that match nothing, or
more than one, are listed and left alone, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .fileio import atomic_write_bytes
from .results import ERROR, NEEDS_MANUAL, SubmissionResult
from .roster import CANVAS_NON_STUDENT_ROWS, submission_keys

ID_COLUMNS = ("ID", "SIS User ID", "SIS Login ID")
_ASSIGNMENT_HEADER = re.compile(r"^(?P<name>.*) \((?P<id>\d+)\)$")


@dataclass
class Record:
    """One CSV record: the text and where each field starts and ends in it."""

    spans: list[tuple[int, int]]

    def raw(self, text: str, i: int) -> str:
        start, end = self.spans[i]
        return text[start:end]

    def value(self, text: str, i: int) -> str:
        if i >= len(self.spans):
            return ""
        raw = self.raw(text, i)
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            return raw[1:-1].replace('""', '"')
        return raw


def split_records(text: str) -> list[Record]:
    """RFC 4180 records with the span of every field; any line ending (CRLF, LF, CR)."""
    records: list[Record] = []
    spans: list[tuple[int, int]] = []
    n = len(text)
    i = start = 1 if text.startswith("\ufeff") else 0  # the byte-order mark is no field's
    while i <= n:
        if i < n and text[i] == '"' and i == start:
            i += 1
            while i < n:
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        i += 2
                        continue
                    break
                i += 1
            i += 1  # past the closing quote
            continue
        if i == n or text[i] in ",\r\n":
            spans.append((start, min(i, n)))
            if i == n or text[i] in "\r\n":
                if not (i == n and len(spans) == 1 and start == n):  # no empty last record
                    records.append(Record(spans))
                spans = []
                if i < n and text[i] == "\r" and i + 1 < n and text[i + 1] == "\n":
                    i += 1
            i += 1
            start = i
            continue
        i += 1
    return records


@dataclass
class CanvasExport:
    filled: dict[str, str] = field(default_factory=dict)  # Canvas row (student name) -> value
    unmatched_rows: list[str] = field(default_factory=list)  # in Canvas, no result
    unmatched_results: list[str] = field(default_factory=list)  # a result, no Canvas row
    ambiguous: list[str] = field(default_factory=list)
    not_graded: list[str] = field(default_factory=list)  # matched but an error row: left alone
    pending: list[str] = field(default_factory=list)  # filled, but manual points still to come
    column: str = ""
    warnings: list[str] = field(default_factory=list)


def choose_column(headers: list[str], wanted: Iterable[str]) -> int:
    """The assignment column: its exact header, its Canvas id, or its name (title or id)."""
    wanted = [w.strip() for w in wanted if w and w.strip()]
    assignments = {
        i: m for i, h in enumerate(headers) if (m := _ASSIGNMENT_HEADER.match(h.strip()))
    }
    for w in wanted:
        hits = [
            i
            for i, m in assignments.items()
            if w in (headers[i].strip(), m.group("id"))
            or m.group("name").strip().casefold() == w.casefold()
        ]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise UsageError(
                f"{len(hits)} Canvas columns match {w!r}: "
                + ", ".join(headers[i] for i in hits),
                hint="pass the exact column header or its Canvas id with --canvas-column",
            )
    raise UsageError(
        "no Canvas column for this assignment (looked for "
        + ", ".join(repr(w) for w in wanted) + ")",
        hint="pass --canvas-column with one of: "
        + ", ".join(headers[i] for i in assignments),
    )  # fmt: skip


def _score_text(points: float) -> str:
    return f"{round(points, 2):g}"


def _check_points_possible(
    text: str,
    records: list[Record],
    header: list[str],
    column: int,
    results: list[SubmissionResult],
    report: CanvasExport,
) -> None:
    """Points are written as they are: say so when Canvas scores the column out of another
    total (a column out of 100 would get 20 for 20/25)."""
    student = header.index("Student")
    totals = {r.max_total for r in results if r.questions}
    for record in records[1:]:
        if record.value(text, student).strip().casefold() != "points possible":
            continue
        try:
            possible = float(record.value(text, column).strip())
        except (ValueError, IndexError):
            return
        if totals and all(abs(possible - t) > 1e-6 for t in totals):
            report.warnings.append(
                f"Canvas scores {header[column]!r} out of {possible:g}, this assignment out of "
                f"{max(totals):g}: points were written as they are (change one of the two)"
            )
        return


CANVAS_USER = "\0canvas user "  # a key no identifier can be


def _result_keys(r: SubmissionResult, users: set[str]) -> set[str]:
    """What a result matches Canvas rows by. The Canvas user the roster matched it to, when
    that user is in this export (the roster told apart two students who share an id), with
    the Canvas user id its file bears (a file naming another user is then ambiguous);
    otherwise its own identifiers and its roster id."""
    canvas = str(r.origin.get("roster_canvas_id", "")).strip()
    if canvas in users:
        own = str(r.origin.get("lms_id", "")).strip()
        return {CANVAS_USER + canvas} | ({own.casefold()} if own else set())
    keys = submission_keys(r) | {str(r.origin.get("roster_id", "")).casefold()}
    return keys - {""}


def fill_gradebook(
    text: str, results: list[SubmissionResult], wanted: Iterable[str]
) -> tuple[str, CanvasExport]:
    """The export with the assignment column filled; and what was matched and what was not."""
    records = split_records(text)
    if not records:
        raise UsageError("the Canvas gradebook is empty")
    header = [records[0].value(text, i).lstrip("\ufeff") for i in range(len(records[0].spans))]
    missing = [c for c in ("Student", *ID_COLUMNS) if c not in header]
    if missing:
        raise UsageError(
            f"not a Canvas gradebook export: no column {', '.join(missing)}",
            hint="export it from Canvas: Grades > Export > Export Entire Gradebook",
        )
    column = choose_column(header, wanted)
    report = CanvasExport(column=header[column])
    by_key: dict[str, list[SubmissionResult]] = {}
    users = {
        record.value(text, header.index("ID")).strip() for record in records[1:]
    } - {""}
    for r in results:
        for key in _result_keys(r, users):
            by_key.setdefault(key, []).append(r)
    placed: set[int] = set()
    edits: list[tuple[tuple[int, int], str]] = []
    rows = []
    canvas_ids: dict[int, set[str]] = {}  # result -> the Canvas users whose rows it matches
    for record in records[1:]:
        name = record.value(text, header.index("Student"))
        ids = [record.value(text, header.index(c)).strip() for c in ID_COLUMNS]
        if not ids[0] or name.strip().casefold() in CANVAS_NON_STUDENT_ROWS:
            continue
        keys = [CANVAS_USER + ids[0], *(key.casefold() for key in ids if key)]
        hits = {id(r): r for key in keys for r in by_key.get(key, [])}
        rows.append((record, name, ids, hits))
        for hit in hits:
            canvas_ids.setdefault(hit, set()).add(ids[0])
    _check_points_possible(text, records, header, column, results, report)
    for record, name, ids, hits in rows:
        if not hits:
            report.unmatched_rows.append(f"{name} (ID {ids[0]})")
            continue
        if len(hits) > 1:
            report.ambiguous.append(
                f"{name} (ID {ids[0]}): " + ", ".join(r.student for r in hits.values())
            )
            placed.update(hits)
            continue
        result = next(iter(hits.values()))
        placed.add(id(result))
        if len(canvas_ids[id(result)]) > 1:  # e.g. its name is another student's login
            others = sorted(canvas_ids[id(result)] - {ids[0]})
            report.ambiguous.append(
                f"{name} (ID {ids[0]}): {result.student} also matches Canvas ID {', '.join(others)}"
            )
            continue
        if result.status == ERROR:
            report.not_graded.append(f"{name}: {result.student} could not be graded")
            continue
        if column >= len(record.spans):
            raise UsageError(f"the Canvas row of {name} has fewer columns than the header")
        old = record.raw(text, column)
        value = _score_text(result.final)
        edits.append((record.spans[column], f'"{value}"' if old.startswith('"') else value))
        report.filled[name] = value
        if result.status == NEEDS_MANUAL:
            report.pending.append(f"{name}: {value} so far, {result.pending_points:g} points not scored yet")
    report.unmatched_results = sorted(r.student for r in results if id(r) not in placed)
    out = text
    for (start, end), value in sorted(edits, reverse=True):
        out = out[:start] + value + out[end:]
    return out, report


def export_canvas(
    gradebook: Path, results: list[SubmissionResult], out: Path, wanted: Iterable[str]
) -> CanvasExport:
    """Read a Canvas export, write the filled copy to `out` (atomically)."""
    try:
        text = gradebook.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the Canvas gradebook {gradebook}: {exc}") from exc
    filled, report = fill_gradebook(text, results, wanted)
    atomic_write_bytes(out, filled.encode("utf-8"))
    return report
