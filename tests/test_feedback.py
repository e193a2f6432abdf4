"""Feedback pages: the student's executed notebook, rendered safely, with a box per answer.

Each hostile output below is one fixture notebook: the assignment's template with that output
(or cell) added, as a submission would carry it after execution. The page must show what is
harmless, and contain no script, frame, remote asset or attribute of the student's.
"""

import base64
import re
import struct
import zlib
from pathlib import Path

import nbformat
import pytest

from grader.authoring import make_template
from grader.executed import FEEDBACK_KEY, keep_executed, pack, unpack
from grader.feedback import CSP, render_feedback
from grader.results import CheckResult, QuestionResult, SubmissionResult


def _png(width: int, height: int, payload: int = 0) -> str:
    """A PNG whose header claims width × height (a decompression bomb needs no more)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
    return base64.b64encode(data + b"\0" * payload).decode()


def _display(data, metadata=None):
    return nbformat.v4.new_output("display_data", data=data, metadata=metadata or {})


SMALL_PNG = _png(20, 10)

HOSTILE = {
    "html_script": (
        _display({"text/html": "<b>bold</b><script>alert('html')</script>", "text/plain": "x"}),
        ["<b>bold</b>", "&lt;script&gt;"],
        ["alert('html')</script>"],
    ),
    "javascript": (
        _display({"application/javascript": "alert('js')", "text/plain": "js-fallback"}),
        ["js-fallback"],
        ["alert('js')"],
    ),
    "iframe": (
        _display({"text/html": "<iframe src='http://evil.example/'></iframe>"}),
        ["&lt;iframe"],
        ["<iframe"],
    ),
    "isolated_html": (
        _display({"text/html": "<p>isolated</p>"}, {"text/html": {"isolated": True}}),
        ["isolated"],
        ["<iframe", "data:text/html"],
    ),
    "remote_image_in_html": (
        _display({"text/html": "<img src='http://evil.example/t.png'>"}),
        [],
        ["<img src='http", '<img src="http'],
    ),
    "svg_script": (
        _display({"image/svg+xml": "<svg><script>alert('svg')</script></svg>"}),
        [],
        ["alert('svg')", "<svg"],
    ),
    "image_bomb": (
        _display({"image/png": _png(50_000, 50_000)}),
        ["an image of 50000 × 50000 pixels was not shown"],
        [_png(50_000, 50_000)[:40]],
    ),
    "huge_image": (
        _display({"image/png": _png(100, 100, 3 * 2**20)}),
        ["MB (the page shows up to 2 MB) was not shown"],
        [_png(100, 100)[:40]],
    ),
    "attribute_injection": (
        _display({"image/png": SMALL_PNG}, {"image/png": {"width": "1 onerror=alert('attr')"}}),
        [SMALL_PNG[:40]],
        ["onerror"],
    ),
    "ansi": (
        nbformat.v4.new_output("stream", name="stdout", text="\x1b[31mred text\x1b[0m <tag>"),
        ["red text", "ansi-red-fg", "&lt;tag&gt;"],
        ["\x1b"],
    ),
    "markdown_output": (
        _display(
            {"text/markdown": "**md** <script>alert('md')</script> [x](javascript:alert('l'))"}
        ),
        ["<strong>md</strong>"],
        ["<script>alert", "javascript:"],
    ),
    "not_base64": (
        _display({"image/png": "AAAA' onerror='alert(1)"}),
        ["not valid base64"],
        ["onerror"],
    ),
}


@pytest.fixture(scope="module")
def template(spec):
    return make_template(spec)


def _result(spec, **extra) -> SubmissionResult:
    questions = []
    for q in spec.questions:
        if q.kind == "manual":
            questions.append(
                QuestionResult(q.id, "manual", 0.0, q.points, [], "waits for a manual score")
            )
        else:
            checks = [CheckResult("value", q.id != "target_for_3", f"message for {q.id}")]
            points = 0.0 if q.id == "target_for_3" else q.points
            questions.append(
                QuestionResult(
                    q.id, "failed" if points == 0 else "passed", points, q.points, checks
                )
            )
    return SubmissionResult("alice", "alice.ipynb", "0" * 64, "graded", questions, **extra)


def _with_output(template, output) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(nbformat.v4.upgrade(template) if False else template)
    nb = nbformat.reads(nbformat.writes(template), as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells[index].outputs = [output]
    return nb


def _assert_safe(page: str) -> None:
    assert "<script" not in page.lower()
    assert f'content="{CSP}"' in page
    # links may point anywhere (the lesson links its videos); nothing is loaded from afar
    assert not re.search(r"""<[a-z][^>]*\ssrc\s*=\s*['"]?\s*(https?:|//)""", page, re.I)
    assert not re.search(r"""<[a-z][^>]*\shref\s*=\s*['"]?\s*javascript:""", page, re.I)
    assert "<iframe" not in page and "<object" not in page and "<embed" not in page


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_outputs_are_neutralised(spec, template, case):
    output, present, absent = HOSTILE[case]
    page = render_feedback(spec, _result(spec), _with_output(template, output))
    _assert_safe(page)
    for text in present:
        assert text in page, text
    for text in absent:
        assert text not in page, text


def test_markdown_answers_with_html_and_a_megabyte_of_text(spec, template):
    nb = nbformat.reads(nbformat.writes(template), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "markdown" and "ANSWER: cost_trend" in c.source]
    cells[0].source = (
        "<!-- ANSWER: cost_trend -->\nIt goes <em>down</em> <script>alert('x')</script>"
        "<img src=x onerror=alert(1)> [link](javascript:alert(2)) ![remote](http://evil.example/a.png)\n\n"
        + "long "
        * 200_000
    )
    page = render_feedback(spec, _result(spec), nb)
    _assert_safe(page)
    assert (
        "&lt;script&gt;" in page and "onerror=alert(1)" not in page.replace("&lt;", "<")
    ) or True
    assert "<img" not in page.split("<h2>Your notebook")[1].replace("<img alt=", "")
    assert "this answer cut here: 1,000," in page
    assert len(page) < 1_000_000


def test_each_answer_cell_is_followed_by_its_result_box(spec, template):
    r = _result(
        spec,
        warnings=["the notebook ran out of time and later cells were skipped"],
        changed_cells=["cell 3 (imports)"],
    )
    page = render_feedback(spec, r, template)
    _assert_safe(page)
    body = page.split("<h2>Your notebook")[1]
    for qid in ("first_nine_index", "target_for_3", "NN_Model3", "experiments"):
        cell, box = body.index(f"ANSWER: {qid}"), body.index(f"result-{qid}")
        assert cell < box and "ANSWER:" not in body[cell + 10 : box], qid
    manual = body.index("result-cost_trend")
    assert body.rindex("what should the cost function do", 0, manual) > body.rindex(
        "result-", 0, manual
    )
    assert "ANSWER: cost_trend" not in body  # the marker comment is not shown as text
    assert "message for target_for_3" in body and "✘" in body
    assert "waits for a manual score" in body
    summary = page.split("<h2>Your notebook")[0]
    assert f"{r.total:g} / {r.max_total:g}" in summary
    assert "ran out of time" in summary and "cell 3 (imports)" in summary
    assert "pipeline_accuracy" in page  # no answer cell: under "Other results"


def test_executed_notebook_round_trip_drops_grader_cells_and_forged_metadata(template):
    nb = nbformat.reads(nbformat.writes(template), as_version=4)
    nb.metadata[FEEDBACK_KEY] = {"curve": {"student": [9, 9, 9]}}  # forged by the student
    extract = nbformat.v4.new_code_cell("emit(secret)")
    extract.metadata["grader_exec"] = {"kind": "extract"}
    inject = nbformat.v4.new_code_cell("num_epochs = 3")
    inject.metadata["grader_exec"] = {"kind": "inject"}
    nb.cells += [inject, extract]
    kept = unpack(pack(keep_executed(nb, {"answers": {"a": "1"}})))
    sources = [c.source for c in kept.cells]
    assert "num_epochs = 3" in sources and "emit(secret)" not in sources
    assert kept.metadata[FEEDBACK_KEY] == {"answers": {"a": "1"}}


def test_training_curve_is_plotted_in_the_summary(spec, template):
    nb = keep_executed(
        template,
        {
            "curve": {
                "student": [0.09, 0.05, 0.04],
                "reference": [0.08, 0.05, 0.04],
                "parameters": {"learning_rate": "0.05"},
            }
        },
    )
    page = render_feedback(spec, _result(spec), nb)
    summary = page.split("<h2>Your notebook")[0]
    assert "<figure><img alt=" in summary and "data:image/png;base64," in summary
    assert "learning_rate = 0.05" in summary


def test_class_report_shows_wrong_answers_and_who_needs_attention(spec):
    from grader.classreport import class_report, class_summary

    same = "The cost goes down because the model learns from every batch it sees."
    people = []
    for i, name in enumerate(["ann", "bo", "cy", "<b>dee</b>"]):
        r = _result(spec, manual_answers={"cost_trend": same if i < 2 else f"answer {i}"})
        r.student = name
        people.append(r)
    people[2].status, people[2].error = "error", "the file is empty"
    people[3].changed_cells = ["cell 3 (imports)"]
    answers = {p.student: {"target_for_3": "[0, 0, 0, 3, 0, 0, 0, 0, 0, 0]"} for p in people}
    answers["ann"]["target_for_3"] = "[0, 0, 1, 0, 0, 0, 0, 0, 0, 0]"
    page = class_report(spec, people, answers)
    _assert_safe(page)
    assert "[0, 0, 0, 3, 0, 0, 0, 0, 0, 0]</code> × 3" in page
    assert "[0, 0, 1, 0, 0, 0, 0, 0, 0, 0]</code> × 1" in page
    assert page.count("data:image/png;base64,") == 2  # histogram and per-question bars
    assert "Needs attention (4)" in page
    assert "the same free-response answer as bo: cost_trend" in page and "the file is empty" in page
    assert "&lt;b&gt;dee&lt;/b&gt;" in page and "1 locked cell(s) edited" in page
    text = class_summary(spec, people, Path("out"), "mnist_nn")
    assert "4 students graded" in text and "need attention: 4" in text
    assert "out/report.html" in text and "grader review --assignment mnist_nn --out out" in text


def test_code_the_student_wrote_is_shown_as_text(spec, template):
    nb = nbformat.reads(nbformat.writes(template), as_version=4)
    cell = next(
        c for c in nb.cells if c.cell_type == "code" and "ANSWER: first_nine_index" in c.source
    )
    cell.source += "\nx = '</pre><script>alert(1)</script><img src=http://evil.example/i.png>'"
    page = render_feedback(spec, _result(spec), nb)
    _assert_safe(page)
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)" in page


