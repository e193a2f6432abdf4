"""The notebook as the grader executes it: where its own cells go (a pure function)."""

import nbformat

from grader.prepare import EXEC_KEY, cell_kind, prepare
from grader.spec import GradingSpec

GRADING = GradingSpec(parameters={"num_epochs": 3}, seed=0)


def _nb(*sources: str) -> nbformat.NotebookNode:
    cells = []
    for source in sources:
        cell = nbformat.v4.new_code_cell(source)
        if source.startswith(("# PARAMETERS", "# ANSWER", "import")):
            role = {"# P": "parameters", "# A": "answer", "imp": "given"}[source[:3]]
            cell.metadata["grader"] = {"role": role, "locked": role == "given"}
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells)


def _kinds(nb: nbformat.NotebookNode) -> list[str]:
    return [cell_kind(c) for c in nb.cells]


def test_grader_cells_around_the_submission():
    nb = _nb("import torch", "# PARAMETERS\nnum_epochs = 100", "# ANSWER: x\nx = 1", "print(x)")
    out = prepare(nb, GRADING, "n", ["x"], [], {"x": "x"})
    assert _kinds(out) == ["setup", "given", "parameters", "inject", "student", "snapshot", "student", "extract"]
    inject = out.cells[3]
    assert "num_epochs = 3" in inject.source and inject.metadata[EXEC_KEY]["kind"] == "inject"


def test_a_student_cell_that_resets_a_grading_parameter_is_followed_by_the_injection():
    nb = _nb("# PARAMETERS\nnum_epochs = 10", "num_epochs = 100  # my long run", "for num_epochs in [5]:\n    pass")
    out = prepare(nb, GRADING, "n", [], [], {})
    assert _kinds(out) == ["setup", "parameters", "inject", "student", "inject", "student", "inject", "extract"]


def test_magics_do_not_hide_assignments():
    nb = _nb("# PARAMETERS\nnum_epochs = 10", "%matplotlib inline\nnum_epochs = 100")
    out = prepare(nb, GRADING, "n", [], [], {})
    assert _kinds(out)[-2:] == ["inject", "extract"]
