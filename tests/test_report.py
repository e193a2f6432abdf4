"""Everything a student controls is escaped in HTML, Markdown, CSV and terminal output."""

import csv
import io

import pytest

from grader.report import (
    csv_safe,
    feedback_html,
    feedback_markdown,
    grades_csv,
    manual_csv,
    safe_filename,
    terminal_safe,
)
from grader.results import CheckResult, QuestionResult, SubmissionResult
from grader.spec import load_spec

EVIL = "<script>alert(1)</script>\x1b[31m`=cmd|'/c calc'!A0"


@pytest.fixture(scope="module")
def spec(repo_root):
    return load_spec(repo_root / "solutions" / "mnist_nn")


def _result() -> SubmissionResult:
    return SubmissionResult(
        student=EVIL,
        file="../../etc/passwd.ipynb",
        content_hash="0" * 64,
        status="graded",
        questions=[
            QuestionResult("first_nine_index", "failed", 0.0, 1.0, [CheckResult("value", False, EVIL)]),
            QuestionResult("cost_trend", "manual", 0.0, 1.0, [], "waits"),
        ],
        manual_answers={"cost_trend": "=HYPERLINK(\"http://x\")"},
        changed_cells=[EVIL],
    )


def test_html_escapes(spec):
    page = feedback_html(spec, _result())
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "\x1b" not in page or "&#x1b;" in page


def test_markdown_and_terminal_escape(spec):
    text = feedback_markdown(spec, _result())
    assert "\x1b" not in text
    assert "- &lt;script&gt;" in text  # changed cells are running text, escaped (names: code spans)
    link = _result()
    link.questions[0].checks[0].message = "see [here](javascript:alert(1)) <img src=x>"
    page = feedback_markdown(spec, link)
    assert "[here](" not in page and "<img" not in page
    assert terminal_safe("a\x1b[31mb\x07") == "a\\x1b[31mb\\x07"


def test_csv_has_no_formulas(spec):
    for text in (grades_csv(spec, [_result()]), manual_csv(spec, [_result()])):
        for row in csv.reader(io.StringIO(text)):
            for cell in row:
                assert not cell.startswith(("=", "@")) or cell == "", cell
    assert csv_safe("-1.5") == "-1.5"
    assert csv_safe("-cmd") == "'-cmd"


@pytest.mark.parametrize(
    ("name", "prefix"),
    [("alice", "alice"), ("../../etc/passwd", "etc_passwd-"), ("Zoë Smith", "Zo_Smith-"), ("", "student-"), ("a/b\\c", "a_b_c-")],
)
def test_safe_filename(name, prefix):
    got = safe_filename(name)
    assert got.startswith(prefix) and (got == name or len(got) == len(prefix) + 8)
    assert "/" not in got and "\\" not in got and not got.startswith(".")


def test_safe_filenames_of_different_students_differ():
    names = ["Zoë Smith", "Zoé Smith", "Zo_ Smith", "Zo_Smith", "a/b", "a_b"]
    assert len({safe_filename(n) for n in names}) == len(names)
