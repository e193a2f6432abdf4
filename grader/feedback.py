"""A student's feedback page: their own executed notebook, with the grader's results in it.

As nbgrader's generated feedback does, the page is the notebook rendered by nbconvert with a
result box after each answer cell; on top, a summary (score per question, total, warnings,
locked cells restored) and, where the assignment names a training curve, the student's
curve beside the reference's. One self-contained HTML file: no script at all, no remote
asset, a Content-Security-Policy that forbids both; every student output passed through
grader/sanitize.py and nbconvert's sanitizer first.
"""

from __future__ import annotations

import copy
from typing import Any

from jinja2 import DictLoader
from nbformat import NotebookNode

from .authoring import ANSWER, MANUAL, cell_role
from .executed import EXEC_KEY, feedback_extras
from .report import html_safe as e
from .report import late_line, score_text
from .results import Q_MANUAL, QuestionResult, SubmissionResult
from .spec import AssignmentSpec, CurveSpec

# No script, no frame, no remote anything: images only as data: URLs, our own inline styles.
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
    "script-src 'none'; frame-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"
)
REVIEW_AGAIN = "answer changed since it was scored: review again"
REVIEW_POINTS = "scored above what the question is worth now: review again"

TEMPLATE = """{%- extends 'classic/base.html.j2' -%}
{% block any_cell %}
{%- if cell.metadata.get('grader_kind') == 'inject' -%}
<div class="injected">The grader ran your notebook with these parameters:</div>
{%- endif -%}
{{ super() }}
{{ cell.metadata.get('grader_box', '') }}
{%- endblock any_cell %}
{% block input %}
{#- pygments escapes every token: nbconvert's extra bleach pass here cost most of the time -#}
<div class="inner_cell"><div class="input_area">
{{ cell.source | highlight_code(metadata=cell.metadata) }}
</div></div>
{%- endblock input %}
{% block markdowncell scoped %}
<div class="cell text_cell"><div class="rendered_html">{{ cell.metadata.get('grader_html', '') }}</div></div>
{%- endblock markdowncell %}
{% block rawcell scoped %}
<div class="cell text_cell"><div class="rendered_html">{{ cell.metadata.get('grader_html', '') }}</div></div>
{%- endblock rawcell %}
"""

STYLE = """
body{font-family:system-ui,sans-serif;max-width:62em;margin:1.5em auto;padding:0 1em;color:#1b1b1b}
.summary{border:2px solid #444;border-radius:6px;padding:.6em 1.2em;margin-bottom:1.5em}
.summary table{border-collapse:collapse}.summary td,.summary th{padding:.15em .7em;text-align:left}
.score{font-size:1.4em}.warn{color:#8a4b00}
.cell{margin:.5em 0}.input_area{background:#f6f6f6;border:1px solid #ddd;border-radius:3px}
.input_prompt,.output_prompt,.prompt{display:none}
pre{white-space:pre-wrap;word-break:break-word;margin:.3em;font-size:.9em}
.output_area{border-left:3px solid #ccc;padding-left:.5em;margin:.2em 0 .2em 1em}
.output_stderr,.output_error{background:#fff1f0}
.output_area img{max-width:100%;height:auto}
.box{border:2px solid;border-radius:6px;padding:.4em 1em;margin:.6em 0 1.4em}
.box h3{margin:.2em 0;font-size:1em}.box p{white-space:pre-wrap}
.box.passed{border-color:#176b2c;background:#eef8f0}.box.failed,.box.missing,.box.ungradable{border-color:#a4161a;background:#fdf0f0}
.box.partial{border-color:#b26b00;background:#fff7e8}.box.manual{border-color:#555;background:#f3f3f7}
.pass{color:#176b2c}.fail{color:#a4161a}.comment{white-space:pre-wrap;font-style:italic}
.injected{color:#555;font-size:.9em;margin-top:1em}
.ansi-red-fg{color:#b22}.ansi-green-fg{color:#282}.ansi-yellow-fg{color:#a60}.ansi-blue-fg{color:#22b}
.ansi-cyan-fg{color:#177}.ansi-magenta-fg{color:#a2a}.ansi-bold{font-weight:bold}
"""


def _fmt(points: float) -> str:
    return f"{points:g}"


def question_status(q: QuestionResult) -> str:
    """What a question's result says in words (manual ones: scored, pending, review again)."""
    if q.status == Q_MANUAL:
        if REVIEW_AGAIN in q.message:
            return "answer changed: review again"
        if REVIEW_POINTS in q.message:
            return "points changed: review again"
        return "waits for a manual score"
    return q.status


def result_box(spec: AssignmentSpec, q: QuestionResult) -> str:
    title = spec.question(q.id).title if q.id in {x.id for x in spec.questions} else q.id
    items = [f"<p>{e(q.message)}</p>"] if q.message else []
    for c in q.checks:
        cls, mark = ("pass", "✔") if c.passed else ("fail", "✘")
        note = f" <em>({e(c.note)})</em>" if c.note else ""
        items.append(f"<div class='{cls}'>{mark} {e(c.message)}{note}</div>")
    points = "—" if q.status == Q_MANUAL else f"{_fmt(q.points)} / {_fmt(q.max_points)}"
    return (
        f"<div class='box {e(q.status)}' id='result-{e(q.id)}'><h3>{e(q.id)}: {e(title)} · "
        f"{points} · {e(question_status(q))}</h3>{''.join(items)}</div>"
    )


