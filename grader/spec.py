"""An assignment is data: `solutions/<id>/assignment.toml` read into frozen dataclasses.

The spec names the source notebook, the reference pipeline and the hidden checks module
(all inside the assignment's solutions folder), the data set, the grading parameters, the
sandbox limits and every question with its points. `calibration.json` beside it holds the
thresholds that `grader calibrate` measured from reference runs.

See docs/authoring.md for every key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import GraderError, SpecError
from .gradebook import FILE_NAME as GRADEBOOK_FILE
from .lateness import DeadlinePolicy, parse_deadline

QUESTION_KINDS = ("value", "function", "class", "model", "manual")
PUBLIC_MODES = ("hash", "form", "none")
FORM_TYPES = ("number", "sequence", "dict", "class", "function")


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
    loader: str | None = None


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 4096
    cpu_seconds: int = 1800
    max_processes: int = 256
    max_output_mb: int = 20
    max_file_mb: int = 200
    max_disk_mb: int = 512
    cpus: float = 1.0
    network: bool = False


@dataclass(frozen=True)
class GradingSpec:
    parameters: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    threads: int = 1
    cell_timeout: int = 300
    notebook_timeout: int = 1200
    kernel_name: str = "python3"
    # a cell's CPU-time limit: factor * the reference's own time for it + margin (seconds)
    cell_cpu_factor: float = 4.0
    cell_cpu_margin: float = 10.0


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
class CurveSpec:
    """`[feedback.curve]`: a training curve to plot in the feedback, the student's next to
    the reference's at the student's own hyperparameters."""

    variable: str  # the notebook's list of values, one per epoch
    reference: str  # a function of checks.py: (ctx, parameters) -> list of values, or None
    parameters: tuple[str, ...] = ()  # notebook variables passed to the reference function
    title: str = "Training curve"
    ylabel: str = "value"


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
    curve: CurveSpec | None = None
    # the assignment's files as they were when this spec was read (see files_digest): what
    # a process holding this spec grades and draws with, even if they are edited meanwhile
    files_digest: str = field(default="", repr=False, compare=False)

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


def _type_problem(annotation: str, value: Any) -> tuple[str | None, Any]:
    """(what is wrong or None, the value converted) for a field annotated `annotation`."""
    kind = annotation.removesuffix(" | None")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return (None, value) if isinstance(value, str) else ("a string", value)
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (None, value) if ok else ("a whole number", value)
    if kind == "float":
        if number and not math.isfinite(value):
            return "a finite number", value
        return (None, float(value)) if number else ("a number", value)
    if kind == "bool":
        return (None, value) if isinstance(value, bool) else ("true or false", value)
    if kind == "dict[str, float]":
        if isinstance(value, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value.values()
        ):
            return None, {str(k): float(v) for k, v in value.items()}
        return "a table of numbers", value
    if kind.startswith("dict["):
        return (None, value) if isinstance(value, dict) else ("a table", value)
    if kind == "tuple[str, ...]":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return None, tuple(value)
        return "a list of strings", value
    return None, value


# Limits and timeouts that must be above zero (a negative one reached setrlimit or nbclient,
# where it failed every run or meant "no limit"); `seed` and `max_output_mb` may be 0.
POSITIVE = {
    "GradingSpec": ("threads", "cell_timeout", "notebook_timeout"),
    "SandboxLimits": ("memory_mb", "cpu_seconds", "max_processes", "max_file_mb", "max_disk_mb", "cpus"),
}
NOT_NEGATIVE = {"GradingSpec": ("seed",), "SandboxLimits": ("max_output_mb",)}


def check_ranges(obj: Any, where: str) -> None:
    """The same bounds for a spec table changed after loading (command-line overrides)."""
    _in_range(type(obj), {f.name: getattr(obj, f.name) for f in fields(obj)}, where)


def _in_range(cls: type, values: dict[str, Any], where: str) -> None:
    for key in POSITIVE.get(cls.__name__, ()):
        if key in values and values[key] <= 0:
            raise SpecError(f"{where}: {key} must be above 0, not {values[key]!r}")
    for key in NOT_NEGATIVE.get(cls.__name__, ()):
        if key in values and values[key] < 0:
            raise SpecError(f"{where}: {key} must be 0 or more, not {values[key]!r}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SpecError(
            f"{where}: unknown key(s) {', '.join(unknown)}",
            hint=f"allowed keys: {', '.join(sorted(known))} (see docs/authoring.md)",
        )
    values = {}
    for key, value in data.items():
        problem, values[key] = _type_problem(str(known[key].type), value)
        if problem:
            raise SpecError(
                f"{where}: {key} must be {problem}, not {type(value).__name__} {value!r:.60}"
            )
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise SpecError(f"{where}: missing key(s) {', '.join(missing)}")
    _in_range(cls, values, where)
    return cls(**values)


def _shape(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    )


def check_form(form: dict[str, Any], where: str) -> None:
    """A public form rule's keys and types (see docs/authoring.md)."""
    if not form:
        return
    kind = form.get("type")
    if kind not in FORM_TYPES:
        raise SpecError(f"{where}: form type {kind!r}", hint=f"use one of {', '.join(FORM_TYPES)}")
    for key in ("min", "max", "length"):
        if key in form and (
            not isinstance(form[key], int | float) or isinstance(form[key], bool)
        ):
            raise SpecError(f"{where}: form {key} must be a number")
    for key in ("keys", "item_keys", "numeric_item_keys", "arguments"):
        if key in form and not (
            isinstance(form[key], list) and all(isinstance(k, str) for k in form[key])
        ):
            raise SpecError(f"{where}: form {key} must be a list of strings")
    if kind in ("class", "function") and not isinstance(form.get("name"), str):
        raise SpecError(f"{where}: a {kind} form needs name = \"<the {kind}'s name>\"")
    if kind == "class":
        for key in ("input_shape", "output_shape"):
            if not _shape(form.get(key)):
                raise SpecError(
                    f"{where}: a class form needs {key} = [positive whole numbers]",
                    hint="e.g. input_shape = [2, 784], output_shape = [2, 10]",
                )


