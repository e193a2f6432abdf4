"""The notebook as the grader executes it: the grader's own cells around the submission.

* a setup cell first: seeds, one thread, matplotlib's inline backend (figures as PNG outputs);
* the grading parameters injected right after the parameters cell (and again after any
  student cell that sets one of them);
* after each answer cell a snapshot of its answer, so a later crash or timeout still leaves
  what was answered before; a final extraction cell sends them all.

Every grader cell carries ``metadata[EXEC_KEY]`` saying what it is (:func:`cell_kind`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from . import selfcheck
from .cells import ANSWER, GIVEN, PARAMETERS, SELFCHECK, cell_role
from .spec import GradingSpec

EXEC_KEY = "grader_exec"  # cell metadata the executor adds: which cells are its own
SKIP_TAG = "skip-execution"
# Figures become PNG outputs of their cell (no GUI), kept for the student's feedback page.
MPL_BACKEND = "module://matplotlib_inline.backend_inline"


def _code_cell(source: str, kind: str) -> NotebookNode:
    cell = nbformat.v4.new_code_cell(source=source)
    cell.metadata[EXEC_KEY] = {"kind": kind}
    return cell


def _assigned_names(source: str) -> set[str]:
    """Top-level names a cell assigns (for model snapshots). Unparsable cells assign none."""
    from .checking import parse_cell

    parsed = parse_cell(source)
    if parsed is None:
        return set()
    tree = parsed[1]
    names: set[str] = set()
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    names.add(sub.id)
    return names


def setup_code(grading: GradingSpec) -> str:
    """The first cell: determinism, one thread, a quiet backend."""
    return "\n".join(
        [
            "import os as _g_os, random as _g_random, warnings as _g_w",
            f"_g_os.environ.setdefault('MPLBACKEND', {MPL_BACKEND!r})",
            "_g_w.filterwarnings('ignore', message='.*non-interactive.*')",
            _seed_code(grading),
            f"try:\n    import matplotlib as _g_mpl\n    _g_mpl.use({MPL_BACKEND!r})\n"
            "except ImportError:\n    pass",
        ]
    )


def _module_code() -> str:
    """Defines `_grader_selfcheck` afresh, so a student's cell cannot have replaced it."""
    src = Path(selfcheck.__file__).read_text(encoding="utf-8")
    return (
        "_grader_selfcheck = __import__('types').ModuleType('_grader_selfcheck')\n"
        f"exec(compile({src!r}, '<grader>', 'exec'), _grader_selfcheck.__dict__)\n"
    )


def extraction_code(nonce: str, values: list[str], models: list[str]) -> str:
    call = f"_grader_selfcheck.extract(globals(), {values!r}, {models!r})"
    return _module_code() + f"_grader_selfcheck.emit({{'nonce': {nonce!r}, 'answers': {call}}})"


def _seed_code(grading: GradingSpec) -> str:
    return (
        f"_g_random.seed({grading.seed})\n"
        "try:\n    import numpy as _g_np\n"
        f"    _g_np.random.seed({grading.seed})\nexcept ImportError:\n    pass\n"
        "try:\n    import torch as _g_torch\n"
        f"    _g_torch.manual_seed({grading.seed})\n"
        f"    _g_torch.set_num_threads({grading.threads})\nexcept ImportError:\n    pass"
    )


def parameters_code(grading: GradingSpec) -> str:
    """Injected after the parameters cell: the grading values, and the seeds again, so what
    follows (the training) starts from the same state whatever the student ran before."""
    lines = ["# Grading parameters, injected by the grader after the parameters cell."]
    lines += [f"{name} = {value!r}" for name, value in sorted(grading.parameters.items())]
    lines += ["import random as _g_random", _seed_code(grading)]
    return "\n".join(lines)


def cell_kind(cell: NotebookNode) -> str:
    if EXEC_KEY in cell.metadata:
        return str(cell.metadata[EXEC_KEY]["kind"])
    role = cell_role(cell).role
    if role == GIVEN and "grader" not in cell.metadata:
        return "student"  # a cell the student added: assembly strips their metadata
    return {ANSWER: "student", PARAMETERS: "parameters"}.get(role, role)


def prepare(
    nb: NotebookNode,
    grading: GradingSpec,
    nonce: str,
    values: list[str],
    models: list[str],
    answer_variables: dict[str, str],
    final_code: str | None = None,
) -> NotebookNode:
    """The notebook as executed: grader cells around the (already assembled) submission."""
    cells = [_code_cell(setup_code(grading), "setup")]
    for cell in nb.cells:
        cells.append(cell)
        if cell.cell_type != "code":
            continue
        cell_info = cell_role(cell)
        role = cell_info.role
        if role == SELFCHECK:
            cell.metadata.setdefault("tags", [])
            if SKIP_TAG not in cell.metadata["tags"]:
                cell.metadata["tags"].append(SKIP_TAG)
        assigned = _assigned_names(cell.source)
        if role == PARAMETERS or (
            cell_kind(cell) == "student" and assigned & set(grading.parameters)
        ):
            # after the parameters cell, and again after any student cell that sets one of
            # the grading parameters (num_epochs = 100 in a cell of their own)
            cells.append(_code_cell(parameters_code(grading), "inject"))
        snap_values: list[str] = []
        question = cell_info.question
        if role == ANSWER and question in answer_variables:
            snap_values.append(answer_variables[question])
        snap_models = sorted(set(models) & assigned)
        if snap_values or snap_models:
            cells.append(_code_cell(extraction_code(nonce, snap_values, snap_models), "snapshot"))
    cells.append(_code_cell(extraction_code(nonce, values, models), "extract"))
    if final_code:
        cells.append(_code_cell(_module_code() + final_code, "final"))
    out = nbformat.v4.new_notebook(cells=cells, metadata=dict(nb.metadata))
    return out
