"""The notebook as the grader executed it, kept for the student's feedback.

What is kept: every cell of the assembled submission with its outputs (plots, errors), and
the cells the grader injected to set the grading parameters (so a student sees that the
notebook ran with 3 epochs, not their 100). The grader's own setup and answer-extraction
cells are dropped: they hold nothing for a student, and their outputs carry the run's nonce.

Stored compressed in the gradebook (`Gradebook.save(..., executed=...)`).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import nbformat
from nbformat import NotebookNode

if TYPE_CHECKING:
    from .checking import Answer, CheckContext
    from .execute import ExecutionReport
    from .results import SubmissionResult
    from .spec import AssignmentSpec

FEEDBACK_KEY = "grader_feedback"  # notebook metadata the grader writes (answers, curve)
MAX_SHOWN = 80  # characters of an answer value in the class report
MAX_CURVE = 1000  # values of a training curve
EXEC_KEY = "grader_exec"  # the executor's marker of its own cells (grader/execute.py)
SHOWN_GRADER_CELLS = ("inject",)  # the grading parameters: a student should see them


def keep_executed(nb: NotebookNode, extras: dict[str, Any] | None = None) -> NotebookNode:
    """A copy of the executed notebook without the grader's internal cells; `extras` (the
    answers as shown in the class report, the training curve) in its metadata, always
    replacing whatever the submission had there."""
    cells = []
    for cell in nb.cells:
        kind = cell.get("metadata", {}).get(EXEC_KEY, {}).get("kind")
        if kind is not None and kind not in SHOWN_GRADER_CELLS:
            continue
        cells.append(cell)
    metadata = {k: v for k, v in nb.metadata.items() if k != FEEDBACK_KEY}
    metadata[FEEDBACK_KEY] = extras or {}
    out = nbformat.v4.new_notebook(cells=cells, metadata=metadata)
    return out


def feedback_extras(nb: NotebookNode | None) -> dict[str, Any]:
    data = nb.metadata.get(FEEDBACK_KEY) if nb is not None else None
    return dict(data) if isinstance(data, dict) else {}


def shown(value: Any) -> str:
    """An answer value as a short line of text (the class report's common wrong answers)."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        value = tolist()
    if value is Ellipsis:
        return "(left blank)"
    try:
        text = json.dumps(value, default=repr, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def shown_answers(spec: AssignmentSpec, answers: dict[str, Answer]) -> dict[str, str]:
    return {
        qid: shown(a.value)
        for qid, a in answers.items()
        if a.present and spec.question(qid).kind == "value"
    }


def curve_variables(spec: AssignmentSpec) -> list[str]:
    """What the kernel must hand out as data for the feedback's training curve."""
    if spec.curve is None:
        return []
    return [spec.curve.variable, *spec.curve.parameters]


def _numbers(value: Any) -> list[float] | None:
    tolist = getattr(value, "tolist", None)
    value = tolist() if callable(tolist) else value
    if not isinstance(value, list) or not 0 < len(value) <= MAX_CURVE:
        return None
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return [v if math.isfinite(v) else float("nan") for v in numbers]


def training_curve(
    spec: AssignmentSpec,
    checks: ModuleType | None,
    ctx: Callable[[], CheckContext],
    report: ExecutionReport,
    result: SubmissionResult,
) -> dict[str, Any] | None:
    """The student's curve and the reference's at their hyperparameters. Never raises: a
    curve is an illustration; it never changes a grade."""
    from .checking import decode

    curve = spec.curve
    if curve is None:
        return None
    values = report.answers.get("values", {})
    student = _numbers(decode(values.get(curve.variable)))
    if student is None:
        return None
    parameters = {name: decode(values.get(name)) for name in curve.parameters}
    reference = None
    hook = getattr(checks, curve.reference, None) if checks is not None else None
    if callable(hook):
        try:
            reference = _numbers(hook(ctx(), parameters))
        except Exception as exc:  # the reference hook is the instructor's code
            result.log.append(f"reference curve failed: {type(exc).__name__}: {exc}")
    shown_parameters = {k: shown(v) for k, v in parameters.items()}
    return {"student": student, "reference": reference, "parameters": shown_parameters}


def pack(nb: NotebookNode) -> bytes:
    return zlib.compress(nbformat.writes(nb).encode("utf-8"), 6)


def unpack(blob: bytes) -> NotebookNode:
    """The kept notebook; ValueError when the kept bytes are not one (a damaged gradebook)."""
    try:
        nb: NotebookNode = nbformat.reads(zlib.decompress(blob).decode("utf-8"), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("it has no list of cells")
    except Exception as exc:  # zlib, JSON, nbformat's schema and conversion errors alike
        raise ValueError(f"the kept notebook is damaged ({type(exc).__name__}: {exc})") from exc
    return nb
