"""Instructor cells come from the source: restoring, re-finding and reporting, case by case."""

import json
import warnings

import nbformat
import pytest

from grader.assemble import assemble, manual_text, parse_notebook
from grader.cells import ORIGIN_KEY, cell_checksum, cell_label
from grader.errors import SubmissionError
from grader.matching import FuzzyMatcher, defined_names


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


# ------------------------------------------------ answers found by content (issue #12, 1)


def _strip_answer_markers(cells):
    for cell in cells:
        cell.metadata = {}
    cells[2].source = "x = 4"  # the student rewrote the whole cell: marker gone too


@pytest.mark.parametrize(
    ("name", "edit", "x_source", "why"),
    [
        ("rewritten, metadata stripped", _strip_answer_markers, "x = 4", "the only cell"),
        (
            "moved after the next given cell",
            lambda c: (_strip_answer_markers(c), c.insert(3, c.pop(2))),
            "x = 4",
            "the only cell in the notebook",
        ),
        (
            "a function defining the name",
            lambda c: (_strip_answer_markers(c), setattr(c[2], "source", "def x():\n    return 4")),
            "def x():\n    return 4",
            "defines x",
        ),
        (
            "assigned twice before the next given cell: the last one",
            lambda c: (_strip_answer_markers(c), c.insert(2, nbformat.v4.new_code_cell("x = 5"))),
            "x = 4",
            "the last of 2 cells",
        ),
        (
            "stub left, answer pasted beside the given cell above",
            lambda c: c.insert(2, nbformat.v4.new_code_cell("x = 4")),
            "x = 4",
            "the only cell",
        ),
    ],
)
def test_answers_are_found_by_content(name, edit, x_source, why):
    asm = assemble(_template(), _submission(edit))
    assert asm.answer_sources["x"] == x_source, name
    found = [w for w in asm.warnings if "was graded as the answer to" in w]
    assert len(found) == 1 and why in found[0], asm.warnings
    assert not any("graded as blank" in w for w in asm.warnings)
    # the chosen cell runs once, in the answer's place: right before the next given cell
    sources = _sources(asm.notebook)
    assert sources.count(x_source) == 1
    assert sources[sources.index(x_source) + 1] == _template().cells[3].source


def test_the_reported_cell_is_the_students_own_cell_number():
    def edit(cells):
        _strip_answer_markers(cells)
        cells.insert(0, nbformat.v4.new_markdown_cell("my notes"))
        cells.insert(1, nbformat.v4.new_code_cell("import math"))

    asm = assemble(_template(), _submission(edit))
    found = next(w for w in asm.warnings if "was graded as the answer to" in w)
    assert "cell 5 ('x = 4')" in found  # 1-based, as it sits in the student's file
    origins = [c.metadata.get(ORIGIN_KEY, {}).get("position") for c in asm.notebook.cells]
    assert origins == [0, 1, 2, 3, 4, 5, 6]
    assert cell_label(asm.notebook.cells[4], 99) == "cell 5 of your notebook ('x = 4')"


def test_an_edited_given_cell_is_named_where_the_student_has_it():
    def edit(cells):
        cells.insert(0, nbformat.v4.new_code_cell("import math"))
        cells[2].source = cells[2].source.replace("sum()", "sum() * 0")

    asm = assemble(_template(), _submission(edit))
    assert asm.changed == ["cell 3 ('def cost_func(a, b):') was edited; the original was restored and graded"]


def test_a_student_cell_is_not_an_answer_when_the_answer_cell_is_answered():
    def edit(cells):
        _answer(cells)
        cells.insert(3, nbformat.v4.new_code_cell("x = 5  # exploring"))

    asm = assemble(_template(), _submission(edit))
    assert asm.answer_sources["x"] == "# ANSWER: x\nx = 4"
    assert not any("was graded as the answer to" in w for w in asm.warnings)


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("x = 4", {"x"}),
        ("x: int = 4", {"x"}),
        ("a, (b, c) = 1, (2, 3)", {"a", "b", "c"}),
        ("class NN_Model3(nn.Module):\n    pass", {"NN_Model3"}),
        ("%matplotlib inline\nx = 4", {"x"}),
        ("if True:\n    x = 4", set()),  # not at top level
        ("print(x)", set()),
        ("x = (", set()),
    ],
)
def test_defined_names(source, names):
    assert defined_names(source) == names


