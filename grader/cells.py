"""The cell vocabulary: what role a notebook cell plays, read from its marker line or metadata.

A cell's role is given by its first line (readable in any editor) and, in the generated
template, by its metadata too (so a cell whose first line was edited is still found). This
module is below both authoring (which writes the markers) and assembly and execution (which
read them); it imports nothing else of the grader.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GIVEN = "given"
ANSWER = "answer"
MANUAL = "manual"
PARAMETERS = "parameters"
SELFCHECK = "selfcheck"
ROLES = (GIVEN, ANSWER, MANUAL, PARAMETERS, SELFCHECK)
LOCKED_ROLES = (GIVEN, SELFCHECK)

ANSWER_CODE_RE = re.compile(r"^\s*#\s*ANSWER:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")
ANSWER_MD_RE = re.compile(r"^\s*<!--\s*ANSWER:\s*([A-Za-z_][A-Za-z0-9_]*)\s*-->\s*$")
PARAMETERS_RE = re.compile(r"^\s*#\s*PARAMETERS\b")
SELFCHECK_RE = re.compile(r"^\s*#\s*SELFCHECK\b")
MD_PLACEHOLDER = "_Type your answer here._"


@dataclass(frozen=True)
class CellRole:
    role: str
    question: str | None = None

    @property
    def locked(self) -> bool:
        return self.role in LOCKED_ROLES


def first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line
    return ""


def role_from_markers(cell: Mapping[str, Any]) -> CellRole:
    """The role a cell's readable first-line marker gives it."""
    line = first_line(cell.get("source", ""))
    if cell.get("cell_type") == "code":
        if m := ANSWER_CODE_RE.match(line):
            return CellRole(ANSWER, m.group(1))
        if PARAMETERS_RE.match(line):
            return CellRole(PARAMETERS)
        if SELFCHECK_RE.match(line):
            return CellRole(SELFCHECK)
    elif cell.get("cell_type") == "markdown":
        if m := ANSWER_MD_RE.match(line):
            return CellRole(MANUAL, m.group(1))
    return CellRole(GIVEN)


def role_from_metadata(cell: Mapping[str, Any]) -> CellRole | None:
    meta = cell.get("metadata", {}).get("grader")
    if not isinstance(meta, dict) or meta.get("role") not in ROLES:
        return None
    question = meta.get("question")
    return CellRole(str(meta["role"]), str(question) if question else None)


def cell_role(cell: Mapping[str, Any]) -> CellRole:
    """Markers win; metadata is the fallback for a cell whose marker line was lost."""
    marked = role_from_markers(cell)
    if marked.role != GIVEN:
        return marked
    return role_from_metadata(cell) or marked


def normalise_source(source: str) -> str:
    """Line endings and trailing blanks do not count as changes."""
    lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def cell_checksum(cell_type: str, source: str) -> str:
    payload = f"{cell_type}\n{normalise_source(source)}".encode()
    return hashlib.sha256(payload).hexdigest()


ORIGIN_KEY = "grader_origin"  # metadata of an assembled cell: where it was in the student's file


def mark_origin(cell: Any, position: int, source: str) -> None:
    """Remember a cell's place in the student's own file (0-based) and its first line."""
    cell["metadata"][ORIGIN_KEY] = {"position": position, "line": first_line(source)[:60]}


def student_label(position: int, source: str) -> str:
    """A cell as the student finds it in their own file: 1-based, with its first line."""
    line = first_line(source).strip()[:60]
    return f"cell {position + 1} ({line!r})" if line else f"cell {position + 1}"


def cell_label(cell: Mapping[str, Any], index: int) -> str:
    """How to name an executed cell (`index` in the executed notebook) to the student: its
    place in their own file if it came from there, else what it is."""
    metadata = cell.get("metadata", {})
    origin = metadata.get(ORIGIN_KEY)
    if isinstance(origin, dict) and isinstance(origin.get("position"), int):
        line = str(origin.get("line", "")).strip()
        n = origin["position"] + 1
        return f"cell {n} of your notebook ({line!r})" if line else f"cell {n} of your notebook"
    line = first_line(cell.get("source", "")).strip()[:60]
    if "grader" in metadata:  # a given cell restored from the template
        return f"the given cell {line!r}" if line else "a given cell"
    return f"grader cell {index}"