def _question(qid: str, data: dict[str, Any], where: str) -> Question:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: [questions.{qid}] must be a table")
    data = dict(data)
    data["id"] = qid
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
    check_form(q.form, f"{where} [questions.{qid}]")
    if q.public == "hash" and q.kind != "value":
        raise SpecError(f"{where}: question {qid!r}: public = 'hash' is for value questions")
    return q


def load_spec(path: str | Path) -> AssignmentSpec:
    """Read an assignment from its folder or its assignment.toml."""
    path = Path(path)
    if path.is_dir():
        path = path / "assignment.toml"
    if not path.is_file():
        raise SpecError(
            f"no assignment spec at {path}",
            hint="pass an assignment folder such as solutions/<id>, or its assignment.toml",
        )
    digest = files_digest(path.parent)  # before reading: an edit meanwhile only redraws
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    where = str(path)
    meta = _table(data, "assignment", where)
    for key in ("id", "source"):
        if key not in meta:
            raise SpecError(f"{where}: [assignment] needs {key!r}")
    for key in ("id", "title", "source", "template", "reference", "checks"):
        if key in meta and not isinstance(meta[key], str):
            raise SpecError(f"{where}: [assignment] {key} must be a string")
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
    feedback = _table(data, "feedback", where)
    curve_data = _table(feedback, "curve", f"{where} [feedback]")
    curve = _build(CurveSpec, curve_data, f"{where} [feedback.curve]") if curve_data else None
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
        curve=curve,
        files_digest=digest,
    )


NOT_THE_ASSIGNMENT = ("~", ".pyc", ".swp")  # editor backups, bytecode


def assignment_files(root: Path) -> Iterator[tuple[str, Path]]:
    """The assignment folder's files, as (path in the folder, path), in order: what a batch's
    fingerprint covers, what travels to a Dask worker and into a Gradescope autograder (a
    check may read any of them). Not the assignment: hidden files and folders (Jupyter's
    .ipynb_checkpoints), __pycache__, editor backups, and a grader output folder kept inside
    it (one holding a gradebook: grades, students' work). A folder linked in from elsewhere
    is followed; a link to a folder inside it (walked anyway) or around it (the course
    folder, other classes' grades) is not."""
    top = root.resolve()
    found: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        here = Path(folder)
        real = here.resolve()
        if real in seen or (here != root and (here / GRADEBOOK_FILE).exists()):
            dirs[:] = []  # walked already (a loop of links), or grader output
            continue
        seen.add(real)
        keep = []
        for d in dirs:
            if d.startswith(".") or d == "__pycache__":
                continue
            if (here / d).is_symlink():
                target = (here / d).resolve()
                if target == top or top in target.parents or target in top.parents:
                    continue
            keep.append(d)
        dirs[:] = keep
        for name in files:
            path = here / name
            if name.startswith(".") or name.endswith(NOT_THE_ASSIGNMENT):
                continue
            if name.startswith(GRADEBOOK_FILE) or not path.is_file():
                continue
            found.append((path.relative_to(root).as_posix(), path))
    yield from sorted(found)


def as_now(spec: AssignmentSpec) -> AssignmentSpec:
    """The assignment as its files are now, for a long-lived process (the review page):
    `spec` itself if none changed since it was read, else read again; one that cannot be
    read (saved half-typed, a file removed meanwhile) keeps `spec`, with a warning."""
    try:
        if files_digest(spec.root) == spec.files_digest:
            return spec
        return load_spec(spec.root)
    except (GraderError, OSError) as exc:
        logging.getLogger("grader").warning(
            "the assignment cannot be read again, using it as it was: %s", exc
        )
        return spec


def files_digest(root: Path) -> str:
    """A digest of the assignment folder's files (assignment_files)."""
    return digest_of((rel, path.read_bytes()) for rel, path in assignment_files(root))


def digest_of(files: Iterable[tuple[str, bytes]]) -> str:
    """A digest of files given as (path in the folder, bytes), each delimited by its length."""
    digest = hashlib.sha256()
    for rel, data in files:
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def find_assignment(name_or_path: str | Path, search_root: Path | None = None) -> AssignmentSpec:
    """Resolve an assignment id (looked up under solutions/) or a path to its folder."""
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
        hint="run from the repository root, or pass the folder (e.g. solutions/<id>)",
    )
