"""The marker format of a source notebook, and the student template made from it.

A cell's role is given by its first line (readable in any editor) and, in the generated
template, by its metadata too (the vocabulary itself lives in grader/cells.py):

==============================  =========================================================
first line                      role
==============================  =========================================================
``# ANSWER: <question id>``     auto-graded answer cell (code)
``<!-- ANSWER: <id> -->``       free-response answer cell (markdown), graded by hand
``# PARAMETERS``                the hyperparameter cell; the grader injects after it
``# SELFCHECK``                 the student's self-check cell; skipped when grading
anything else                   given lesson content: locked, restored when grading
==============================  =========================================================

Solution regions inside answer and parameters cells:

* a line ending in ``# SOLUTION`` becomes ``name = ...`` (or disappears if it is not an
  assignment);
* lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` are removed; an optional
  ``# BEGIN STUB`` / ``# END STUB`` block right after holds the stub, every line commented
  out with ``# `` in the source and uncommented in the template;
* in markdown, ``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->`` becomes a
  "_Type your answer here._" line.

See docs/authoring.md for a worked example.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from .cells import ANSWER as ANSWER
from .cells import GIVEN as GIVEN
from .cells import MANUAL as MANUAL
from .cells import MD_PLACEHOLDER as MD_PLACEHOLDER
from .cells import PARAMETERS as PARAMETERS
from .cells import CellRole as CellRole
from .cells import cell_checksum as cell_checksum
from .cells import cell_role as cell_role
from .cells import role_from_markers as role_from_markers
from .errors import SpecError
from .fileio import atomic_write_text
from .spec import AssignmentSpec

SOLUTION_LINE_RE = re.compile(r"^(?P<indent>\s*)(?P<body>.*?)\s*#\s*SOLUTION\s*$")
ASSIGNMENT_RE = re.compile(r"^(?P<target>[A-Za-z_][A-Za-z0-9_\.\[\]\"' ,]*?)\s*=(?!=)")
BEGIN_SOLUTION = re.compile(r"^\s*#\s*BEGIN SOLUTION\s*$")
END_SOLUTION = re.compile(r"^\s*#\s*END SOLUTION\s*$")
BEGIN_STUB = re.compile(r"^\s*#\s*BEGIN STUB\s*$")
END_STUB = re.compile(r"^\s*#\s*END STUB\s*$")
MD_BEGIN = re.compile(r"^\s*<!--\s*BEGIN SOLUTION\s*-->\s*$")
MD_END = re.compile(r"^\s*<!--\s*END SOLUTION\s*-->\s*$")
TEMPLATE_NBFORMAT_MINOR = 5


def _strip_code(source: str, where: str) -> str:
    out: list[str] = []
    lines = source.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if BEGIN_SOLUTION.match(line):
            j = i + 1
            while j < len(lines) and not END_SOLUTION.match(lines[j]):
                j += 1
            if j == len(lines):
                raise SpecError(f"{where}: '# BEGIN SOLUTION' without '# END SOLUTION'")
            i = j + 1
            if i < len(lines) and BEGIN_STUB.match(lines[i]):
                k = i + 1
                while k < len(lines) and not END_STUB.match(lines[k]):
                    stub = lines[k]
                    stripped = stub.lstrip()
                    indent = stub[: len(stub) - len(stripped)]
                    if stripped.startswith("# "):
                        out.append(indent + stripped[2:])
                    elif stripped == "#":
                        out.append("")
                    else:
                        raise SpecError(
                            f"{where}: stub line {stub!r} must be commented out with '# '"
                        )
                    k += 1
                if k == len(lines):
                    raise SpecError(f"{where}: '# BEGIN STUB' without '# END STUB'")
                i = k + 1
            else:
                out.append("...  # YOUR CODE HERE")
            continue
        if BEGIN_STUB.match(line) or END_SOLUTION.match(line) or END_STUB.match(line):
            raise SpecError(f"{where}: unexpected marker {line.strip()!r}")
        if m := SOLUTION_LINE_RE.match(line):
            body = m.group("body")
            if a := ASSIGNMENT_RE.match(body):
                out.append(f"{m.group('indent')}{a.group('target').rstrip()} = ...")
            i += 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _strip_markdown(source: str, where: str) -> str:
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        if MD_BEGIN.match(line):
            if inside:
                raise SpecError(f"{where}: nested '<!-- BEGIN SOLUTION -->'")
            inside = True
            out.append(MD_PLACEHOLDER)
        elif MD_END.match(line):
            if not inside:
                raise SpecError(f"{where}: '<!-- END SOLUTION -->' without a BEGIN")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise SpecError(f"{where}: '<!-- BEGIN SOLUTION -->' without an END")
    return "\n".join(out)


def strip_solutions(cell: NotebookNode, where: str = "cell") -> str:
    """The template text of a cell: solutions removed, stubs in their place."""
    if cell.cell_type == "markdown":
        return _strip_markdown(cell.source, where)
    if cell.cell_type == "code":
        return _strip_code(cell.source, where)
    return str(cell.source)


def solution_lines(cell: NotebookNode) -> list[str]:
    """Every line of a cell's solution regions (for the leak check)."""
    lines = cell.source.split("\n")
    found: list[str] = []
    inside = False
    for line in lines:
        if BEGIN_SOLUTION.match(line) or MD_BEGIN.match(line):
            inside = True
        elif END_SOLUTION.match(line) or MD_END.match(line):
            inside = False
        elif inside:
            found.append(line)
        elif m := SOLUTION_LINE_RE.match(line):
            found.append(m.group("body"))
    return found