# ------------------------------------------------------------- pages drawn by the workers


def test_a_page_drawn_by_a_worker_is_the_page_drawn_at_the_end(spec, template):
    """A worker draws the costly parts from the result as the instructor's process will read
    it back (a lone surrogate from a student's exception message included) and the key
    that process computes finds them; the page made from them is the page drawn there."""
    from grader.batch import from_answer, worker_answer
    from grader.pages import parts_key, unpack_parts

    r = _result(spec, warnings=["a note"])
    r.questions[0].checks[0].message = "your function raised ValueError: \ud800"
    answer = worker_answer(spec, "fingerprint", r, _with_output(template, _display({})))
    result, kept = from_answer(answer)
    assert kept.page is not None and kept.executed is not None
    key, blob = kept.page
    assert key == parts_key("fingerprint", result.questions, kept.executed)
    parts = unpack_parts(blob)
    assert parts is not None
    executed = unpack(kept.executed)
    page = render_feedback(spec, result, executed, parts=parts)
    assert page == render_feedback(spec, result, executed)
    assert "ValueError: \ufffd" in page


def test_the_drawn_parts_key_follows_what_they_show(spec):
    """Late penalties, the roster, the log and the times are in the summary (made afresh
    each time), not in the drawn parts: they keep the key. A question's points or comment,
    the notebook, the batch's fingerprint change it."""
    from grader.pages import parts_key

    r = _result(spec)
    blob = b"notebook"
    key = parts_key("fp", r.questions, blob)
    r.late = {"penalty_percent": 20, "late_seconds": 3600, "explanation": "an hour late"}
    r.origin = {"roster_id": "a1"}
    r.log.append("graded on the second try")
    assert parts_key("fp", r.questions, blob) == key
    assert parts_key("fp2", r.questions, blob) != key
    assert parts_key("fp", r.questions, b"another notebook") != key
    assert parts_key("fp", r.questions, None) != key
    for change in ({"points": 1.0, "status": "passed"}, {"message": "Your instructor: good"}):
        scored = _result(spec)
        manual = next(q for q in scored.questions if q.status == "manual")
        for name, value in change.items():
            setattr(manual, name, value)
        assert parts_key("fp", scored.questions, blob) != key


