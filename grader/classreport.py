"""`report.html`: the class at a glance, beside grades.csv.

Score distribution, per question the mean, the share with full points and the most common
wrong answers (so a misconception shows at once), and the submissions that need a look:
errors, partial runs, timeouts, locked cells edited, free-response answers identical across
students. Self-contained: plots are embedded PNGs, nothing is fetched, no script runs.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .feedback import page
from .report import html_safe as e
from .report import safe_filename
from .results import ERROR, PARTIAL, Q_MANUAL, Q_PASSED, SubmissionResult
from .spec import AssignmentSpec

TOP_WRONG = 5
MIN_IDENTICAL_CHARS = 40  # shorter answers ("yes", "It goes down.") are alike by nature

STYLE = """
body{font-family:system-ui,sans-serif;max-width:64em;margin:1.5em auto;padding:0 1em;color:#1b1b1b}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .7em;text-align:left;border-bottom:1px solid #ddd;vertical-align:top}
.num{text-align:right}code{background:#f3f3f3;padding:0 .2em}.warn{color:#8a4b00}
img{max-width:100%}
"""


@dataclass
class Attention:
    student: str
    reasons: list[str] = field(default_factory=list)


def _fmt(x: float) -> str:
    return f"{x:g}"


def needs_attention(
    results: list[SubmissionResult], answers: dict[str, dict[str, str]] | None = None
) -> list[Attention]:
    """Who to look at, and why (the same rule for the report and `grader grade`'s summary)."""
    flagged: dict[str, Attention] = {}

    def flag(student: str, reason: str) -> None:
        flagged.setdefault(student, Attention(student)).reasons.append(reason)

    for r in results:
        if r.status == ERROR:
            flag(r.student, f"could not be graded: {r.error or 'error'}")
        elif r.status == PARTIAL:
            flag(r.student, "partial run: some questions could not be graded")
        for w in r.warnings:
            if "time" in w or "killed" in w or "died" in w or "restarted" in w:
                flag(r.student, w)
        if r.changed_cells:
            flag(r.student, f"{len(r.changed_cells)} locked cell(s) edited")
        if any(q.status == Q_MANUAL and "review again" in q.message for q in r.questions):
            flag(r.student, "a free-response answer changed since it was scored")
    by_text: dict[tuple[str, str], list[str]] = {}
    for r in results:
        for qid, text in r.manual_answers.items():
            norm = " ".join(text.split()).lower()
            if len(norm) >= MIN_IDENTICAL_CHARS and "type your answer here" not in norm:
                by_text.setdefault((qid, norm), []).append(r.student)
    same: dict[tuple[str, str], list[str]] = {}  # (student, the others) -> questions
    for (qid, _), students in sorted(by_text.items()):
        for s in students if len(students) > 1 else []:
            others = ", ".join(x for x in students if x != s)
            same.setdefault((s, others), []).append(qid)
    for (s, others), qids in sorted(same.items()):
        listed = ", ".join(qids[:4]) + (f" and {len(qids) - 4} more" if len(qids) > 4 else "")
        flag(s, f"the same free-response answer as {others}: {listed}")
    return [flagged[s] for s in sorted(flagged)]


def _question_rows(
    spec: AssignmentSpec, results: list[SubmissionResult], answers: dict[str, dict[str, str]]
) -> str:
    rows = []
    for q in spec.questions:
        got = [x for r in results if (x := r.question(q.id)) is not None]
        scored = [x for x in got if x.status != Q_MANUAL]
        mean = statistics.fmean(x.points for x in scored) if scored else None
        passed = sum(x.status == Q_PASSED for x in scored)
        wrong: Counter[str] = Counter()
        for r in results:
            x = r.question(q.id)
            value = answers.get(r.student, {}).get(q.id)
            if x is not None and x.status != Q_PASSED and value is not None:
                wrong[value] += 1
        common = "<br>".join(f"<code>{e(v)}</code> × {n}" for v, n in wrong.most_common(TOP_WRONG))
        pending = len(got) - len(scored)
        rows.append(
            f"<tr><td>{e(q.id)}<br><small>{e(q.title)}</small></td><td class='num'>{_fmt(q.points)}</td>"
            f"<td class='num'>{'—' if mean is None else f'{mean:.2f}'}</td>"
            f"<td class='num'>{f'{100 * passed / len(scored):.0f}%' if scored else '—'}</td>"
            f"<td class='num'>{pending or ''}</td><td>{common}</td></tr>"
        )
    return (
        "<table><tr><th>question</th><th>points</th><th>mean</th><th>full points</th>"
        "<th>waiting for a manual score</th><th>most common wrong answers</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def class_report(
    spec: AssignmentSpec, results: list[SubmissionResult], answers: dict[str, dict[str, str]]
) -> str:
    from .plots import histogram, question_bars

    max_total = sum(q.points for q in spec.questions)
    totals = [r.total for r in results]
    parts = [f"<h1>{e(spec.title)}: class report</h1>"]
    if not results:
        return page(f"{spec.title}: class report", parts[0] + "<p>No submissions yet.</p>", STYLE)
    pending = sum(any(q.status == Q_MANUAL for q in r.questions) for r in results)
    parts.append(
        f"<p>{len(results)} students · mean {statistics.fmean(totals):.2f} · median "
        f"{statistics.median(totals):g} of {_fmt(max_total)} points"
        + (f" · {pending} with free-response answers still to score" if pending else "")
        + "</p>"
    )
    parts.append(histogram(totals, max_total, "Total score (points so far)"))
    auto = [q for q in spec.questions if q.auto]
    if auto:
        shares = []
        for q in auto:
            got = [x for r in results if (x := r.question(q.id)) is not None]
            shares.append(sum(x.status == Q_PASSED for x in got) / max(len(got), 1))
        parts.append(question_bars([q.id for q in auto], shares, "Auto-graded questions"))
    parts.append("<h2>Questions</h2>" + _question_rows(spec, results, answers))
    attention = needs_attention(results, answers)
    parts.append(f"<h2>Needs attention ({len(attention)})</h2>")
    if attention:
        parts.append(
            "<table><tr><th>student</th><th>why</th></tr>"
            + "".join(
                f"<tr><td><a href='feedback/{e(safe_filename(a.student))}.html'>{e(a.student)}</a></td>"
                f"<td>{'<br>'.join(e(x) for x in a.reasons)}</td></tr>"
                for a in attention
            )
            + "</table>"
        )
    else:
        parts.append("<p>Nothing: every submission ran whole.</p>")
    parts.append(
        "<h2>Students</h2><table><tr><th>student</th><th>total</th><th>status</th></tr>"
        + "".join(
            f"<tr><td><a href='feedback/{e(safe_filename(r.student))}.html'>{e(r.student)}</a></td>"
            f"<td class='num'>{_fmt(r.total)}</td><td>{e(r.status)}</td></tr>"
            for r in sorted(results, key=lambda r: r.student)
        )
        + "</table>"
    )
    return page(f"{spec.title}: class report", "".join(parts), STYLE)


def class_summary(
    spec: AssignmentSpec, results: list[SubmissionResult], out: Path, assignment: str
) -> str:
    """The few lines `grader grade` ends with (terminal-safe)."""
    from .report import REPORT_NAME, one_line

    if not results:
        return "no students graded"
    totals = [r.total for r in results]
    max_total = sum(q.points for q in spec.questions)
    attention = needs_attention(results)
    pending = sum(any(q.status == Q_MANUAL for q in r.questions) for r in results)
    lines = [
        f"{len(results)} students graded: mean {statistics.fmean(totals):.2f}, median "
        f"{statistics.median(totals):g} of {max_total:g} points",
        f"need attention: {len(attention)}"
        + (
            f" ({', '.join(one_line(a.student) for a in attention[:5])}{', ...' if len(attention) > 5 else ''})"
            if attention
            else ""
        ),
        f"class report: {out / REPORT_NAME}",
    ]
    if spec.manual_questions:
        lines.append(
            f"free-response answers to score: {pending} students; "
            f"grader review --assignment {one_line(assignment)} --out {one_line(str(out))}"
        )
    return "\n".join(lines)
