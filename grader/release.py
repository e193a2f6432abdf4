"""The student bundle, its public checks, the leak check, and `grader validate`.

The bundle is the template plus `selfcheck.py` with the PUBLIC checks filled in: salted
hashes of normalised answers (for `public = "hash"` questions, whose solution is a literal
`name = value  # SOLUTION` line) and form rules. Nothing in it comes from the hidden checks,
the reference, the calibration or a solution region: `leak_check` proves that for every file.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from . import selfcheck
from .authoring import (
    ANSWER,
    SOLUTION_LINE_RE,
    load_source,
    make_template,
    notebook_text,
    role_from_markers,
    solution_lines,
    template_is_current,
    template_path,
)
from .errors import SpecError
from .fileio import atomic_write_text
from .spec import AssignmentSpec

PUBLIC_PLACEHOLDER = "PUBLIC_CHECKS: dict[str, Any] = {}"
MIN_LEAK_LINE = 12
# A hashed answer among fewer candidates than this is found by trying them all: sha256 runs
# at about 10^7 a second on a laptop, so 10^9 candidates take minutes.
SMALL_ANSWER_SPACE = 10**9


def salt_for(spec: AssignmentSpec) -> str:
    """Deterministic per source notebook, so a release is reproducible byte for byte."""
    digest = hashlib.sha256(b"grader-public-salt\0" + spec.source_path.read_bytes())
    return digest.hexdigest()[:32]


def solution_value(source: NotebookNode, qid: str, variable: str) -> Any:
    """The literal value of `variable = <literal>  # SOLUTION` in the question's answer cell."""
    for cell in source.cells:
        role = role_from_markers(cell)
        if role.role != ANSWER or role.question != qid:
            continue
        for line in cell.source.split("\n"):
            match = SOLUTION_LINE_RE.match(line)
            if not match:
                continue
            body = match.group("body")
            name, _, expr = body.partition("=")
            if name.strip() == variable:
                try:
                    return ast.literal_eval(expr.strip())
                except (ValueError, SyntaxError) as exc:
                    raise SpecError(
                        f"question {qid!r}: public = 'hash' needs a literal solution, got {expr!r}"
                    ) from exc
    raise SpecError(
        f"question {qid!r}: public = 'hash' needs a line '{variable} = <value>  # SOLUTION'"
    )


def public_checks(spec: AssignmentSpec, source: NotebookNode | None = None) -> dict[str, Any]:
    source = source if source is not None else load_source(spec)
    salt = salt_for(spec)
    questions: dict[str, Any] = {}
    for q in spec.auto_questions:
        if q.public == "none":
            continue
        rule: dict[str, Any] = {"variable": q.variable, "form": dict(q.form)}
        if q.form.get("type") == "class":
            rule["type"] = "class"
        if q.public == "hash":
            text = selfcheck.canonical(selfcheck.encode(solution_value(source, q.id, q.variable)))
            if text is None:
                raise SpecError(f"question {q.id!r}: public = 'hash' needs a numeric solution")
            rule["hash"] = selfcheck.salted_hash(salt, q.id, text)
            rule["hint"] = q.hint
        questions[q.id] = rule
    grading = {
        "parameters": dict(spec.grading.parameters),
        "seed": spec.grading.seed,
        "threads": spec.grading.threads,
        "cell_timeout": spec.grading.cell_timeout,
        "notebook_timeout": spec.grading.notebook_timeout,
    }
    dataset = asdict(spec.dataset) if spec.dataset else None
    if dataset:
        dataset.pop("validator", None)
    return {
        "assignment": spec.id,
        "salt": salt,
        "questions": questions,
        "grading": grading,
        "dataset": dataset,
    }


def selfcheck_source(public: dict[str, Any]) -> str:
    """grader/selfcheck.py with the public checks embedded."""
    text = Path(selfcheck.__file__).read_text(encoding="utf-8")
    if PUBLIC_PLACEHOLDER not in text:
        raise SpecError("grader/selfcheck.py lost its PUBLIC_CHECKS placeholder")
    literal = json.dumps(public, indent=1, sort_keys=True)
    embedded = f"PUBLIC_CHECKS: dict[str, Any] = json.loads(\n    r'''{literal}'''\n)"
    return text.replace(PUBLIC_PLACEHOLDER, embedded)


def release(spec: AssignmentSpec, out: Path) -> list[Path]:
    """Write the student bundle into `out/<assignment id>/` and return its files."""
    source = load_source(spec)
    folder = out / spec.id
    folder.mkdir(parents=True, exist_ok=True)
    notebook = folder / spec.template
    atomic_write_text(notebook, notebook_text(make_template(spec, source)))
    check = folder / "selfcheck.py"
    atomic_write_text(check, selfcheck_source(public_checks(spec, source)))
    return [notebook, check]


def answer_space(value: Any) -> int | None:
    """How many candidates a student must try to find a hashed answer like `value` by
    hashing guesses: the answers of its form with as many digits (numbers are compared at
    6 decimals). None when it is not a numeric answer. A pure rule, tested with a table."""
    if isinstance(value, bool):
        return 2
    if isinstance(value, int):
        return 2 * 10 ** len(str(abs(value)))
    if isinstance(value, float):
        return 2 * 10 ** (len(str(int(abs(value)))) + 6)
    if isinstance(value, list | tuple):
        if not value:
            return 1
        if all(isinstance(v, int | float) and v in (0, 1) for v in value):
            return int(2 ** len(value))
        total = 1
        for item in value:
            size = answer_space(item)
            if size is None:
                return None
            total *= size
            if total > SMALL_ANSWER_SPACE:
                return total
        return total
    return None