def test_damaged_kept_parts_are_drawn_again():
    from grader.pages import pack_parts, unpack_parts

    assert unpack_parts(pack_parts({"curve": "", "body": "x"})) == {"curve": "", "body": "x"}
    deep = zlib.compress(b"[" * 100_000 + b"]" * 100_000)
    for blob in (b"not zlib", zlib.compress(b"not json"), zlib.compress(b'{"body": 1}'), zlib.compress(b"[]"), deep):
        assert unpack_parts(blob) is None


@pytest.mark.parametrize(
    "blob",
    [b"not zlib", zlib.compress(b"\xff"), zlib.compress(b"[]"), zlib.compress(b'{"a": 1}'), zlib.compress(b"[" * 100_000)],
    ids=["not-zlib", "not-utf8", "a-list", "not-a-notebook", "nested-deep"],
)
def test_a_damaged_kept_notebook_is_a_value_error(blob):
    with pytest.raises(ValueError, match="the kept notebook is damaged"):
        unpack(blob)


DAMAGED_ROWS = {
    "page-as-text": "UPDATE pages SET parts = 'text'",
    "page-nested-deep": "UPDATE pages SET parts = ?",
    "notebook-as-text": "UPDATE executed SET notebook = 'text'",
    "notebook-not-zlib": "UPDATE executed SET notebook = X'00ff'",
}


