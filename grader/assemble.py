"""Read a submission, whatever state it is in, and rebuild it around the template.

Instructor cells come from the source, never from the submission: the graded notebook is the
template's cells in the template's order, with the student's answer cells (found by their
marker line, their metadata, or failing both their content) put back in their places and
the student's own extra cells kept after the cell they followed. Locked cells that were
edited, deleted or had their metadata stripped are restored and reported.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import warnings as warnings_module
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .authoring import (
    ANSWER,
    LOCKED_ROLES,
    MANUAL,
    MD_PLACEHOLDER,
    PARAMETERS,
    CellRole,
    cell_checksum,
    cell_role,
    first_line,
    normalise_source,
)
from .errors import SubmissionError

MAX_SUBMISSION_BYTES = 200 * 2**20
FUZZY_LOCKED_RATIO = 0.75
_ID_OK = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


@dataclass
class Assembly:
    notebook: NotebookNode
    changed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    manual_answers: dict[str, str] = field(default_factory=dict)
    answer_sources: dict[str, str] = field(default_factory=dict)
    student_sources: list[str] = field(default_factory=list)


def decode_bytes(raw: bytes, name: str, warnings: list[str]) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        warnings.append(
            f"{name}: the file is not valid UTF-8 (byte {exc.start}); "
            "undecodable bytes were replaced"
        )
        return raw.decode("utf-8", errors="replace")


def parse_notebook(raw: bytes, name: str) -> tuple[NotebookNode, list[str]]:
    """A v4 notebook from bytes, or a SubmissionError that says what is wrong with it."""
    warnings: list[str] = []
    if not raw.strip():
        raise SubmissionError(f"{name} is empty", hint="the student should re-submit the notebook")
    if raw.startswith(b"PK\x03\x04") or raw.startswith(b"PK\x05\x06"):
        raise SubmissionError(
            f"{name} is a zip archive that could not be opened, not a notebook",
            hint="ask the student to upload the .ipynb file itself",
        )
    if len(raw) > MAX_SUBMISSION_BYTES:
        raise SubmissionError(f"{name} is larger than {MAX_SUBMISSION_BYTES // 2**20} MB")
    text = decode_bytes(raw, name, warnings)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionError(
            f"{name} is not a notebook: not valid JSON ({exc.msg} at line {exc.lineno})",
            hint="the file may be truncated or saved in another format; ask for a re-upload",
        ) from None
    if not isinstance(data, dict) or not ("cells" in data or "worksheets" in data):
        raise SubmissionError(f"{name} is JSON but not a Jupyter notebook (no cells)")
    major = data.get("nbformat")
    if major not in (3, 4):
        raise SubmissionError(f"{name}: unsupported notebook format version {major!r}")
    if major == 4 and isinstance(data.get("cells"), list):
        _repair_ids(data["cells"])
    try:
        with warnings_module.catch_warnings():
            warnings_module.simplefilter("ignore")
            nb = nbformat.reads(json.dumps(data), as_version=4)
    except Exception as exc:
        raise SubmissionError(f"{name}: the notebook structure is invalid: {exc}") from None
    if major == 3:
        warnings.append(f"{name}: an nbformat v3 notebook, converted to v4")
    for i, cell in enumerate(nb.cells):
        if not isinstance(cell, dict) or "cell_type" not in cell:
            raise SubmissionError(f"{name}: cell {i} is not a notebook cell")
        source = cell.get("source", "")
        if isinstance(source, list):
            cell["source"] = "".join(str(s) for s in source)
        elif not isinstance(source, str):
            cell["source"] = str(source)
        cell.setdefault("metadata", {})
    _repair_ids(nb.cells)  # again: a v3 notebook gets its ids in the conversion
    return nb, warnings


def _repair_ids(cells: list[object]) -> None:
    seen: set[str] = set()
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            continue
        cid = cell.get("id")
        if not isinstance(cid, str) or not _ID_OK.match(cid) or cid in seen:
            cid = f"cell-{i}"
            while cid in seen:
                cid += "x"
            cell["id"] = cid
        seen.add(cid)


def read_submission(path: Path) -> tuple[NotebookNode, list[str]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SubmissionError(f"cannot read {path}: {exc.strerror}") from None
    return parse_notebook(raw, path.name)


def read_zip_member(archive: Path, member: str) -> tuple[NotebookNode, list[str]]:
    try:
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(member)
            if info.file_size > MAX_SUBMISSION_BYTES:
                raise SubmissionError(f"{archive.name}:{member} is too large")
            raw = zf.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise SubmissionError(f"cannot read {member} from {archive.name}: {exc}") from None
    return parse_notebook(raw, f"{archive.name}:{member}")


def _clean(cell: NotebookNode) -> NotebookNode:
    """A fresh copy of a student cell: source only, no outputs, no stale metadata."""
    if cell.cell_type == "code":
        new = nbformat.v4.new_code_cell(source=cell.source)
    elif cell.cell_type == "markdown":
        new = nbformat.v4.new_markdown_cell(source=cell.source)
    else:
        new = nbformat.v4.new_raw_cell(source=cell.source)
    new["id"] = cell["id"]
    return new


def _copy(cell: NotebookNode) -> NotebookNode:
    new: NotebookNode = nbformat.from_dict(json.loads(json.dumps(cell)))
    return new


def _label(cell: NotebookNode, index: int) -> str:
    line = first_line(cell.get("source", ""))[:60]
    return f"cell {index} ({line!r})" if line else f"cell {index}"


def manual_text(source: str) -> str:
    lines = [
        ln
        for ln in source.split("\n")
        if not re.match(r"^\s*<!--\s*ANSWER:", ln) and ln.strip() != MD_PLACEHOLDER
    ]
    return "\n".join(lines).strip()


def assemble(template: NotebookNode, submission: NotebookNode) -> Assembly:
    """Rebuild the submission around the template (see the module docstring)."""
    t_roles = [cell_role(c) for c in template.cells]
    t_by_id = {c["id"]: i for i, c in enumerate(template.cells)}
    t_checksum = {
        cell_checksum(c.cell_type, c.source): i
        for i, c in enumerate(template.cells)
        if t_roles[i].locked
    }
    t_question = {r.question: i for i, r in enumerate(t_roles) if r.question}
    t_parameters = next((i for i, r in enumerate(t_roles) if r.role == PARAMETERS), None)

    matched: dict[int, list[tuple[int, NotebookNode]]] = {}  # template index -> submission cells
    extras: dict[int, list[NotebookNode]] = {}
    asm = Assembly(notebook=nbformat.v4.new_notebook())
    pending: list[tuple[int, NotebookNode]] = []
    last_anchor = -1

    def anchor(t_index: int, s_index: int, cell: NotebookNode) -> None:
        nonlocal last_anchor
        matched.setdefault(t_index, []).append((s_index, cell))
        last_anchor = t_index

    for s_index, cell in enumerate(submission.cells):
        role = cell_role(cell)
        target: int | None = None
        if role.question and role.question in t_question:
            t_i = t_question[role.question]
            if template.cells[t_i].cell_type == cell.cell_type:
                target = t_i
        elif role.role == PARAMETERS and t_parameters is not None:
            target = t_parameters
            if cell.cell_type != "code":
                target = None
        if target is None and role.role not in (ANSWER, MANUAL, PARAMETERS):
            checksum = cell_checksum(cell.cell_type, cell.get("source", ""))
            if checksum in t_checksum:
                target = t_checksum[checksum]
            elif cell["id"] in t_by_id and t_roles[t_by_id[cell["id"]]].locked:
                target = t_by_id[cell["id"]]
        if target is not None:
            anchor(target, s_index, cell)
        else:
            pending.append((last_anchor, cell))

    # Cells nothing claimed: an edited copy of a locked cell whose metadata was stripped, or
    # the student's own cell.
    unmatched_locked = [i for i, r in enumerate(t_roles) if r.locked and i not in matched]
    for after, cell in pending:
        best, best_ratio = None, 0.0
        text = normalise_source(cell.get("source", ""))
        if text:
            for i in unmatched_locked:
                t_cell = template.cells[i]
                if t_cell.cell_type != cell.cell_type:
                    continue
                ratio = difflib.SequenceMatcher(
                    None, normalise_source(t_cell.source), text, autojunk=False
                ).ratio()
                if ratio > best_ratio:
                    best, best_ratio = i, ratio
        if best is not None and best_ratio >= FUZZY_LOCKED_RATIO:
            matched.setdefault(best, []).append((-1, cell))
            unmatched_locked.remove(best)
        else:
            extras.setdefault(after, []).append(cell)

    cells: list[NotebookNode] = []

    def emit_extras(after: int) -> None:
        for cell in extras.get(after, []):
            new = _clean(cell)
            cells.append(new)
            if new.cell_type == "code":
                asm.student_sources.append(new.source)

    emit_extras(-1)
    for t_index, t_cell in enumerate(template.cells):
        t_role: CellRole = t_roles[t_index]
        found = matched.get(t_index, [])
        label = _label(t_cell, t_index)
        if t_role.role in LOCKED_ROLES:
            cells.append(_copy(t_cell))
            if not found:
                asm.changed.append(f"{label} was deleted; restored from the source")
            else:
                same = [
                    c
                    for _, c in found
                    if normalise_source(c.get("source", "")) == normalise_source(t_cell.source)
                ]
                if not same:
                    asm.changed.append(f"{label} was edited; the original was restored and graded")
                if len(found) > 1:
                    asm.warnings.append(f"{label} appears {len(found)} times; kept once")
        else:
            chosen = _choose(found, t_cell)
            if chosen is None:
                new = _copy(t_cell)
                if t_role.question:
                    asm.warnings.append(
                        f"no answer cell for {t_role.question!r} was found; graded as blank"
                    )
            else:
                new = _clean(chosen)
                new.metadata = json.loads(json.dumps(t_cell.metadata))
                if t_role.role == PARAMETERS:
                    new.metadata["tags"] = ["parameters"]
                if len(found) > 1 and t_role.question:
                    asm.warnings.append(
                        f"{len(found)} answer cells for {t_role.question!r}; the last answered "
                        "one was graded"
                    )
            cells.append(new)
            if t_role.role == MANUAL and t_role.question:
                asm.manual_answers[t_role.question] = manual_text(new.source)
            if t_role.role == ANSWER and t_role.question:
                asm.answer_sources[t_role.question] = new.source
            if new.cell_type == "code" and t_role.role in (ANSWER, PARAMETERS):
                asm.student_sources.append(new.source)
        emit_extras(t_index)

    nb = nbformat.v4.new_notebook(cells=cells, metadata=json.loads(json.dumps(template.metadata)))
    nb.nbformat_minor = template.nbformat_minor
    asm.notebook = nb
    return asm


def _choose(found: list[tuple[int, NotebookNode]], t_cell: NotebookNode) -> NotebookNode | None:
    """Among cells claiming one answer, the last one that differs from the blank stub."""
    if not found:
        return None
    stub = normalise_source(t_cell.source)
    answered = [c for _, c in found if normalise_source(c.get("source", "")) != stub]
    return (answered or [c for _, c in found])[-1]


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
