"""docs/authoring.md's worked example, followed step by step on a copy of the assignment:
a new question needs only the source notebook, the spec and the checks, no grader code."""

import shutil
import textwrap
from pathlib import Path

import nbformat
import pytest
from notebook_edits import without_experiments

from grader.authoring import notebook_text
from grader.cli import main
from grader.grading import grade_bytes, open_session
from grader.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _between(text: str, start: str, end: str) -> str:
    """The fenced block that follows `start` in the worked example (up to `end`)."""
    section = text[text.index("## Worked example") :]
    block = section[section.index(start) :]
    block = block[block.index("```") :]
    block = block[block.index("\n") + 1 : block.index(end)]
    return textwrap.dedent(block).strip("\n")


def test_the_worked_example_adds_a_graded_question(tmp_path, grading_cache):
    doc = (ROOT / "docs" / "authoring.md").read_text(encoding="utf-8")
    answer_cell = _between(doc, "add a markdown cell", "```\n\n2.")
    toml = _between(doc, "In `assignment.toml`", "```\n\n3.")
    check = _between(doc, "In `checks.py`", "```\n\n4.")

    course = tmp_path / "course"
    shutil.copytree(ROOT / "solutions" / "mnist_nn", course / "solutions" / "mnist_nn")
    shutil.copytree(ROOT / "assignments" / "mnist_nn", course / "assignments" / "mnist_nn")
    folder = course / "solutions" / "mnist_nn"

    # 1. the question and its answer cell, after the model cell
    source_path = folder / "mnist_nn.source.ipynb"
    nb = nbformat.read(source_path, 4)
    model = next(i for i, c in enumerate(nb.cells) if "class NN_Model(nn.Module)" in c.source)
    question = nbformat.v4.new_markdown_cell("How many weights and biases does `NN_Model` have?")
    question["id"] = "n-parameters-question"
    answer = nbformat.v4.new_code_cell(answer_cell)
    answer["id"] = "n-parameters-answer"
    nb.cells[model + 1 : model + 1] = [question, answer]
    source_path.write_text(notebook_text(nb), encoding="utf-8")
    # 2. the spec, 3. the check
    with open(folder / "assignment.toml", "a", encoding="utf-8") as fh:
        fh.write("\n" + toml + "\n")
    with open(folder / "checks.py", "a", encoding="utf-8") as fh:
        fh.write("\n\n" + check + "\n")

    # 4. grader assign: the template gets a stub and no solution
    assert main(["assign", str(folder)]) == 0
    template = nbformat.read(course / "assignments" / "mnist_nn" / "mnist_nn.ipynb", 4)
    (stub,) = [c.source for c in template.cells if c.source.startswith("# ANSWER: n_parameters")]
    assert "n_parameters = ..." in stub and "13002" not in stub

    spec = load_spec(folder)
    session = open_session(spec, cache_dir=grading_cache)
    # without experiments answered: the edited checks.py would train those references again
    right_text = without_experiments(source_path.read_text(encoding="utf-8"))
    solution = grade_bytes(session, right_text.encode(), student="solution", file="s.ipynb")
    wrong = nbformat.reads(right_text, 4)
    for cell in wrong.cells:
        if cell["id"] == "n-parameters-answer":
            cell.source = cell.source.replace("13002", "13000")
    mistaken = grade_bytes(session, notebook_text(wrong).encode(), student="wrong", file="w.ipynb")
    q_right, q_wrong = solution.question("n_parameters"), mistaken.question("n_parameters")
    assert q_right is not None and q_right.points == 1, q_right
    assert q_wrong is not None and q_wrong.points == 0
    assert "Count every weight" in q_wrong.checks[0].message
    full = sum(q.points for q in spec.auto_questions)
    assert solution.total == full - spec.question("experiments").points