def summary_html(spec: AssignmentSpec, r: SubmissionResult, extra: str = "") -> str:
    rows = "".join(
        f"<tr><td><a href='#result-{e(q.id)}'>{e(q.id)}</a></td>"
        f"<td>{'—' if q.status == Q_MANUAL else _fmt(q.points)} / {_fmt(q.max_points)}</td>"
        f"<td>{e(question_status(q))}</td></tr>"
        for q in r.questions
    )
    pending = sum(q.max_points for q in r.questions if q.status == Q_MANUAL)
    notes = (
        [f"<p class='warn'>Your submission could not be graded: {e(r.error)}</p>"]
        if r.error
        else []
    )
    if r.changed_cells:
        notes.append(
            "<p class='warn'>Locked cells you changed (the originals were graded):</p><ul>"
            + "".join(f"<li>{e(c)}</li>" for c in r.changed_cells)
            + "</ul>"
        )
    if r.warnings:
        notes.append(
            "<p class='warn'>Notes:</p><ul>"
            + "".join(f"<li>{e(w)}</li>" for w in r.warnings)
            + "</ul>"
        )
    later = f" ({_fmt(pending)} points wait for a manual score)" if pending else ""
    if late_line(r):
        notes.insert(0, f"<p class='warn'>{e(late_line(r))}</p>")
    return (
        f"<section class='summary'><h1>{e(spec.title)}: feedback</h1>"
        f"<p>Student: <code>{e(r.student)}</code> · file <code>{e(r.file)}</code></p>"
        f"<p class='score'>Score: <strong>{_fmt(r.total)} / {_fmt(r.max_total)}</strong>{later}"
        f" · {e(score_text(r, spec))} · {e(r.status)}</p>{''.join(notes)}{extra}"
        f"<table><tr><th>question</th><th>points</th><th>result</th></tr>{rows}</table></section>"
    )


def curve_html(spec: CurveSpec, curve: dict[str, Any]) -> str:
    from .plots import curve_plot

    params = curve.get("parameters") or {}
    said = (
        ", ".join(f"{e(k)} = {e(v)}" for k, v in params.items()) if isinstance(params, dict) else ""
    )
    note = "" if curve.get("reference") else " (no reference curve for these hyperparameters)"
    return (
        f"<figure>{curve_plot(curve['student'], curve.get('reference'), spec.title, spec.ylabel)}"
        f"<figcaption>As the grader ran your notebook: {said}{note}</figcaption></figure>"
    )


def _mark_cells(spec: AssignmentSpec, nb: NotebookNode, questions: list[QuestionResult]) -> set[str]:
    """Give each answer cell its result box; every other piece of cell metadata goes."""
    placed: set[str] = set()
    by_id = {q.id: q for q in questions}
    for cell in nb.cells:
        role = cell_role(cell)
        kind = cell.get("metadata", {}).get(EXEC_KEY, {}).get("kind")
        cell.metadata = NotebookNode()
        if kind == "inject":
            cell.metadata["grader_kind"] = "inject"
        question = by_id.get(role.question or "")
        if role.role in (ANSWER, MANUAL) and question is not None and question.id not in placed:
            cell.metadata["grader_box"] = result_box(spec, question)
            placed.add(question.id)
    return placed


def _exporter() -> Any:
    from nbconvert import HTMLExporter

    from .sanitize import SafeOutputs, sanitizer

    exporter = HTMLExporter(
        template_file="grader_feedback.j2",
        extra_loaders=[DictLoader({"grader_feedback.j2": TEMPLATE})],
        sanitize_html=False,  # done by the preprocessors below, with our allowlist
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exporter.register_preprocessor(SafeOutputs(), enabled=True)
    exporter.register_preprocessor(sanitizer(), enabled=True)
    return exporter


_EXPORTER: Any = None


def draw_parts(
    spec: AssignmentSpec, questions: list[QuestionResult], executed: NotebookNode | None
) -> dict[str, str]:
    """The costly parts of a page, which depend only on the question results and the
    executed notebook: the cost curve ("curve") and the notebook with a result box after each
    answer ("body"). Without an executed notebook (unreadable file), the results alone."""
    global _EXPORTER
    body, figure = "", ""
    curve = feedback_extras(executed).get("curve")
    if spec.curve is not None and isinstance(curve, dict) and curve.get("student"):
        figure = curve_html(spec.curve, curve)
    rest: list[QuestionResult] = list(questions)
    if executed is not None:
        nb = copy.deepcopy(executed)
        placed = _mark_cells(spec, nb, questions)
        rest = [q for q in questions if q.id not in placed]
        if _EXPORTER is None:
            _EXPORTER = _exporter()
        body, _ = _EXPORTER.from_notebook_node(nb)
        body = f"<h2>Your notebook, as the grader ran it</h2>{body}"
    if rest:
        body += "<h2>Other results</h2>" + "".join(result_box(spec, q) for q in rest)
    return {"curve": figure, "body": body}


def render_feedback(
    spec: AssignmentSpec,
    r: SubmissionResult,
    executed: NotebookNode | None,
    extra_summary: str = "",
    parts: dict[str, str] | None = None,
) -> str:
    """The whole page: the summary (score, notes, lateness), then the drawn parts (`parts`
    when they were drawn already for these question results and this notebook)."""
    if parts is None:
        parts = draw_parts(spec, r.questions, executed)
    summary = summary_html(spec, r, extra_summary + parts["curve"])
    return page(f"{spec.title}: feedback for {r.student}", summary + parts["body"])


def page(title: str, body: str, style: str = STYLE) -> str:
    """A self-contained page with no script and the CSP above (also used by the class report)."""
    from pygments.formatters import HtmlFormatter

    code_style = HtmlFormatter().get_style_defs(".highlight")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='referrer' content='no-referrer'>"
        f"<title>{e(title)}</title><style>{style}{code_style}</style></head>"
        f"<body>{body}</body></html>\n"
    )