def small_answer_spaces(spec: AssignmentSpec, source: NotebookNode | None = None) -> list[str]:
    """The hashed questions whose answer a student can recover by trying values."""
    source = source if source is not None else load_source(spec)
    found = []
    for q in spec.auto_questions:
        if q.public != "hash":
            continue
        size = answer_space(solution_value(source, q.id, q.variable))
        if size is not None and size <= SMALL_ANSWER_SPACE:
            found.append(f"{q.id} (about {size:.0e} candidates)")
    return found


@dataclass
class LeakReport:
    files: int = 0
    probes: int = 0
    leaks: list[str] = field(default_factory=list)


def _probes(spec: AssignmentSpec, source: NotebookNode, public_text: str) -> list[tuple[str, str]]:
    """(what, text) pairs that must not appear in any released file."""
    probes: list[tuple[str, str]] = []
    for cell in source.cells:
        for line in solution_lines(cell):
            text = line.strip()
            if len(text) >= MIN_LEAK_LINE and text not in public_text:
                probes.append((f"solution line in cell {cell.get('id')}", text))
    for q in spec.auto_questions:
        if q.public == "hash":
            value = solution_value(source, q.id, q.variable)
            probes.append((f"answer of {q.id}", f"{q.variable} = {value!r}"))
    hidden = [p for p in (spec.checks_path, spec.reference_path) if p is not None]
    hidden += sorted(p for p in spec.root.glob("*.py") if p not in hidden)
    hidden.append(spec.calibration_path)
    for path in hidden:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if len(text) >= 30 and text not in public_text:
                probes.append((f"line of {path.name}", text))
    return probes


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def leak_check(spec: AssignmentSpec, bundle: Path) -> LeakReport:
    """Scan every file of a bundle for solution code, answers and hidden checks."""
    source = load_source(spec)
    template = make_template(spec, source)
    public_text = "\n".join(c.source for c in template.cells)
    public_text += Path(selfcheck.__file__).read_text(encoding="utf-8")
    probes = _probes(spec, source, public_text)
    report = LeakReport(probes=len(probes))
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        report.files += 1
        raw = path.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        variants = [text, _normalise(text)]
        if path.suffix == ".ipynb":
            try:
                nb = json.loads(text)
                joined = "\n".join(
                    "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                    for c in nb.get("cells", [])
                )
                variants += [joined, _normalise(joined)]
            except (json.JSONDecodeError, KeyError, TypeError):
                pass
        for what, probe in probes:
            if any(probe in v or _normalise(probe) in v for v in variants):
                report.leaks.append(f"{path.name}: {what}: {probe[:80]!r}")
    for name in ("checks.py", "reference.py", "calibration.json", "assignment.toml"):
        if any(p.name == name for p in bundle.rglob(name)):
            report.leaks.append(f"the bundle contains {name}")
    return report


# --------------------------------------------------------------------------- validate


@dataclass
class ValidationReport:
    problems: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not a failure

    def add(self, ok: bool, what: str) -> None:
        (self.passed if ok else self.problems).append(what)


def validate(
    spec: AssignmentSpec,
    *,
    template: Path | None = None,
    sandbox: bool = True,
    cache_dir: Path | None = None,
) -> ValidationReport:
    """Everything CI checks about an assignment; problems are listed, not raised."""
    from .grading import grade_bytes, open_session

    report = ValidationReport()
    path = template or template_path(spec)
    report.add(
        template_is_current(spec, path),
        f"template {path} is in sync with its source"
        if template_is_current(spec, path)
        else f"template {path} is out of date: run `grader assign {spec.root}`",
    )
    with tempfile.TemporaryDirectory(prefix="grader-release-") as tmp:
        release(spec, Path(tmp))
        leaks = leak_check(spec, Path(tmp) / spec.id)
        report.add(
            not leaks.leaks,
            f"release bundle: {leaks.files} files, {leaks.probes} secrets probed, no leak"
            if not leaks.leaks
            else "release bundle leaks: " + "; ".join(leaks.leaks[:10]),
        )
    small = small_answer_spaces(spec)
    if small:
        report.notes.append(
            "public = 'hash' reveals these answers to a student who tries values (the "
            "self-check says right or wrong for each guess): " + "; ".join(small)
            + ". Use public = 'form' or 'none' where that matters."
        )
    session = open_session(spec, sandbox=sandbox, cache_dir=cache_dir)
    solution = grade_bytes(
        session, spec.source_path.read_bytes(), student="solution", file=spec.source
    )
    auto = [q for q in solution.questions if spec.question(q.id).auto]
    short = [f"{q.id} ({q.points:g}/{q.max_points:g}: {_why(q)})" for q in auto if q.points < q.max_points]
    report.add(
        not short,
        "the solution scores full auto-graded points"
        if not short
        else "the solution loses points: " + "; ".join(short),
    )
    blank = grade_bytes(
        session,
        notebook_text(make_template(spec)).encode(),
        student="template",
        file=spec.template,
    )
    scored = [f"{q.id} ({q.points:g})" for q in blank.questions if spec.question(q.id).auto and q.points > 0]
    report.add(
        not scored,
        "the blank template scores 0 on every auto-graded item"
        if not scored
        else "the blank template earns points: " + ", ".join(scored),
    )
    verify = getattr(session.ctx().reference, "verify_calibration", None)
    if verify is not None and session.dataset_path is not None:
        problems = verify(session.dataset_path, spec.calibration)
        report.add(
            not problems,
            "the reference meets its calibrated thresholds"
            if not problems
            else "reference below its thresholds: " + "; ".join(problems),
        )
    return report


def _why(q: Any) -> str:
    failed = [c.message for c in q.checks if not c.passed]
    return (failed[0] if failed else q.message or q.status)[:160]