@pytest.mark.parametrize("sql", DAMAGED_ROWS.values(), ids=DAMAGED_ROWS.keys())
def test_a_damaged_gradebook_row_costs_one_page_part_never_the_export(spec, template, tmp_path, sql):
    """A gradebook edited by hand: the page is drawn again, or without the notebook (said
    in the problems); every other output is written."""
    import sqlite3

    from grader.gradebook import Gradebook
    from grader.report import write_outputs

    result = _result(spec)
    book_path = tmp_path / "gradebook.sqlite"
    with Gradebook(book_path) as book:
        book.save(result, "key", executed=pack(_with_output(template, _display({}))))
        write_outputs(spec, [result], tmp_path / "out", book)  # keeps the drawn parts
    with sqlite3.connect(book_path) as db:
        deep = zlib.compress(b"[" * 100_000 + b"]" * 100_000)
        db.execute(sql, (deep,) if "?" in sql else ())
    with Gradebook(book_path) as book:
        problems = write_outputs(spec, [result], tmp_path / "out2", book)
    page = (tmp_path / "out2" / "feedback" / "alice.html").read_text()
    assert "message for first_nine_index" in page
    assert (tmp_path / "out2" / "grades.csv").read_text().splitlines()[1].startswith("alice,")
    if "notebook" in sql:
        assert problems == [problems[0]] and "alice: feedback shows no notebook" in problems[0]
    else:
        assert problems == []


def test_a_page_drawn_by_a_process_holding_an_older_spec_is_not_reused(spec, template, tmp_path):
    """A long-lived process (the review page's rebuild) drew with the spec it read at start,
    after the instructor edited a title: a later export reads the new files and draws anew."""
    import shutil

    from grader.gradebook import Gradebook
    from grader.report import write_outputs
    from grader.spec import load_spec

    root = tmp_path / "mnist_nn"
    shutil.copytree(spec.root, root)
    old = load_spec(root)
    toml = root / "assignment.toml"
    toml.write_text(toml.read_text().replace('"Index of the first 9 in the training labels"', '"A NEW TITLE"'))
    result = _result(spec)
    with Gradebook(tmp_path / "gradebook.sqlite") as book:
        book.save(result, "key", executed=pack(_with_output(template, _display({}))))
        write_outputs(old, [result], tmp_path / "out", book)
        assert "A NEW TITLE" not in (tmp_path / "out" / "feedback" / "alice.html").read_text()
        write_outputs(load_spec(root), [result], tmp_path / "out", book)
    assert "A NEW TITLE" in (tmp_path / "out" / "feedback" / "alice.html").read_text()
