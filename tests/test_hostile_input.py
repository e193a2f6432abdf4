"""Hostile input that broke the batch, a grade or the instructor's terminal (issue #12, 3-4).

Each test fails on the main branch before the fix: a file name that is not UTF-8, links in
the submission tree, escape sequences in zip member names, lone surrogates in stored text,
student names that differ only by a leading quote, oversized kernel messages.
"""

import csv
import io
import json
import os
import stat
import zipfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client.session import Session

from grader import payload
from grader.batch import BatchOptions, apply_manual, grade_batch, import_manual, rebuild_outputs
from grader.gradebook import Gradebook
from grader.report import csv_safe, csv_unescape, grade_table, grades_csv
from grader.results import GRADED, NEEDS_MANUAL, QuestionResult, SubmissionResult
from grader.scoring import manual_pending
from grader.selfcheck import UNSUPPORTED_KEY

ROOT = Path(__file__).resolve().parents[1]
ESC = "\x1b[31m"


def _link_member(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


@pytest.fixture(scope="module")
def hostile_batch(spec, grading_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "downloads"
    folder.mkdir()
    (Path(os.fsdecode(bytes(folder) + b"/jos\xe9.ipynb"))).write_bytes(b"")
    (folder / "linked.ipynb").symlink_to(ROOT / "solutions" / "mnist_nn" / "reference.py")
    (folder / "carla").mkdir()
    (folder / "carla" / "nb.ipynb").symlink_to(ROOT / "tests" / "corpus" / "notebooks" / "solution.ipynb")
    (folder / "dave").symlink_to(ROOT / "tests" / "corpus" / "notebooks", target_is_directory=True)
    with zipfile.ZipFile(folder / "class.zip", "w") as zf:
        zf.writestr(f"{ESC}red/a.ipynb", "")
        zf.writestr(f"{ESC}red/b.ipynb", "")
        _link_member(zf, "mallory/nb.ipynb", "../../solutions/mnist_nn/checks.py")
    out = tmp_path_factory.mktemp("hostile-out")
    batch = grade_batch(spec, [folder], out, BatchOptions(jobs=1, cache_dir=grading_cache, progress=False))
    return batch, out, folder


def test_every_hostile_submission_is_one_error_row(hostile_batch):
    batch, out, _ = hostile_batch
    by_student = {r.student: r for r in batch.results}
    assert set(by_student) == {"josé", "linked", "carla", "dave", f"{ESC}red", "mallory"}
    assert "empty" in by_student["josé"].error
    for student in ("linked", "carla", "dave", "mallory"):
        result = by_student[student]
        assert result.status == "error" and "symbolic link" in result.error, student
        assert not any(q.points for q in result.questions)
    with open(out / "grades.csv", newline="", encoding="utf-8") as fh:
        rows = {row["student"]: row for row in csv.DictReader(fh)}
    assert set(rows) == set(by_student)
    assert "symbolic link" in rows["mallory"]["notes"]


def test_student_text_never_reaches_the_terminal_raw(hostile_batch, spec):
    batch, out, _ = hostile_batch
    assert any("red" in w for w in batch.warnings)  # two submissions of one student
    assert "\x1b" not in (out / "run.log").read_text(encoding="utf-8")
    assert "\x1b" not in grade_table(spec, batch.results)


def test_cli_warnings_are_escaped(hostile_batch, grading_cache, capsys, tmp_path):
    from grader.cli import main

    _, _, folder = hostile_batch
    argv = ["grade", str(folder / "class.zip"), "--assignment", "mnist_nn", "--out", str(tmp_path)]
    assert main([*argv, "--cache-dir", str(grading_cache), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "\x1b" not in printed.out + printed.err
    assert "\\x1b[31mred" in printed.err


def _result(student: str, **extra) -> SubmissionResult:
    return SubmissionResult(
        student=student,
        file=f"{student}.ipynb",
        content_hash="0" * 64,
        status=GRADED,
        questions=[
            QuestionResult("first_nine_index", "passed", 1.0, 1.0),
            manual_pending("cost_trend", 1.0),
        ],
        **extra,
    )


def test_a_gradebook_holding_lone_surrogates_still_exports(spec, tmp_path):
    book_path = tmp_path / "gradebook.sqlite"
    with Gradebook(book_path) as book:
        bad = _result("bad", manual_answers={"cost_trend": "sad \udce9 face"}, warnings=["\ud800"])
        book.save(bad, "k1")  # stored as JSON escapes, as main stored a student's answer
        book.save(_result("good"), "k2")
    results = rebuild_outputs(spec, book_path, tmp_path)
    assert {r.student for r in results} == {"bad", "good"}
    assert "\ufffd" in (tmp_path / "feedback" / "bad.md").read_text(encoding="utf-8")
    text = (tmp_path / "manual.csv").read_text(encoding="utf-8")
    assert "sad \ufffd face" in text
    assert (tmp_path / "feedback" / "good.html").is_file()


def test_manual_import_keeps_names_that_differ_by_a_leading_quote(spec, tmp_path):
    book_path = tmp_path / "gradebook.sqlite"
    with Gradebook(book_path) as book:
        book.save(_result("'=x"), "k1")
        book.save(_result("=x"), "k2")
    rebuild_outputs(spec, book_path, tmp_path)
    with open(tmp_path / "manual.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({r["student"] for r in rows}) == ["''=x", "'=x"]
    for row in rows:
        if row["student"] == "''=x" and row["question"] == "cost_trend":
            row["points"] = "1"
    sheet = tmp_path / "filled.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert import_manual(spec, sheet, book_path) == 1
    with Gradebook(book_path) as book:
        assert book.manual_scores() == {("'=x", "cost_trend"): 1.0}


@pytest.mark.parametrize("text", ["=x", "'=x", "''", "+1 2", "-", "@a", "plain", "'", "3", "-3.5", ""])
def test_csv_quoting_is_reversible(text):
    assert csv_unescape(csv_safe(text)) == text


def test_pending_manual_points_are_visible(spec):
    results = apply_manual(spec, [_result("ann"), _result("bo")], {("bo", "cost_trend"): 1.0})
    ann, bo = results
    assert ann.status == NEEDS_MANUAL and bo.status == GRADED
    table = grade_table(spec, results)
    assert "1/15 auto, 1 pending" in table and NEEDS_MANUAL in table
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO(grades_csv(spec, results)))}
    assert rows["ann"]["status"] == NEEDS_MANUAL
    assert rows["ann"]["score"] == "1/15 auto, 1 pending"
    assert rows["bo"]["score"] == "1/15 auto, 1 manual"


# ------------------------------------------------------------ kernel messages, before decoding


def _frames(session: Session, content: dict, msg_type: str = "display_data") -> list[bytes]:
    msg = session.msg(msg_type, content)
    return session.serialize(msg)[1:]  # without the delimiter, as feed_identities leaves it


def test_an_oversized_message_is_never_decoded():
    session = Session(key=b"secret")
    guard = payload.FrameGuard()
    payload.cap_session(session, guard, max_bytes=100_000)
    shared = "x" * 1000
    big = {"data": {"application/json": {"a": [shared] * 1000}}, "metadata": {}}
    msg = session.deserialize(_frames(session, big))
    assert msg["content"]["data"] == {"text/plain": guard.dropped[0]}
    assert "larger than" in guard.dropped[0]
    small = {"data": {"text/plain": "hello"}, "metadata": {}}
    assert session.deserialize(_frames(session, small))["content"] == small
    reply = session.deserialize(_frames(session, {"status": "ok", "x": "y" * 200_000}, "execute_reply"))
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "OutputTooLarge"


def test_a_deeply_nested_or_wide_message_is_never_decoded():
    session = Session(key=b"secret")
    guard = payload.FrameGuard()
    payload.cap_session(session, guard)
    deep = b"[" * 200_000 + b"]" * 200_000
    msg = session.msg("display_data", {})
    frames = session.serialize(msg)[1:]
    frames[4] = deep
    frames[0] = session.sign(frames[1:5])
    assert session.deserialize(frames)["content"]["data"]["text/plain"] == guard.dropped[0]
    assert "nested too deeply" in guard.dropped[0]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"a": ["x" * 1000] * 10}, ""),
        ({"a": ["x"] * (payload.MAX_ITEMS + 1)}, "items"),
        ("y" * (payload.MAX_STRING + 1), "a string of"),
        (json.loads("[" * 40 + "]" * 40), "nested deeper"),
        ({"__ndarray__": {"dtype": "float32", "shape": [2], "b64": "AAAAAAAAAAA="}}, ""),
    ],
)
def test_answer_structure_limits(value, why):
    assert (why in payload.problem(value)) if why else payload.problem(value) == ""
    bounded = payload.bounded(value)
    assert (UNSUPPORTED_KEY in bounded) == bool(why)


@pytest.mark.slow
def test_a_real_kernels_oversized_answer_is_dropped_unread(tmp_path, monkeypatch):
    """The attack of issue #12 at a small scale: one string referenced many times."""
    from grader.execute import run_notebook
    from grader.sandbox import Sandbox, SandboxedKernelManager
    from grader.spec import GradingSpec, SandboxLimits

    monkeypatch.setattr(payload, "MAX_FRAME_BYTES", 2**20)
    limits = SandboxLimits()

    def kernel_factory(workdir):
        return SandboxedKernelManager.for_sandbox(Sandbox(limits=limits, workdir=workdir))

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("# ANSWER: big\n_s = 'x' * 1000\nbig = [_s] * 5000"),
        nbformat.v4.new_code_cell("# ANSWER: small\nsmall = 4"),
    ]
    report = run_notebook(
        nb,
        workdir=tmp_path,
        grading=GradingSpec(),
        limits=limits,
        values=["big", "small"],
        models=[],
        answer_variables={"big": "big", "small": "small"},
        kernel_factory=kernel_factory,
    )
    assert "big" not in report.answers["values"]
    assert report.answers["values"]["small"] == 4
    assert report.output_truncated
    assert any("dropped without being read" in line for line in report.log)