def read_notebook(path: Path) -> NotebookNode:
    try:
        nb = nbformat.read(str(path), as_version=4)
    except FileNotFoundError as exc:
        raise SpecError(f"source notebook {path} does not exist") from exc
    except Exception as exc:  # nbformat raises many types for bad files
        raise SpecError(f"source notebook {path} is not a valid notebook: {exc}") from exc
    return nb


def load_source(spec: AssignmentSpec) -> NotebookNode:
    """Read the source notebook and check its markers against the spec."""
    nb = read_notebook(spec.source_path)
    seen: dict[str, str] = {}
    ids: set[str] = set()
    parameters = 0
    for index, cell in enumerate(nb.cells):
        where = f"{spec.source_path} cell {index}"
        cid = cell.get("id")
        if not cid:
            raise SpecError(f"{where}: has no cell id", hint="save it with nbformat >= 4.5")
        if cid in ids:
            raise SpecError(f"{where}: duplicate cell id {cid!r}")
        ids.add(cid)
        role = role_from_markers(cell)
        strip_solutions(cell, where)  # raises on malformed markers
        if role.role == PARAMETERS:
            parameters += 1
        if role.question:
            if role.question in seen:
                raise SpecError(f"{where}: a second answer cell for {role.question!r}")
            seen[role.question] = role.role
            q = spec.question(role.question)  # raises for unknown ids
            expected = MANUAL if q.kind == "manual" else ANSWER
            if role.role != expected:
                raise SpecError(
                    f"{where}: question {q.id!r} is kind {q.kind!r} but its cell is a "
                    f"{role.role} cell",
                    hint="manual questions use a markdown '<!-- ANSWER: id -->' cell",
                )
    if parameters > 1:
        raise SpecError(f"{spec.source_path}: more than one '# PARAMETERS' cell")
    for q in spec.questions:
        if q.kind in ("value", "function", "class", "manual") and q.id not in seen:
            raise SpecError(
                f"{spec.source_path}: question {q.id!r} has no answer cell",
                hint=f"add a cell whose first line is '# ANSWER: {q.id}'",
            )
        for ctx in q.context_cells:
            if ctx not in ids:
                raise SpecError(f"question {q.id!r}: context cell {ctx!r} is not in the source")
    return nb


def _template_metadata(cell: NotebookNode, role: CellRole, checksum: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    tags = [t for t in cell.metadata.get("tags", []) if t != "parameters"]
    grader: dict[str, Any] = {"role": role.role, "locked": role.locked}
    if role.question:
        grader["question"] = role.question
    if role.locked:
        grader["checksum"] = checksum
        meta["editable"] = False
        meta["deletable"] = False
    if role.role == PARAMETERS:
        tags.append("parameters")
    if tags:
        meta["tags"] = tags
    meta["grader"] = grader
    return meta


def make_template(spec: AssignmentSpec, source: NotebookNode | None = None) -> NotebookNode:
    """The student template, deterministic for a given source notebook."""
    source = source if source is not None else load_source(spec)
    cells = []
    for index, cell in enumerate(source.cells):
        role = role_from_markers(cell)
        text = strip_solutions(cell, f"{spec.source_path} cell {index}")
        checksum = cell_checksum(cell.cell_type, text)
        meta = _template_metadata(cell, role, checksum)
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(source=text, metadata=meta)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(source=text, metadata=meta)
        else:
            new = nbformat.v4.new_raw_cell(source=text, metadata=meta)
        new["id"] = cell["id"]
        cells.append(new)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.nbformat_minor = TEMPLATE_NBFORMAT_MINOR
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "grader": {"assignment": spec.id},
    }
    return nb


def recorded_assignment(nb: NotebookNode) -> str | None:
    """The assignment id the template recorded in the notebook's metadata, if it survived."""
    meta = nb.get("metadata", {}).get("grader")
    value = meta.get("assignment") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and value else None


def notebook_text(nb: NotebookNode) -> str:
    """Canonical, byte-stable serialisation."""
    text: str = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def template_path(spec: AssignmentSpec, assignments_root: Path | None = None) -> Path:
    root = assignments_root
    if root is None:
        root = spec.root.parent.parent / "assignments"
    return root / spec.id / spec.template


def write_template(spec: AssignmentSpec, out: Path | None = None) -> Path:
    """`grader assign`: write the template atomically and return its path."""
    path = out if out is not None else template_path(spec)
    atomic_write_text(path, notebook_text(make_template(spec)))
    return path


def template_is_current(spec: AssignmentSpec, path: Path | None = None) -> bool:
    path = path if path is not None else template_path(spec)
    return path.is_file() and path.read_text(encoding="utf-8") == notebook_text(make_template(spec))
