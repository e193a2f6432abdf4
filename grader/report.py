"""Grade tables and feedback files. Everything a student controls is escaped.

* ``grades.csv``: one row per student, points per question, total, status;
* ``feedback/<student>.json`` (machines), ``.md`` and ``.html`` (people);
* ``manual.csv``: one row per student and free-response question, points left blank;
* every file is written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path

from nbformat import NotebookNode

from .fileio import atomic_write_text
from .gradebook import Gradebook
from .results import Q_MANUAL, SubmissionResult
from .roster import MISSING
from .spec import AssignmentSpec

REPORT_NAME = "report.html"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"[\n\r\u2028\u2029\x85]")
_MD_SPECIAL = re.compile(r"[\\[\]()*_#|!~]")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def safe_filename(name: str) -> str:
    """A file name derived from a student id: no path separators, no control characters.

    A name that had to be changed gets a short hash of the original, so two students whose
    names differ only in the characters replaced ("Zoë", "Zoé") never share a file.
    """
    cleaned = (_SAFE_NAME.sub("_", name).strip("._") or "student")[:100]
    if cleaned != name:
        cleaned += "-" + hashlib.sha256(name.encode("utf-8", "replace")).hexdigest()[:8]
    return cleaned


def terminal_safe(text: str) -> str:
    """Text with control characters (escape sequences, C1 controls, bidi overrides) made
    visible. Newlines and tabs stay; see `one_line` where a line must stay one line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text)


def one_line(text: str) -> str:
    """terminal_safe, and line breaks made visible: a log line cannot fake another line."""
    return _LINE_BREAKS.sub(lambda m: repr(m.group())[1:-1], terminal_safe(text))


def html_safe(text: object) -> str:
    """Text for HTML: markup escaped, control characters made visible."""
    return html.escape(terminal_safe(str(text)))


def csv_safe(value: object) -> str:
    """A cell a spreadsheet will not run as a formula. Reversible (`csv_unescape`): text that
    starts with a quote gets one too, so `'=x` and `=x` never read back as one name."""
    text = "" if value is None else str(value)
    if text and text[0] in (*_CSV_FORMULA, "'") and not _is_number(text):
        return "'" + text
    return text


def csv_unescape(text: str) -> str:
    """The value `csv_safe` was given."""
    return text[1:] if text.startswith("'") else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fmt(points: float) -> str:
    return f"{points:g}"


