"""Instructor cells come from the source: restoring, re-finding and reporting, case by case."""

import json

import nbformat
import pytest

from grader.assemble import assemble, parse_notebook
from grader.cells import cell_checksum
from grader.errors import SubmissionError


def _template() -> nbformat.NotebookNode:
    def locked(cid, src, kind="code"):
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = make(src)
        cell["id"] = cid
        cell.metadata = {
            "editable": False,
            "deletable": False,
            "grader": {"role": "given", "locked": True, "checksum": cell_checksum(kind, src)},
        }
        return cell

    def answer(cid, src, qid, kind="code"):
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = make(src)
        cell["id"] = cid
        role = "answer" if kind == "code" else "manual"
        cell.metadata = {"grader": {"role": role, "question": qid, "locked": False}}
        return cell

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        locked("intro", "# Lesson\nSome text.", "markdown"),
        locked("cost", "def cost_func(a, b):\n    return ((a - b) ** 2).sum()"),
        answer("ans-x", "# ANSWER: x\nx = ...", "x"),
        locked("acc", "def accuracy(m, d, l):\n    return (m(d).argmax(1) == l).float().mean().item()"),
        answer("ans-m", "<!-- ANSWER: why -->\n_Type your answer here._", "why", "markdown"),
    ]
    return nb


def _submission(edit) -> nbformat.NotebookNode:
    nb = json.loads(json.dumps(_template()))
    nb = nbformat.from_dict(nb)
    edit(nb.cells)
    return nb


def _sources(nb):
    return [c.source for c in nb.cells]


def test_untouched_submission_is_unchanged():
    asm = assemble(_template(), _submission(lambda cells: None))
    assert _sources(asm.notebook) == _sources(_template())
    assert asm.changed == [] and asm.warnings == []


def _answer(cells):
    cells[2].source = "# ANSWER: x\nx = 4"
    cells[4].source = "<!-- ANSWER: why -->\nBecause."


@pytest.mark.parametrize(
    ("name", "edit", "changed", "x_source"),
    [
        ("answered", _answer, 0, "# ANSWER: x\nx = 4"),
        ("locked edited", lambda c: (_answer(c), setattr(c[1], "source", c[1].source.replace("sum()", "sum() * 0"))), 1, "# ANSWER: x\nx = 4"),
        (
            "locked edited, metadata stripped",
            lambda c: (_answer(c), c[3].metadata.clear(), setattr(c[3], "source", c[3].source.replace(".item()", ".item() * 0 + 1.0"))),
            1,
            "# ANSWER: x\nx = 4",
        ),
        ("locked deleted", lambda c: (_answer(c), c.pop(1)), 1, "# ANSWER: x\nx = 4"),
        ("answer moved to the end", lambda c: (_answer(c), c.append(c.pop(2))), 0, "# ANSWER: x\nx = 4"),
        ("answer metadata stripped", lambda c: (_answer(c), c[2].metadata.clear()), 0, "# ANSWER: x\nx = 4"),
        (
            "answer marker deleted, metadata kept",
            lambda c: (_answer(c), setattr(c[2], "source", "x = 5")),
            0,
            "x = 5",
        ),
        ("answer deleted", lambda c: c.pop(2), 0, "# ANSWER: x\nx = ..."),
    ],
)
def test_restoration(name, edit, changed, x_source):
    asm = assemble(_template(), _submission(edit))
    sources = _sources(asm.notebook)
    template = _sources(_template())
    assert sources[1] == template[1] and sources[3] == template[3], name  # originals restored
    assert len(asm.changed) == changed, asm.changed
    assert asm.answer_sources["x"] == x_source


def test_duplicated_answer_takes_the_last_answered_and_warns():
    def edit(cells):
        first = nbformat.from_dict(json.loads(json.dumps(cells[2])))
        first.source = "# ANSWER: x\nx = 1"
        first["id"] = "dup"
        cells[2].source = "# ANSWER: x\nx = 2"
        cells.insert(3, first)

    asm = assemble(_template(), _submission(edit))
    assert asm.answer_sources["x"] == "# ANSWER: x\nx = 1"
    assert any("2 answer cells" in w for w in asm.warnings)


def test_student_extra_cells_are_kept_after_their_neighbour():
    def edit(cells):
        extra = nbformat.v4.new_code_cell("helper = 41 + 1")
        cells.insert(2, extra)

    asm = assemble(_template(), _submission(edit))
    sources = _sources(asm.notebook)
    assert sources.index("helper = 41 + 1") == 2
    assert "helper = 41 + 1" in asm.student_sources


def test_manual_answers_are_collected():
    asm = assemble(_template(), _submission(_answer))
    assert asm.manual_answers == {"why": "Because."}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{not json", "not valid JSON"),
        (b'{"cells": [], "nbformat": 4', "not valid JSON"),
        (b"[1, 2, 3]", "not a Jupyter notebook"),
        (b'{"hello": "world"}', "not a Jupyter notebook"),
        (b'{"cells": [], "nbformat": 9, "nbformat_minor": 0, "metadata": {}}', "unsupported notebook format"),
    ],
)
def test_unreadable_submissions(raw, message):
    with pytest.raises(SubmissionError, match=message):
        parse_notebook(raw, "x.ipynb")


def test_non_utf8_bytes_are_replaced_with_a_warning():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 'caf\u00e9'")])
    raw = nbformat.writes(nb).encode("utf-8").replace("caf\u00e9".encode(), b"caf\xe9")
    parsed, warnings = parse_notebook(raw, "latin.ipynb")
    assert "x = 'caf" in parsed.cells[0].source
    assert any("not valid UTF-8" in w for w in warnings)


def test_v3_notebooks_are_converted():
    v3 = {
        "nbformat": 3,
        "nbformat_minor": 0,
        "metadata": {},
        "worksheets": [{"cells": [{"cell_type": "code", "input": "x = 1", "outputs": [], "language": "python", "metadata": {}}]}],
    }
    nb, warnings = parse_notebook(json.dumps(v3).encode(), "old.ipynb")
    assert nb.cells[0].source == "x = 1"
    assert any("v3" in w for w in warnings)


def test_missing_and_duplicate_ids_are_repaired():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a"), nbformat.v4.new_code_cell("b")])
    data = json.loads(nbformat.writes(nb))
    data["cells"][0]["id"] = "same"
    data["cells"][1]["id"] = "same"
    parsed, _ = parse_notebook(json.dumps(data).encode(), "ids.ipynb")
    assert len({c["id"] for c in parsed.cells}) == 2
    del data["cells"][0]["id"]
    parsed, _ = parse_notebook(json.dumps(data).encode(), "ids.ipynb")
    assert all(c.get("id") for c in parsed.cells)
