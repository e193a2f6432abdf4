"""Read a submission, whatever state it is in, and rebuild it around the template.

Instructor cells come from the source, never from the submission: the graded notebook is the
template's cells in the template's order, with the student's answer cells (found by their
marker line, their metadata, or failing both their content) put back in their places and
the student's own extra cells kept after the cell they followed. Locked cells that were
edited, deleted or had their metadata stripped are restored and reported.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings as warnings_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .cells import (
    ANSWER,
    LOCKED_ROLES,
    MANUAL,
    MD_PLACEHOLDER,
    PARAMETERS,
    CellRole,
    cell_checksum,
    cell_role,
    first_line,
    mark_origin,
    normalise_source,
    student_label,
)
from .errors import SubmissionError
from .matching import (
    FUZZY_BUDGET_SECONDS,
    Candidate,
    FuzzyMatcher,
    answer_names,
    choose_candidate,
    defined_names,
)
from .results import writable

MAX_SUBMISSION_BYTES = 200 * 2**20
_ID_OK = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


@dataclass
class Assembly:
    notebook: NotebookNode
    changed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    manual_answers: dict[str, str] = field(default_factory=dict)
    answer_sources: dict[str, str] = field(default_factory=dict)
    student_sources: list[str] = field(default_factory=list)
    seconds: float = 0.0


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
    data = writable(data)  # a lone surrogate (JSON "\\ud800") could never be written out
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


def _repair_ids(cells: Sequence[object]) -> None:
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


def _label(cell: NotebookNode, position: int) -> str:
    """A cell named as the student finds it in their own file."""
    return student_label(position, cell.get("source", ""))


def manual_text(source: str, template_source: str = "") -> str:
    """The student's own text of a free-response answer: the marker line, the template's
    prompt lines and the placeholder removed, so an empty answer is visibly empty."""
    prompt = [ln.strip() for ln in template_source.split("\n") if ln.strip()]
    prompt = [p for p in prompt if not re.match(r"^<!--\s*ANSWER:", p) and p != MD_PLACEHOLDER]
    lines = []
    for ln in source.split("\n"):
        text = ln.strip()
        if re.match(r"^<!--\s*ANSWER:", text) or text == MD_PLACEHOLDER:
            continue
        for p in prompt:  # a prompt line, or the student's text typed after it on that line
            if text.startswith(p):
                ln = text[len(p) :]
                break
        lines.append(ln)
    return "\n".join(lines).strip()


def assemble(
    template: NotebookNode, submission: NotebookNode, fuzzy_budget: float = FUZZY_BUDGET_SECONDS
) -> Assembly:
    """Rebuild the submission around the template (see the module docstring)."""
    started = time.monotonic()
    t_roles = [cell_role(c) for c in template.cells]
    t_norm = [normalise_source(c.source) for c in template.cells]
    t_by_id = {c["id"]: i for i, c in enumerate(template.cells)}
    t_checksum = {
        cell_checksum(c.cell_type, c.source): i
        for i, c in enumerate(template.cells)
        if t_roles[i].locked
    }
    t_question = {r.question: i for i, r in enumerate(t_roles) if r.question}
    t_parameters = next((i for i, r in enumerate(t_roles) if r.role == PARAMETERS), None)

    matched: dict[int, list[tuple[int, NotebookNode]]] = {}  # template index -> submission cells
    asm = Assembly(notebook=nbformat.v4.new_notebook())
    pending: list[_Extra] = []
    last_anchor = -1

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
            matched.setdefault(target, []).append((s_index, cell))
            last_anchor = target
        else:
            pending.append(_Extra(last_anchor, s_index, cell))

    # Cells nothing claimed: an edited copy of a locked cell whose metadata was stripped, or
    # the student's own cell.
    matcher = FuzzyMatcher(fuzzy_budget)
    unmatched_locked = [i for i, r in enumerate(t_roles) if r.locked and i not in matched]
    extras_list: list[_Extra] = []
    for extra in pending:
        cell = extra.cell
        others = [
            (i, t_norm[i]) for i in unmatched_locked if template.cells[i].cell_type == cell.cell_type
        ]
        best = matcher.best(normalise_source(cell.get("source", "")), others) if others else None
        if best is not None:
            matched.setdefault(best, []).append((extra.position, cell))
            unmatched_locked.remove(best)
        else:
            extras_list.append(extra)
    if matcher.budget_exhausted:
        asm.warnings.append(
            f"matching edited given cells took longer than {fuzzy_budget:g} s and was stopped "
            f"after {matcher.pairs_compared} comparisons; the cells not compared were kept as "
            "your own cells"
        )
    _answers_by_content(template, t_roles, t_norm, matched, extras_list, asm)
    extras: dict[int, list[_Extra]] = {}
    for extra in extras_list:
        extras.setdefault(extra.after, []).append(extra)

    cells: list[NotebookNode] = []

    def emit_extras(after: int) -> None:
        for extra in extras.get(after, []):
            new = _clean(extra.cell)
            mark_origin(new, extra.position, extra.cell.get("source", ""))
            cells.append(new)
            if new.cell_type == "code":
                asm.student_sources.append(new.source)

    emit_extras(-1)
    for t_index, t_cell in enumerate(template.cells):
        t_role: CellRole = t_roles[t_index]
        found = matched.get(t_index, [])
        line = first_line(t_cell.source).strip()[:60]
        label = f"the given cell {line!r}" if line else f"the given cell {t_index + 1}"
        if t_role.role in LOCKED_ROLES:
            new = _copy(t_cell)
            cells.append(new)
            if not found:
                asm.changed.append(f"{label} was deleted; restored from the source")
            else:
                position, first = found[0]
                mark_origin(new, position, first.get("source", ""))
                label = _label(first, position)
                same = [c for _, c in found if normalise_source(c.get("source", "")) == t_norm[t_index]]
                if not same:
                    asm.changed.append(f"{label} was edited; the original was restored and graded")
                if len(found) > 1:
                    asm.warnings.append(f"{label} appears {len(found)} times; kept once")
        else:
            chosen = _choose(found, t_norm[t_index])
            if chosen is None:
                new = _copy(t_cell)
                if t_role.question:
                    asm.warnings.append(
                        f"no answer cell for {t_role.question!r} was found; graded as blank"
                    )
            else:
                position, chosen_cell = chosen
                new = _clean(chosen_cell)
                new.metadata = json.loads(json.dumps(t_cell.metadata))
                mark_origin(new, position, chosen_cell.get("source", ""))
                if t_role.role == PARAMETERS:
                    new.metadata["tags"] = ["parameters"]
                if len(found) > 1 and t_role.question:
                    asm.warnings.append(
                        f"{len(found)} answer cells for {t_role.question!r}; the last answered "
                        f"one was graded ({_label(chosen_cell, position)})"
                    )
            cells.append(new)
            if t_role.role == MANUAL and t_role.question:
                asm.manual_answers[t_role.question] = manual_text(new.source, t_cell.source)
            if t_role.role == ANSWER and t_role.question:
                asm.answer_sources[t_role.question] = new.source
            if new.cell_type == "code" and t_role.role in (ANSWER, PARAMETERS):
                asm.student_sources.append(new.source)
        emit_extras(t_index)

    _repair_ids(cells)  # a student's cell may carry the id of a given one
    nb = nbformat.v4.new_notebook(cells=cells, metadata=json.loads(json.dumps(template.metadata)))
    nb.nbformat_minor = template.nbformat_minor
    asm.notebook = nb
    asm.seconds = round(time.monotonic() - started, 3)
    return asm


@dataclass
class _Extra:
    """A submission cell that no marker, metadata or checksum placed."""

    after: int  # the template cell it followed in the student's file (-1: before them all)
    position: int  # its index in the student's file
    cell: NotebookNode


def _answers_by_content(
    template: NotebookNode,
    t_roles: list[CellRole],
    t_norm: list[str],
    matched: dict[int, list[tuple[int, NotebookNode]]],
    extras: list[_Extra],
    asm: Assembly,
) -> None:
    """An answer with no cell (or only its blank stub) is taken from the student's own cell
    that binds its name, by `matching.choose_candidate`'s rule; the feedback says which."""
    locked = [i for i, r in enumerate(t_roles) if r.locked]
    bound: dict[int, set[str]] = {}
    for t_index, role in enumerate(t_roles):
        t_cell = template.cells[t_index]
        if role.role != ANSWER or not role.question or t_cell.cell_type != "code":
            continue
        found = matched.get(t_index, [])
        if any(normalise_source(c.get("source", "")) != t_norm[t_index] for _, c in found):
            continue  # answered in its own cell
        names = answer_names(role.question, t_cell.source)
        candidates = []
        for extra in extras:
            if extra.cell.cell_type != "code":
                continue
            if extra.position not in bound:
                bound[extra.position] = defined_names(extra.cell.get("source", ""))
            hit = bound[extra.position] & names
            if hit:
                candidates.append(Candidate(extra.position, extra.after, frozenset(hit)))
        low = max((i for i in locked if i < t_index), default=-1)
        high = min((i for i in locked if i > t_index), default=len(template.cells))
        picked = choose_candidate(candidates, (low, high))
        if picked is None:
            continue
        candidate, why = picked
        extra = next(e for e in extras if e.position == candidate.position)
        extras.remove(extra)
        matched[t_index] = [(extra.position, extra.cell)]
        what = ", ".join(sorted(candidate.names))
        asm.warnings.append(
            f"no '# ANSWER: {role.question}' cell holds an answer; "
            f"{_label(extra.cell, extra.position)} was graded as the answer to "
            f"{role.question!r}: it defines {what} ({why})"
        )


def _choose(
    found: list[tuple[int, NotebookNode]], stub: str
) -> tuple[int, NotebookNode] | None:
    """Among cells claiming one answer, the last one that differs from the blank stub."""
    if not found:
        return None
    answered = [f for f in found if normalise_source(f[1].get("source", "")) != stub]
    return (answered or found)[-1]


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
