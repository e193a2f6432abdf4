"""Gradescope's autograder: the zip `grader gradescope` builds and what runs inside it.

Gradescope's specification (https://gradescope-autograders.readthedocs.io/en/latest/specs/):
the zip holds `setup.sh` (run once, as root, when the image is built) and `run_autograder`
(run for every submission, working directory `/autograder`); the submission is in
`/autograder/submission`, the zip's contents in `/autograder/source`, and the result goes to
`/autograder/results/results.json`. As in otter-grader's `otter generate`, the zip carries
the toolkit itself, a small config file and the assignment; here also the data file, so
nothing is downloaded at grading time.

Inside the container the submission is graded exactly as `grader grade` does: in the
sandbox (bwrap, installed by setup.sh), with the solutions folder out of its reach.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from . import results as R
from .errors import SpecError, UsageError
from .fileio import atomic_write_json
from .results import SubmissionResult
from .scoring import ungradable
from .spec import AssignmentSpec, assignment_files, load_spec

CONFIG = "grader-autograder.json"
ROOT_ENV = "GRADER_AUTOGRADER_ROOT"  # /autograder, unless a test lays one out elsewhere
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
VISIBLE, AFTER_PUBLISHED = "visible", "after_published"
SKIP_PARTS = ("__MACOSX", ".ipynb_checkpoints")

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euxo pipefail
SOURCE=/autograder/source
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends bubblewrap python3-venv python3-pip
PY=$(command -v python3.13 || command -v python3.12 || command -v python3.11 || true)
if [ -z "$PY" ]; then  # Ubuntu 22.04 images ship Python 3.10
    apt-get install -y --no-install-recommends python3.11 python3.11-venv
    PY=python3.11
fi
"$PY" -m venv /opt/grader
# the CPU build of the pinned torch first, so the toolkit's pin is already satisfied
/opt/grader/bin/pip install --no-cache-dir "{torch}" --index-url {index}
/opt/grader/bin/pip install --no-cache-dir "$SOURCE/toolkit"
# Grade the solution once: proves the image works and fills the reference cache.
mkdir -p /tmp/grader-warm/submission /tmp/grader-warm/results
cp "$SOURCE/{solution}" /tmp/grader-warm/submission/
/opt/grader/bin/python -m grader gradescope-run --root /autograder \\
    --submission /tmp/grader-warm/submission --results /tmp/grader-warm/results
rm -rf /tmp/grader-warm
# Where bwrap cannot run (a container without CAP_SYS_ADMIN), student code still runs as an
# unprivileged uid, and the zip's files are world-readable: make the solutions, reference,
# checks and cached reference results root's alone.
chmod -R go-rwx "$SOURCE"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission; it writes results/results.json.
ROOT="${GRADER_AUTOGRADER_ROOT:-/autograder}"
PYTHON="${GRADER_PYTHON:-/opt/grader/bin/python}"
cd "$ROOT"
exec "$PYTHON" -m grader gradescope-run --root "$ROOT"
"""


# ------------------------------------------------------------------ results.json


def _question_output(q: R.QuestionResult) -> str:
    lines = [q.message] if q.message else []
    lines += [f"[{'pass' if c.passed else 'fail'}] {c.message}" for c in q.checks]
    return "\n".join(lines)


def results_json(
    spec: AssignmentSpec, result: SubmissionResult, seconds: float, notes: list[str] | None = None
) -> dict[str, Any]:
    """Gradescope's results.json for one graded submission (a pure function).

    Questions with public checks (`public` = hash or form) are visible at once; those whose
    checks are all hidden appear once grades are published; free-response questions are
    0-point tests saying they are graded by hand.
    """
    by_id = {q.id: q for q in result.questions}
    tests: list[dict[str, Any]] = []
    for number, question in enumerate(spec.questions, start=1):
        name = f"{question.title or question.id} ({question.id})"
        if not question.auto:
            tests.append({
                "name": name, "number": str(number), "score": 0.0, "max_score": 0.0,
                "output": f"Graded by hand after the deadline ({question.points:g} points).",
                "visibility": VISIBLE,
            })  # fmt: skip
            continue
        q = by_id.get(question.id) or ungradable(question.id, question.points, "not graded")
        tests.append({
            "name": name, "number": str(number), "score": float(q.points),
            "max_score": float(question.points),
            "status": "passed" if q.points >= question.points else "failed",
            "output": _question_output(q),
            "visibility": VISIBLE if question.public != "none" else AFTER_PUBLISHED,
        })  # fmt: skip
    auto = sum(float(t["score"]) for t in tests)
    hand = sum(q.points for q in spec.manual_questions)
    hidden = [t for t in tests if t.get("visibility") == AFTER_PUBLISHED]
    if hidden:  # this text is visible at once: it must not add up what the hidden tests hold
        shown = [t for t in tests if t.get("visibility") == VISIBLE and t["max_score"]]
        lines = [
            f"Checks shown now: {sum(t['score'] for t in shown):g} / "
            f"{sum(t['max_score'] for t in shown):g} points; "
            f"{sum(t['max_score'] for t in hidden):g} more points of hidden checks are shown "
            "when grades are published."
        ]
    else:
        lines = [f"Autograded: {auto:g} / {spec.auto_points:g} points."]
    if hand:
        lines.append(f"{hand:g} more points of free-response questions are graded by hand.")
    if result.error:
        lines.append(f"Your submission could not be graded: {result.error}")
    lines += [f"Locked cell you changed (the original was graded): {c}" for c in result.changed_cells]
    lines += [f"Note: {w}" for w in [*(notes or []), *result.warnings]]
    return {
        "score": auto,
        "execution_time": max(0, round(seconds)),
        "output": "\n".join(lines),
        "stdout_visibility": "hidden",
        "tests": tests,
    }