def grades_csv(spec: AssignmentSpec, results: Iterable[SubmissionResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    qids = [q.id for q in spec.questions]
    writer.writerow(
        ["student", "file", *qids, "total", "max", *LATE_COLUMNS, "final", "status", "score", "notes"]
    )
    for r in sorted(results, key=lambda r: r.student):
        by_id = {q.id: q for q in r.questions}
        row = [csv_safe(r.student), csv_safe(r.file)]
        for qid in qids:
            q = by_id.get(qid)
            if q is None or q.status == Q_MANUAL:
                row.append("")
            else:
                row.append(_fmt(q.points))
        notes = "; ".join(([r.error] if r.error else []) + r.changed_cells[:3])
        row += [_fmt(r.total), _fmt(spec_total(spec)), *_late_cells(r), _fmt(r.final)]
        row += [r.status, score_text(r, spec), csv_safe(notes[:300])]
        writer.writerow(row)
    return buffer.getvalue()


# The lateness columns of grades.csv (grader/lateness.py); `total` is the raw score.
LATE_COLUMNS = ("submitted_at", "late_hours", "penalty_percent")


def _late_cells(r: SubmissionResult) -> list[str]:
    if not r.late:
        return [csv_safe(r.submitted_at) if r.file else "", "", ""]
    hours = float(r.late.get("late_seconds", 0)) / 3600
    return [csv_safe(r.submitted_at), f"{hours:.2f}", _fmt(float(r.late["penalty_percent"]))]


def late_line(r: SubmissionResult) -> str:
    """How the late penalty was computed, for the feedback ('' when there is none to tell)."""
    if not r.late or (not r.late.get("late_seconds") and not r.late.get("penalty_percent")):
        return ""
    return (
        f"Late: {r.late['explanation']}. Final score {_fmt(r.final)} "
        f"(raw {_fmt(r.total)}, {_fmt(float(r.late['penalty_percent']))}% off)."
    )


def spec_total(spec: AssignmentSpec) -> float:
    return sum(q.points for q in spec.questions)


def manual_csv(
    spec: AssignmentSpec, results: Iterable[SubmissionResult], book: Gradebook | None = None
) -> str:
    """The sheet for free-response answers: points and comments already given are filled in;
    `answer_hash` ties a score to the answer it read (keep that column as it is)."""
    from .manual import answer_hash

    entries = book.manual_entries() if book is not None else {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "question", "max_points", "answer", "points", "comment", "answer_hash"])
    for r in sorted(results, key=lambda r: r.student):
        if not r.file:  # a roster student with no submission: nothing to grade by hand
            continue
        for q in spec.manual_questions:
            answer = r.manual_answers.get(q.id, "")
            entry = entries.get((r.student, q.id))
            digest = answer_hash(answer)
            current = entry is not None and entry.answer_hash in ("", digest)
            given = entry.points if current and entry is not None else None
            # a score above what the question is worth now (edited since) is asked for again
            points = _fmt(given) if given is not None and given <= q.points else ""
            comment = entry.comment if current and entry is not None else ""
            writer.writerow(
                [csv_safe(r.student), q.id, _fmt(q.points), csv_safe(answer), points, csv_safe(comment), digest]
            )
    return buffer.getvalue()


def feedback_markdown(spec: AssignmentSpec, r: SubmissionResult) -> str:
    """Readable feedback. Student-controlled text is put in code spans with backticks removed."""

    def lit(text: str) -> str:  # inside a code span
        return terminal_safe(text).replace("`", "'").replace("\n", " ")

    def txt(text: str) -> str:  # running text: no markup, links or HTML of the student's
        return _MD_SPECIAL.sub(r"\\\g<0>", html.escape(lit(text), quote=False))

    lines = [
        f"# {spec.title}: feedback",
        "",
        f"- Student: `{lit(r.student)}`",
        f"- File: `{lit(r.file)}`",
        f"- Score: **{_fmt(r.total)} / {_fmt(spec_total(spec))}** ({score_text(r, spec)}; "
        f"status: {r.status})",
        "",
    ]
    if r.error:
        lines += [f"**Your submission could not be graded:** {txt(r.error)}", ""]
    if late_line(r):
        lines += [txt(late_line(r)), ""]
    if r.changed_cells:
        lines += ["## Locked cells you changed (the originals were graded)", ""]
        lines += [f"- {txt(c)}" for c in r.changed_cells] + [""]
    if r.warnings:
        lines += ["## Notes", ""] + [f"- {txt(w)}" for w in r.warnings] + [""]
    lines += ["## Questions", ""]
    titles = {q.id: q.title for q in spec.questions}
    for q in r.questions:
        lines.append(
            f"### {q.id}: {titles.get(q.id, '')} ({_fmt(q.points)} / {_fmt(q.max_points)}, {q.status})"
        )
        if q.message:
            lines.append(f"- {txt(q.message)}")
        for c in q.checks:
            mark = "pass" if c.passed else "fail"
            lines.append(f"- [{mark}] {txt(c.message)}" + (f" ({txt(c.note)})" if c.note else ""))
        lines.append("")
    return "\n".join(lines)


def feedback_html(spec: AssignmentSpec, r: SubmissionResult) -> str:
    e = html_safe
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(spec.title)}: feedback for {e(r.student)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        ".pass{color:#176b2c}.fail{color:#a4161a}td,th{padding:.2em .6em;text-align:left}"
        "</style></head><body>",
        f"<h1>{e(spec.title)}: feedback</h1>",
        f"<p>Student: <code>{e(r.student)}</code><br>File: <code>{e(r.file)}</code><br>"
        f"Score: <strong>{_fmt(r.total)} / {_fmt(spec_total(spec))}</strong> "
        f"({e(score_text(r, spec))}; {e(r.status)})</p>",
    ]
    if r.error:
        parts.append(f"<p class='fail'>Your submission could not be graded: {e(r.error)}</p>")
    if late_line(r):
        parts.append(f"<p>{e(late_line(r))}</p>")
    if r.changed_cells:
        parts.append("<h2>Locked cells you changed (the originals were graded)</h2><ul>")
        parts += [f"<li>{e(c)}</li>" for c in r.changed_cells]
        parts.append("</ul>")
    if r.warnings:
        parts.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li>{e(w)}</li>" for w in r.warnings) + "</ul>"
        )
    parts.append(
        "<h2>Questions</h2><table><tr><th>question</th><th>points</th><th>feedback</th></tr>"
    )
    for q in r.questions:
        items = [e(q.message)] if q.message else []
        for c in q.checks:
            cls = "pass" if c.passed else "fail"
            note = f" <em>({e(c.note)})</em>" if c.note else ""
            items.append(
                f"<span class='{cls}'>{'✔' if c.passed else '✘'} {e(c.message)}</span>{note}"
            )
        parts.append(
            f"<tr><td>{e(q.id)}</td><td>{_fmt(q.points)} / {_fmt(q.max_points)}</td>"
            f"<td>{'<br>'.join(items)}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def write_feedback(
    spec: AssignmentSpec,
    r: SubmissionResult,
    folder: Path,
    executed: NotebookNode | None = None,
    parts: dict[str, str] | None = None,
) -> dict[str, str]:
    """`<student>.json|.md|.html`, and `<student>.ipynb` when the executed notebook was kept;
    returns the page's drawn parts.

    The HTML page is the student's executed notebook with the results in it
    (grader/feedback.py); without one (an unreadable file), the results alone. `parts`: the
    costly parts already drawn for exactly these question results and notebook
    (grader/pages.py); the summary on top is always made from `r`.
    """
    import nbformat

    from .feedback import draw_parts, render_feedback

    name = safe_filename(r.student)
    atomic_write_text(
        folder / f"{name}.json", json.dumps(r.to_dict(), indent=2, sort_keys=True) + "\n"
    )
    atomic_write_text(folder / f"{name}.md", feedback_markdown(spec, r))
    if executed is not None:
        atomic_write_text(folder / f"{name}.ipynb", nbformat.writes(executed))
    if parts is None:
        parts = draw_parts(spec, r.questions, executed)
    atomic_write_text(folder / f"{name}.html", render_feedback(spec, r, executed, parts=parts))
    return parts


