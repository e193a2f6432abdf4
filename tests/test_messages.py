"""What the instructor and the student read: cells named as the student sees them, given
cells that failed because of the machine, and `grader check` finding its assignment."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from grader.cells import mark_origin
from grader.errors import UsageError
from grader.execute import CellReport, ExecutionReport
from grader.grading import given_cell_failures
from grader.results import GRADED, QuestionResult, SubmissionResult
from grader.studentcheck import find_public

ROOT = Path(__file__).resolve().parents[1]


def _cell(source: str, role: str | None = None, position: int | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if role:
        cell.metadata["grader"] = {"role": role}
    if position is not None:
        mark_origin(cell, position, source)
    return cell


def _report(status: str, error: str) -> ExecutionReport:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _cell("import os", None),  # the grader's setup cell
        _cell("# ANSWER: early\nearly = 1", "answer", 3),
        _cell("for epoch in range(10):\n    train()", "given", 5),
        _cell("# ANSWER: late\nlate = 2", "answer", 6),
    ]
    kinds = ["setup", "student", "given", "student"]
    cells = [CellReport(i, "", kind, "ok") for i, kind in enumerate(kinds)]
    cells[2].status, cells[2].error = status, error
    return ExecutionReport(notebook=nb, cells=cells)


def _result() -> SubmissionResult:
    return SubmissionResult(
        student="s", file="s.ipynb", content_hash="", status=GRADED,
        questions=[
            QuestionResult("early", "failed", 0.0, 1.0),
            QuestionResult("late", "failed", 0.0, 1.0),
            QuestionResult("late_ok", "passed", 1.0, 1.0),
            QuestionResult("pipeline", "partial", 1.0, 2.0),  # no answer cell: a model
        ],
    )


@pytest.mark.parametrize(
    ("status", "error", "affected"),
    [
        ("timeout", "CellTimeoutError: the cell ran longer than its time limit", {"late", "pipeline"}),
        ("died", "the kernel died while running this cell", {"late", "pipeline"}),
        ("error", "ModuleNotFoundError: No module named 'torchvision'", {"late", "pipeline"}),
        ("error", "MemoryError: ", {"late", "pipeline"}),
        ("error", "NameError: name 'model' is not defined", set()),  # the student's doing
        ("ok", "", set()),
    ],
)
def test_a_given_cell_failing_because_of_the_machine_is_partial(status, error, affected):
    result = _result()
    given_cell_failures(_report(status, error), result)
    ungradable = {q.id for q in result.questions if q.status == "ungradable"}
    assert ungradable == affected
    if affected:
        reason = result.warnings[0]
        assert "cell 6 of your notebook ('for epoch in range(10):')" in reason
        assert "not your answers" in reason
        assert result.question("pipeline").points == 1.0  # points kept; the status says why
    else:
        assert result.warnings == []


def _template_copy(folder: Path) -> Path:
    folder.mkdir()
    path = folder / "my.ipynb"
    shutil.copy(ROOT / "assignments" / "mnist_nn" / "mnist_nn.ipynb", path)
    return path


def test_check_reads_the_assignment_from_the_notebooks_metadata(tmp_path):
    path = _template_copy(tmp_path / "work")
    metadata = json.loads(path.read_text())["metadata"]
    public = find_public(path, None, metadata)
    assert public["assignment"] == "mnist_nn" and "first_nine_index" in public["questions"]


def test_check_without_selfcheck_or_a_known_assignment_says_so(tmp_path):
    path = _template_copy(tmp_path / "work")
    with pytest.raises(UsageError, match="no assignment 'unknown_course'"):
        find_public(path, None, {"grader": {"assignment": "unknown_course"}})
    with pytest.raises(UsageError, match=r"no selfcheck\.py"):
        find_public(path, None, {})