# ------------------------------------------------ fuzzy matching is bounded (issue #12, 3)


def _big_submission(cells: int, size: int) -> nbformat.NotebookNode:
    """Every given cell's metadata stripped and edited, and many long cells of the student's:
    the shape of the 201 KB notebook that kept main busy for 148 s."""
    template = _template()
    nb = _submission(lambda c: None)
    for i, cell in enumerate(nb.cells):
        cell.metadata = {}
        cell["id"] = f"saved-by-another-editor-{i}"
        cell.source += "\n# edited"
    filler = "".join(chr(97 + (i * 7919) % 26) for i in range(size))
    for i in range(cells):
        nb.cells.append(nbformat.v4.new_code_cell(f"# note {i}\n" + filler[i:] + filler[:i]))
    assert len(nbformat.writes(nb)) > 200_000
    return template, nb


def test_fuzzy_matching_skips_pairs_that_cannot_match():
    template, nb = _big_submission(cells=60, size=3500)
    asm = assemble(template, nb)
    assert [c.source for c in asm.notebook.cells][1] == template.cells[1].source
    assert len([c for c in asm.changed if "was edited" in c]) == 3
    # long student cells are never compared with short given ones (length bound)
    assert not any("took longer" in w for w in asm.warnings)


def test_fuzzy_matching_stops_at_its_budget_and_says_so():
    template, nb = _big_submission(cells=60, size=3500)
    asm = assemble(template, nb, fuzzy_budget=0.0)
    assert any("took longer than 0 s" in w for w in asm.warnings), asm.warnings
    # nothing is lost: unmatched cells stay the student's, the given cells are restored
    sources = _sources(asm.notebook)
    assert all(c.source in sources for c in template.cells if c.metadata["grader"]["locked"])


def test_fuzzy_matcher_prefilters_by_length():
    matcher = FuzzyMatcher()
    text = "def cost_func(a, b):\n    return ((a - b) ** 2).sum()"
    assert matcher.best(text + " * 0", [(0, text), (1, text * 40)]) == 0
    assert matcher.pairs_compared == 1


# ------------------------------------------------ text that can be written (issue #12, 3)


def test_lone_surrogates_are_replaced_where_the_notebook_is_read():
    raw = (
        b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": '
        b'"markdown", "id": "a", "metadata": {}, "source": "<!-- ANSWER: why -->\\nsad \\ud800 face"}]}'
    )
    nb, _ = parse_notebook(raw, "s.ipynb")
    assert nb.cells[0].source.endswith("sad \ufffd face")
    nb.cells[0].source.encode("utf-8")


def test_manual_answers_hold_the_students_text_only():
    prompt = "<!-- ANSWER: why -->\n**Your answer:** why is it so?\n\n_Type your answer here._"
    assert manual_text(prompt, prompt) == ""
    assert manual_text(prompt.replace("_Type your answer here._", "Because."), prompt) == "Because."
    typed_on_the_line = "<!-- ANSWER: why -->\n**Your answer:** why is it so? It is not."
    assert manual_text(typed_on_the_line, prompt) == "It is not."


def test_a_student_cell_with_a_given_cells_id_raises_no_nbformat_warning():
    """nbformat's DuplicateCellId went to the instructor's terminal (issue #12, 4)."""

    def edit(cells):
        _strip_answer_markers(cells)
        cells[2]["id"] = "elsewhere"
        cells.insert(4, nbformat.v4.new_code_cell("y = 1"))
        cells[4]["id"] = "ans-x"  # the id of the answer cell in the template, on another cell

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asm = assemble(_template(), _submission(edit))
    ids = [c["id"] for c in asm.notebook.cells]
    assert len(ids) == len(set(ids))
