"""Gradescope's autograder zip, run for real in a temporary root laid out like /autograder.

RESULTS_SCHEMA is written from Gradescope's documented output format,
https://gradescope-autograders.readthedocs.io/en/latest/specs/ ("Output format"): the
top-level `score` (required unless every test has one), `execution_time` (seconds),
`output`, `output_format`, `visibility`, `stdout_visibility`, `extra_data`, `tests` and
`leaderboard`; each test's `score`, `max_score`, `status` ("passed"/"failed"), `name`,
`name_format`, `number`, `output`, `output_format`, `tags`, `visibility`, `extra_data`;
visibility one of hidden, after_due_date, after_published, visible; formats one of text,
html, simple_format, md, ansi.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

from grader import results as R
from grader.gradescope import CONFIG, build_autograder, find_notebook, results_json
from grader.results import CheckResult, QuestionResult, SubmissionResult

_VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
_FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
RESULTS_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "number", "minimum": 0},
        "output": {"type": "string"},
        "output_format": _FORMAT,
        "test_output_format": _FORMAT,
        "test_name_format": _FORMAT,
        "visibility": _VISIBILITY,
        "stdout_visibility": _VISIBILITY,
        "extra_data": {"type": "object"},
        "tests": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "score": {"type": "number"},
                    "max_score": {"type": "number"},
                    "status": {"enum": ["passed", "failed"]},
                    "name": {"type": "string"},
                    "name_format": _FORMAT,
                    "number": {"type": "string"},
                    "output": {"type": "string"},
                    "output_format": _FORMAT,
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "visibility": _VISIBILITY,
                    "extra_data": {"type": "object"},
                },
                "additionalProperties": False,
            },
        },
        "leaderboard": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "value": {"type": ["number", "string"]},
                    "order": {"enum": ["asc", "desc"]},
                },
                "required": ["name", "value"],
            },
        },
    },
    "additionalProperties": False,
    "anyOf": [
        {"required": ["score"]},
        {"required": ["tests"], "properties": {"tests": {"items": {"required": ["score"]}}}},
    ],
}

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples" / "mnist_nn"
EXPECTED = json.loads((ROOT / "tests" / "samples" / "expected_mnist_nn.json").read_text())


def _validate(data: dict) -> None:
    jsonschema.validate(data, RESULTS_SCHEMA)


def test_the_schema_refuses_what_gradescope_would(spec):
    with pytest.raises(jsonschema.ValidationError):
        _validate({"tests": [{"name": "q", "visibility": "sometimes", "score": 1}]})
    with pytest.raises(jsonschema.ValidationError):
        _validate({"tests": [{"name": "q"}]})  # no score anywhere
    _validate({"tests": [{"name": "q", "score": 1, "max_score": 1}]})


def test_results_json_visibility_and_hand_graded_questions(spec):
    qs = []
    for q in spec.auto_questions:
        checks = [CheckResult("value", q.id != "expected_cost", "compared with the reference")]
        points = 0.0 if q.id == "expected_cost" else q.points
        qs.append(QuestionResult(q.id, R.Q_PASSED if points else R.Q_FAILED, points, q.points, checks))
    qs += [QuestionResult(q.id, R.Q_MANUAL, 0.0, q.points) for q in spec.manual_questions]
    result = SubmissionResult("s", "s.ipynb", "h", R.GRADED, qs, changed_cells=["cell 3 (cost function)"])
    data = results_json(spec, result, 12.4)
    _validate(data)
    tests = {t["name"].rsplit("(", 1)[1][:-1]: t for t in data["tests"]}
    assert data["score"] == spec.auto_points - 1 and data["execution_time"] == 12
    assert tests["expected_cost"] == {
        "name": f"{spec.question('expected_cost').title} (expected_cost)",
        "number": "3",
        "score": 0.0,
        "max_score": 1.0,
        "status": "failed",
        "output": "[fail] compared with the reference",
        "visibility": "visible",  # public = "hash"
    }
    assert tests["pipeline_accuracy"]["visibility"] == "after_published"  # public = "none"
    manual = tests["cost_trend"]
    assert (manual["score"], manual["max_score"]) == (0.0, 0.0) and "by hand" in manual["output"]
    assert "cost function" in data["output"] and "graded by hand" in data["output"]
    # the top-level output is visible at once: it must not reveal the hidden checks' points
    hidden = [t for t in data["tests"] if t["visibility"] == "after_published"]
    shown = [t for t in data["tests"] if t["visibility"] == "visible" and t["max_score"]]
    assert hidden and f"{spec.auto_points - 1:g} / {spec.auto_points:g}" not in data["output"]
    shown_points = sum(t["score"] for t in shown)
    assert f"Checks shown now: {shown_points:g} / {sum(t['max_score'] for t in shown):g}" in data["output"]


def test_the_zip_follows_the_specification(spec, tmp_path, mnist_path):
    out = tmp_path / "autograder.zip"
    names = build_autograder(spec, out, dataset=mnist_path)
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(names)
        for name in ("setup.sh", "run_autograder"):
            assert stat.S_IMODE(zf.getinfo(name).external_attr >> 16) == 0o755
        setup = zf.read("setup.sh").decode()
        config = json.loads(zf.read(CONFIG))
        assert zf.getinfo("data/mnist.pkl.gz").file_size == mnist_path.stat().st_size
    assert "torch==2.13.0" in setup and "https://download.pytorch.org/whl/cpu" in setup
    assert "bubblewrap" in setup and '"$SOURCE/toolkit"' in setup
    assert config == {"assignment": "assignment/mnist_nn", "dataset": "data/mnist.pkl.gz"}
    assert "toolkit/grader/gradescope.py" in names and "toolkit/pyproject.toml" in names
    assert "assignment/mnist_nn/checks.py" in names and "assignment/mnist_nn/assignment.toml" in names


def test_the_command_line_builds_the_zip(tmp_path, capsys):
    from grader.cli import main

    out = tmp_path / "ag.zip"
    assert main(["gradescope", str(ROOT / "solutions" / "mnist_nn"), "--out", str(out), "--no-data"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with zipfile.ZipFile(out) as zf:
        assert json.loads(zf.read(CONFIG))["dataset"] is None
        # the sandbox's uid must not read /autograder/source where bwrap cannot hide it
        assert zf.read("setup.sh").decode().rstrip().endswith('chmod -R go-rwx "$SOURCE"')
        assert not any(n.startswith("data/") for n in zf.namelist())


def test_the_notebook_to_grade_is_found(spec, tmp_path):
    assert find_notebook(tmp_path, spec) == (None, [])
    (tmp_path / "notes.ipynb").write_text("{}")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "mnist_nn-checkpoint.ipynb").write_text("{}")
    assert find_notebook(tmp_path, spec) == (tmp_path / "notes.ipynb", [])
    (tmp_path / "mnist_nn.ipynb").write_text("{}")
    chosen, notes = find_notebook(tmp_path, spec)
    assert chosen == tmp_path / "mnist_nn.ipynb" and "notes.ipynb" in notes[0]


def test_a_linked_notebook_is_never_graded(spec, tmp_path):
    """A link to /autograder/source/.../solution.ipynb would be graded as the solution."""
    submission, elsewhere = tmp_path / "submission", tmp_path / "source"
    submission.mkdir()
    elsewhere.mkdir()
    (elsewhere / "solution.ipynb").write_text("{}")
    (submission / "mnist_nn.ipynb").symlink_to(elsewhere / "solution.ipynb")
    (submission / "folder").symlink_to(elsewhere, target_is_directory=True)
    chosen, notes = find_notebook(submission, spec)
    assert chosen is None and notes == ["mnist_nn.ipynb is a symbolic link: not graded"]
    (submission / "mine.ipynb").write_text("{}")
    assert find_notebook(submission, spec) == (submission / "mine.ipynb", notes)


@pytest.fixture(scope="module")
def autograder_source(tmp_path_factory, spec, mnist_path):
    """The zip built once and unpacked as Gradescope unpacks it into /autograder/source."""
    build = tmp_path_factory.mktemp("gradescope-build")
    build_autograder(spec, build / "autograder.zip", dataset=mnist_path)
    source = build / "source"
    with zipfile.ZipFile(build / "autograder.zip") as zf:
        zf.extractall(source)
    for name in ("setup.sh", "run_autograder"):
        (source / name).chmod(0o755)
    return source


def _run(source: Path, tmp_path: Path, files: dict[str, bytes], cache: Path) -> dict:
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    (root / "results").mkdir()
    (root / "source").symlink_to(source)
    for name, data in files.items():
        (root / "submission" / name).write_bytes(data)
    env = {
        **os.environ,
        "GRADER_AUTOGRADER_ROOT": str(root),
        "GRADER_PYTHON": sys.executable,
        "GRADER_CACHE_DIR": str(cache),
    }
    proc = subprocess.run(
        [str(source / "run_autograder")], env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((root / "results" / "results.json").read_text())
    _validate(data)
    return data


def _by_question(data: dict) -> dict[str, float]:
    return {t["name"].rsplit("(", 1)[1][:-1]: t["score"] for t in data["tests"] if t["max_score"]}


@pytest.mark.slow
def test_run_autograder_correct_submission(autograder_source, tmp_path, grading_cache, spec):
    sample = SAMPLES / "gonzalezluis_10290_884330_mnist_nn.ipynb"
    data = _run(autograder_source, tmp_path, {"mnist_nn.ipynb": sample.read_bytes()}, grading_cache)
    assert _by_question(data) == EXPECTED["gonzalezluis"]
    assert data["score"] == spec.auto_points == 15


@pytest.mark.slow
def test_run_autograder_wrong_submission(autograder_source, tmp_path, grading_cache):
    sample = SAMPLES / "haddadomar_10302_884351_mnist_nn.ipynb"
    data = _run(autograder_source, tmp_path, {"homework.ipynb": sample.read_bytes()}, grading_cache)
    assert _by_question(data) == EXPECTED["haddadomar"]
    assert data["score"] == sum(EXPECTED["haddadomar"].values()) == 12
    failed = {t["number"]: t for t in data["tests"] if t.get("status") == "failed"}
    assert {t["visibility"] for t in failed.values()} == {"visible", "after_published"}


@pytest.mark.slow
def test_run_autograder_broken_submission(autograder_source, tmp_path, grading_cache, spec):
    data = _run(autograder_source, tmp_path, {"mnist_nn.ipynb": b'{"cells": [ truncated'}, grading_cache)
    assert data["score"] == 0 and "could not be graded" in data["output"]
    assert all(t["score"] == 0 for t in data["tests"])
    assert len(data["tests"]) == len(spec.questions)