def write_outputs(
    spec: AssignmentSpec, results: list[SubmissionResult], out: Path, book: Gradebook | None = None
) -> list[str]:
    """Every output file of a batch, each written atomically: feedback, manual.csv,
    grades.csv and the class report `report.html`; returns the problems. One student's
    feedback that cannot be written never stops the others' or the tables."""
    from .batch import fingerprint
    from .classreport import class_report
    from .executed import feedback_extras, unpack
    from .pages import pack_parts, parts_key, unpack_parts

    out.mkdir(parents=True, exist_ok=True)
    problems = []
    answers: dict[str, dict[str, str]] = {}
    batch_fingerprint = fingerprint(spec) if book is not None else ""
    for r in results:
        blob = book.executed(r.student) if book is not None and r.status != MISSING else None
        try:
            executed = unpack(blob) if blob is not None else None
        except ValueError as exc:
            why = f"{exc}; grade it again with --force to keep it anew"
            problems.append(f"{r.student}: feedback shows no notebook: {why}")
            executed = blob = None
        key = parts_key(batch_fingerprint, r.questions, blob)
        kept = book.page(r.student, key) if book is not None else None
        parts = unpack_parts(kept) if kept is not None else None
        try:
            drawn = write_feedback(spec, r, out / "feedback", executed, parts)
            if book is not None and parts is None:
                book.set_page(r.student, key, pack_parts(drawn))
        except (OSError, ValueError) as exc:  # UnicodeError is a ValueError
            problems.append(f"{r.student}: feedback not written: {type(exc).__name__}: {exc}")
        shown = feedback_extras(executed).get("answers")
        if isinstance(shown, dict):
            answers[r.student] = {str(k): str(v) for k, v in shown.items()}
    atomic_write_text(out / "manual.csv", manual_csv(spec, results, book))
    atomic_write_text(out / "grades.csv", grades_csv(spec, results))
    atomic_write_text(out / REPORT_NAME, class_report(spec, results, answers))
    return problems


def score_text(r: SubmissionResult, spec: AssignmentSpec) -> str:
    """`15/15 auto, 10 pending` while free-response answers wait for a score."""
    auto_ids = {q.id for q in spec.questions if q.auto}
    auto = sum(q.points for q in r.questions if q.id in auto_ids)
    auto_max = sum(q.points for q in spec.questions if q.auto)
    text = f"{auto:g}/{auto_max:g} auto"
    pending = r.pending_points
    manual = r.total - auto
    if manual or (spec.manual_questions and not pending):
        text += f", {manual:g} manual"
    return text + (f", {pending:g} pending" if pending else "")


def grade_table(spec: AssignmentSpec, results: Iterable[SubmissionResult]) -> str:
    """The table printed at the end of a batch (terminal-safe)."""
    rows = sorted(results, key=lambda r: r.student)
    auto = [q for q in spec.questions if q.auto]
    header = ["student", *[q.id[:12] for q in auto], "score", "status"]
    table = [header]
    for r in rows:
        by_id = {q.id: q for q in r.questions}
        cells = [one_line(r.student)[:28]]
        cells += [_fmt(by_id[q.id].points) if q.id in by_id else "-" for q in auto]
        cells += [score_text(r, spec), r.status]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table
    )
