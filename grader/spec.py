"""An assignment is data: `solutions/<id>/assignment.toml` read into frozen dataclasses.

The spec names the source notebook, the reference pipeline and the hidden checks module
(all inside the assignment's solutions folder), the data set, the grading parameters, the
sandbox limits and every question with its points. `calibration.json` beside it holds the
thresholds that `grader calibrate` measured from reference runs.

See docs/authoring.md for every key.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import SpecError
from .lateness import DeadlinePolicy, parse_deadline

QUESTION_KINDS = ("value", "class", "model", "manual")
PUBLIC_MODES = ("hash", "form", "none")


@dataclass(frozen=True)
class DatasetSpec:
    filename: str
    url: str
    sha256: str
    size: int | None = None
    env: str | None = None
    package: str | None = None
    package_resource: str | None = None
    stage_as: str | None = None
    validator: str | None = None


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 4096
    cpu_seconds: int = 1800
    max_processes: int = 256
    max_output_mb: int = 20
    max_file_mb: int = 200
    network: bool = False


@dataclass(frozen=True)
class GradingSpec:
    parameters: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    threads: int = 1
    cell_timeout: int = 300
    notebook_timeout: int = 1200
    kernel_name: str = "python3"


@dataclass(frozen=True)
class Question:
    id: str
    kind: str
    points: float
    title: str = ""
    check: str | None = None
    extract: str | None = None
    public: str = "none"
    context_cells: tuple[str, ...] = ()
    subchecks: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    form: dict[str, Any] = field(default_factory=dict)
    hint: str = ""

    @property
    def auto(self) -> bool:
        return self.kind != "manual"

    @property
    def variable(self) -> str:
        """The name the answer has in the student's notebook."""
        return self.extract or self.id


@dataclass(frozen=True)
class AssignmentSpec:
    id: str
    title: str
    root: Path
    source: str
    template: str
    reference: str | None
    checks: str | None
    dataset: DatasetSpec | None
    grading: GradingSpec
    sandbox: SandboxLimits
    questions: tuple[Question, ...]
    calibration: dict[str, Any]
    deadline: DeadlinePolicy | None = None  # [deadline]: grader/lateness.py

    @property
    def source_path(self) -> Path:
        return self.root / self.source

    @property
    def reference_path(self) -> Path | None:
        return self.root / self.reference if self.reference else None

    @property
    def checks_path(self) -> Path | None:
        return self.root / self.checks if self.checks else None

    @property
    def calibration_path(self) -> Path:
        return self.root / "calibration.json"

    def question(self, qid: str) -> Question:
        for q in self.questions:
            if q.id == qid:
                return q
        raise SpecError(f"assignment {self.id!r} has no question {qid!r}")

    @property
    def auto_questions(self) -> tuple[Question, ...]:
        return tuple(q for q in self.questions if q.auto)

    @property
    def manual_questions(self) -> tuple[Question, ...]:
        return tuple(q for q in self.questions if not q.auto)

    @property
    def auto_points(self) -> float:
        return sum(q.points for q in self.auto_questions)


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"{where}: [{key}] must be a table")
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            hint=f"allowed keys: {', '.join(sorted(known))} (see docs/authoring.md)",
        )
    try:
        return cls(**data)
    except TypeError as exc:
        raise SpecError(f"{where}: {exc}") from exc


def _question(qid: str, data: dict[str, Any], where: str) -> Question:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: [questions.{qid}] must be a table")
    data = dict(data)
    data["id"] = qid
    if "context_cells" in data:
        data["context_cells"] = tuple(data["context_cells"])
    q: Question = _build(Question, data, f"{where} [questions.{qid}]")
    if q.kind not in QUESTION_KINDS:
        raise SpecError(
            f"{where}: question {qid!r} has kind {q.kind!r}",
            hint=f"use one of {', '.join(QUESTION_KINDS)}",
        )
    if q.public not in PUBLIC_MODES:
        raise SpecError(
            f"{where}: question {qid!r} has public = {q.public!r}",
            hint=f"use one of {', '.join(PUBLIC_MODES)}",
        )
    if q.points < 0:
        raise SpecError(f"{where}: question {qid!r} has negative points")
    if q.subchecks and any(w < 0 for w in q.subchecks.values()):
        raise SpecError(f"{where}: question {qid!r} has a negative sub-check weight")
    return q


def load_spec(path: str | Path) -> AssignmentSpec:
    """Read an assignment from its folder or its assignment.toml."""
    path = Path(path)
    if path.is_dir():
        path = path / "assignment.toml"
    if not path.is_file():
        raise SpecError(
            f"no assignment spec at {path}",
            hint="pass an assignment folder such as solutions/mnist_nn, or its assignment.toml",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    where = str(path)
    meta = _table(data, "assignment", where)
    for key in ("id", "source"):
        if key not in meta:
            raise SpecError(f"{where}: [assignment] needs {key!r}")
    dataset_data = data.get("dataset")
    dataset = _build(DatasetSpec, dataset_data, f"{where} [dataset]") if dataset_data else None
    grading = _build(GradingSpec, _table(data, "grading", where), f"{where} [grading]")
    sandbox = _build(SandboxLimits, _table(data, "sandbox", where), f"{where} [sandbox]")
    questions = tuple(
        _question(qid, qdata, where) for qid, qdata in _table(data, "questions", where).items()
    )
    if not questions:
        raise SpecError(f"{where}: the assignment has no [questions.*]")
    deadline_data = _table(data, "deadline", where)
    deadline = parse_deadline(deadline_data, f"{where} [deadline]") if deadline_data else None
    root = path.parent
    calibration: dict[str, Any] = {}
    cal_path = root / "calibration.json"
    if cal_path.is_file():
        try:
            calibration = json.loads(cal_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"{cal_path}: not valid JSON: {exc}", hint="rerun `grader calibrate`"
            ) from exc
    return AssignmentSpec(
        id=str(meta["id"]),
        title=str(meta.get("title", meta["id"])),
        root=root,
        source=str(meta["source"]),
        template=str(meta.get("template", f"{meta['id']}.ipynb")),
        reference=meta.get("reference"),
        checks=meta.get("checks"),
        dataset=dataset,
        grading=grading,
        sandbox=sandbox,
        questions=questions,
        calibration=calibration,
        deadline=deadline,
    )


def find_assignment(name_or_path: str | Path, search_root: Path | None = None) -> AssignmentSpec:
    """Resolve `mnist_nn` (looked up under solutions/) or a path to an assignment folder."""
    candidate = Path(name_or_path)
    if candidate.exists():
        return load_spec(candidate)
    roots = [search_root] if search_root else [Path.cwd(), *Path.cwd().parents]
    for root in roots:
        folder = root / "solutions" / str(name_or_path)
        if (folder / "assignment.toml").is_file():
            return load_spec(folder)
    raise SpecError(
        f"no assignment named {str(name_or_path)!r}",
        hint="run from the repository root, or pass the folder (e.g. solutions/mnist_nn)",
    )
