"""The marker format: solution stripping as a table of cases, plus the real template."""

import nbformat
import pytest

from grader.authoring import (
    MD_PLACEHOLDER,
    cell_role,
    make_template,
    notebook_text,
    solution_lines,
    strip_solutions,
    template_is_current,
    template_path,
)
from grader.errors import SpecError
from grader.spec import load_spec


def code(src: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(src)


def md(src: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(src)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 4  # SOLUTION", "x = ..."),
        ("    y[0] = f(3)  # SOLUTION", "    y[0] = ..."),
        ("print(1)  # SOLUTION\nz = 1", "z = 1"),
        ("a = 1\n# BEGIN SOLUTION\nb = 2\nc = 3\n# END SOLUTION\nd = 4", "a = 1\n...  # YOUR CODE HERE\nd = 4"),
        (
            "# BEGIN SOLUTION\nclass A:\n    x = 1\n# END SOLUTION\n# BEGIN STUB\n# class A:\n#     ...\n#\n# END STUB",
            "class A:\n    ...\n",
        ),
        ("t = 1 == 1  # SOLUTION", "t = ..."),
        ("no markers here", "no markers here"),
    ],
)
def test_strip_code(source, expected):
    assert strip_solutions(code(source)) == expected


def test_strip_markdown():
    cell = md("<!-- ANSWER: q -->\n<!-- BEGIN SOLUTION -->\nsecret\n<!-- END SOLUTION -->")
    assert strip_solutions(cell) == f"<!-- ANSWER: q -->\n{MD_PLACEHOLDER}"
    assert solution_lines(cell) == ["secret"]


@pytest.mark.parametrize(
    "source",
    [
        "# BEGIN SOLUTION\nx = 1",
        "# END SOLUTION",
        "# BEGIN SOLUTION\nx=1\n# END SOLUTION\n# BEGIN STUB\nnot commented\n# END STUB",
        "# BEGIN SOLUTION\nx=1\n# END SOLUTION\n# BEGIN STUB\n# x = ...",
    ],
)
def test_malformed_markers_are_errors(source):
    with pytest.raises(SpecError):
        strip_solutions(code(source))


@pytest.mark.parametrize(
    ("cell", "role", "question"),
    [
        (code("# ANSWER: first_nine_index\nx = 1"), "answer", "first_nine_index"),
        (md("<!-- ANSWER: cost_trend -->\ntext"), "manual", "cost_trend"),
        (code("# PARAMETERS\nlr = 1"), "parameters", None),
        (code("# SELFCHECK\nimport selfcheck"), "selfcheck", None),
        (code("import torch"), "given", None),
        (md("# ANSWER: not-in-markdown"), "given", None),
    ],
)
def test_roles_from_markers(cell, role, question):
    got = cell_role(cell)
    assert (got.role, got.question) == (role, question)


def test_role_survives_a_lost_marker_line_through_metadata():
    cell = code("x = 1")
    cell.metadata["grader"] = {"role": "answer", "question": "q", "locked": False}
    assert cell_role(cell).question == "q"


@pytest.fixture(scope="module")
def spec(repo_root):
    return load_spec(repo_root / "solutions" / "mnist_nn")


def test_template_is_deterministic_and_committed(spec):
    first = notebook_text(make_template(spec))
    assert first == notebook_text(make_template(spec))
    assert template_is_current(spec), f"run `grader assign solutions/mnist_nn`: {template_path(spec)} is stale"


AUTO_IDS = [
    "first_nine_index",
    "target_for_3",
    "expected_cost",
    "NN_Model3",
    "experiments",
    "max_stable_learning_rate",
    "random_model_accuracy",
    "claimed_accuracy",
]


def test_template_has_a_stub_and_no_solution_for_every_auto_id(spec):
    template = make_template(spec)
    roles = {cell_role(c).question: c for c in template.cells if cell_role(c).question}
    for qid in AUTO_IDS:
        assert qid in roles, qid
        text = roles[qid].source
        assert "..." in text, f"{qid} has no stub"
        assert "SOLUTION" not in text
    assert "class NN_Model3(nn.Module)" in roles["NN_Model3"].source
    for line in ("first_nine_index = ...", "target_for_3 = ...", "expected_cost = ..."):
        assert line in notebook_text(template)
    locked = [c for c in template.cells if c.metadata["grader"]["locked"]]
    assert locked and all(c.metadata["editable"] is False and c.metadata["grader"]["checksum"] for c in locked)


def test_lesson_mistakes_are_fixed_in_the_template(spec):
    text = notebook_text(make_template(spec))
    for wrong in ("MINST", "MINT ", "728", "[0,0,0,0,0,5,0,0,0,0]", "doqload", "loosly", "nueron", "didgit", "calcualte", "sucessfully"):
        assert wrong not in text, wrong
    assert "[0,0,0,0,0,1,0,0,0,0]" in text.replace(" ", "")
    assert 'path / data_filename' in text or "path/data_filename" in text