# ------------------------------------------------------------------ running in the container


def find_notebook(folder: Path, spec: AssignmentSpec) -> tuple[Path | None, list[str]]:
    """The notebook to grade in a Gradescope submission folder, and notes about the choice."""
    candidates = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() == ".ipynb"
        and not any(part in SKIP_PARTS or part.startswith(".") for part in p.relative_to(folder).parts)
    )
    # A link is never followed: one to /autograder/source would be graded as the solution.
    links = [p for p in candidates if _linked(folder, p)]
    found = [p for p in candidates if p not in links and p.is_file()]
    notes = [f"{p.name} is a symbolic link: not graded" for p in links]
    if not found:
        return None, notes
    named = [p for p in found if p.name == spec.template]
    chosen = named[0] if named else found[0]
    if len(found) > 1:
        others = ", ".join(p.name for p in found if p != chosen)
        notes.append(f"several notebooks were submitted; graded {chosen.name}, not: {others}")
    return chosen, notes


def _linked(folder: Path, path: Path) -> bool:
    """Whether `path` or a folder between `folder` and it is a symbolic link."""
    parts = path.relative_to(folder).parts
    return any((folder.joinpath(*parts[: i + 1])).is_symlink() for i in range(len(parts)))


def run_autograder(
    root: Path, submission: Path | None = None, results: Path | None = None
) -> dict[str, Any]:
    """Grade `root/submission` into `root/results/results.json`; returns what was written."""
    from .grading import grade_bytes, open_session

    started = time.monotonic()
    source = root / "source"
    try:
        config = json.loads((source / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"{source / CONFIG} is missing or broken: rebuild the autograder zip") from exc
    spec = load_spec(source / config["assignment"])
    submission = submission or root / "submission"
    notebook, notes = find_notebook(submission, spec)
    if notebook is None:
        message = f"no notebook (.ipynb) was submitted: upload your {spec.template}"
        message += "".join(f" ({note})" for note in notes)
        result = SubmissionResult(
            student="submission", file="", content_hash="", status=R.ERROR, error=message,
            questions=[ungradable(q.id, q.points, message) for q in spec.questions],
        )  # fmt: skip
    else:
        dataset = source / config["dataset"] if config.get("dataset") else None
        cache = Path(os.environ.get("GRADER_CACHE_DIR") or source / ".cache")
        session = open_session(spec, dataset=dataset, cache_dir=cache)
        raw = notebook.read_bytes()
        result = grade_bytes(session, raw, student="submission", file=notebook.name)
    data = results_json(spec, result, time.monotonic() - started, notes)
    atomic_write_json((results or root / "results") / "results.json", data)
    return data


# ------------------------------------------------------------------ building the zip


def _pinned(pyproject: Path, package: str) -> str | None:
    deps = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    return next((d for d in deps if re.match(rf"^{package}\s*[=<>~!]", d)), None)


def _toolkit_files(toolkit: Path) -> list[Path]:
    files = [toolkit / "pyproject.toml", toolkit / "README.md"]
    files += sorted(p for p in (toolkit / "grader").rglob("*.py") if "__pycache__" not in p.parts)
    return files


def build_autograder(
    spec: AssignmentSpec, out: Path, *, dataset: Path | None = None, with_data: bool = True
) -> list[str]:
    """Write Gradescope's autograder zip for `spec`; returns the names it holds."""
    toolkit = Path(__file__).resolve().parent.parent
    if not (toolkit / "pyproject.toml").is_file():
        raise UsageError("build the autograder from a source checkout of the toolkit")
    torch = _pinned(toolkit / "pyproject.toml", "torch")
    data_path = None
    if with_data and spec.dataset is not None:
        from .data import resolve_dataset

        data_path = resolve_dataset(spec.dataset, explicit=dataset)
    assignment = f"assignment/{spec.id}"
    config = {
        "assignment": assignment,
        "dataset": f"data/{spec.dataset.filename}" if data_path and spec.dataset else None,
    }
    setup = SETUP_SH.replace("{torch}", torch or "torch").replace("{index}", TORCH_INDEX)
    setup = setup.replace("{solution}", f"{assignment}/{spec.source}")
    tmp = out.with_name(f".{out.name}.building")
    names = []
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", setup), ("run_autograder", RUN_AUTOGRADER)):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o100755 << 16  # executable, as Gradescope runs them
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
            names.append(name)
        zf.writestr(CONFIG, json.dumps(config, indent=2) + "\n")
        names.append(CONFIG)
        for path in _toolkit_files(toolkit):
            name = f"toolkit/{path.relative_to(toolkit).as_posix()}"
            zf.write(path, name)
            names.append(name)
        for rel, path in assignment_files(spec.root):
            name = f"{assignment}/{rel}"
            zf.write(path, name)
            names.append(name)
        if data_path is not None and config["dataset"]:
            zf.write(data_path, str(config["dataset"]), compress_type=zipfile.ZIP_STORED)
            names.append(str(config["dataset"]))
    os.replace(tmp, out)
    return names
