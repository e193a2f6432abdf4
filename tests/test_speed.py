"""Speed without changing a verdict: the reference cache's key and lock, the cache built by
`grader calibrate`, and one budget per submission."""

import json
import shutil
import threading
import time
from pathlib import Path

import nbformat
import pytest

from grader.authoring import notebook_text
from grader.calibrate import cache_entries, warm_cache
from grader.checking import CheckContext
from grader.grading import grade_bytes, open_session
from grader.spec import load_spec

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def _copy_assignment(repo_root: Path, into: Path):
    folder = into / "mnist_nn"
    shutil.copytree(repo_root / "solutions" / "mnist_nn", folder)
    return load_spec(folder)


def test_an_edited_reference_is_not_served_stale_results(repo_root, tmp_path):
    spec = _copy_assignment(repo_root, tmp_path)
    cache = tmp_path / "cache"
    calls = []

    def compute():
        calls.append(1)
        return {"cost": 0.5}

    assert CheckContext(spec, None, cache).cached("run", {"lr": 0.1}, compute) == {"cost": 0.5}
    assert CheckContext(spec, None, cache).cached("run", {"lr": 0.1}, compute) == {"cost": 0.5}
    assert len(calls) == 1
    with spec.reference_path.open("a") as handle:
        handle.write("\n# edited: the reference now trains differently\n")
    CheckContext(load_spec(spec.root), None, cache).cached("run", {"lr": 0.1}, compute)
    assert len(calls) == 2
    with spec.checks_path.open("a") as handle:
        handle.write("\n# edited\n")
    CheckContext(load_spec(spec.root), None, cache).cached("run", {"lr": 0.1}, compute)
    assert len(calls) == 3
    key = json.loads(next((cache / "mnist_nn").glob("run-*.json")).read_text())["key"]
    assert {"reference", "checks", "torch", "numpy", "data"} <= set(key)


def test_workers_sharing_the_cache_compute_a_result_once(repo_root, tmp_path):
    spec = _copy_assignment(repo_root, tmp_path)
    cache = tmp_path / "cache"
    calls = []

    def compute():
        calls.append(1)
        time.sleep(0.5)  # the others arrive while this one computes
        return [1, 2, 3]

    got = []
    threads = [
        threading.Thread(
            target=lambda: got.append(CheckContext(spec, None, cache).cached("run", {}, compute))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [[1, 2, 3]] * 3 and len(calls) == 1


@pytest.mark.slow
def test_first_grade_after_calibrate_trains_no_reference(spec, grading_cache):
    warm_cache(spec, cache_dir=grading_cache, progress=lambda _: None)
    before = cache_entries(grading_cache, spec)
    assert any(name.startswith("experiment-") for name in before)
    session = open_session(spec, cache_dir=grading_cache)
    raw = (CORPUS / "notebooks" / "solution.ipynb").read_bytes()
    result = grade_bytes(session, raw, student="solution", file="solution.ipynb")
    assert result.question("experiments").points == 4
    assert cache_entries(grading_cache, spec) == before  # nothing computed while grading


@pytest.mark.slow
def test_one_budget_covers_the_run_and_the_checks(spec, grading_cache):
    """A cell that ignores interrupts, and a budget far below the cell timeout: the whole
    submission (its run, the grader's cells and the class check) ends near the budget, and
    what was answered before still counts."""
    nb = nbformat.reads((CORPUS / "notebooks" / "solution.ipynb").read_text(), 4)
    stuck = "import time\nwhile True:\n    try:\n        time.sleep(1)\n    except KeyboardInterrupt:\n        pass"
    nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_code_cell(stuck))
    budget = 50
    session = open_session(spec, cache_dir=grading_cache, cell_timeout=600, notebook_timeout=budget)
    started = time.monotonic()
    result = grade_bytes(session, notebook_text(nb).encode(), student="stuck", file="stuck.ipynb")
    elapsed = time.monotonic() - started
    assert elapsed < budget + 20, result.timings  # not 600 s, nor the old 120 s past the end
    assert result.question("first_nine_index").points == 1
    said = " ".join(result.log + result.warnings)
    assert "out of time" in said or "timeout" in said or "watchdog" in said, said


@pytest.mark.slow
def test_same_verdicts_while_the_machine_is_busy(spec, grading_cache):
    """Two CPU burners (as many as the grader's two workers) while a notebook is graded:
    the points are those of the corpus, which were measured on a quiet machine."""
    import subprocess
    import sys

    expected = json.loads((CORPUS / "expected.json").read_text())
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True:\n    pass"]) for _ in range(2)
    ]
    try:
        session = open_session(spec, cache_dir=grading_cache)
        for name in ("solution", "model3_wrong_width"):
            raw = (CORPUS / "notebooks" / f"{name}.ipynb").read_bytes()
            result = grade_bytes(session, raw, student=name, file=f"{name}.ipynb")
            got = {q.id: q.points for q in result.questions if q.id in expected[name]}
            assert got == expected[name], (name, result.warnings, result.log)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


@pytest.mark.parametrize(
    ("times", "factor", "margin", "cell", "expected"),
    [
        ({"a": 1.0, "b": 5.0}, 4.0, 10.0, "a", 14.0),
        ({"a": 1.0, "b": 5.0}, 4.0, 10.0, "b", 30.0),
        ({"a": 1.0, "b": 5.0}, 4.0, 10.0, "added-by-student", 30.0),  # the largest
        ({"a": -1.0}, 2.0, 3.0, "a", 3.0),  # a clock's glitch is no negative limit
        ({}, 4.0, 10.0, "a", None),  # not measured: no CPU limit
    ],
)
def test_cell_cpu_limits(times, factor, margin, cell, expected):
    from grader.cputime import cell_limits

    assert cell_limits(times, factor, margin).for_cell(cell) == expected


@pytest.mark.slow
def test_stuck_cells_are_stopped_by_cpu_time_and_idleness(repo_root, tmp_path, grading_cache):
    """A busy loop in an answer cell stops after its CPU-time limit (from the reference's
    time for that cell), a sleeping loop after the idle window: not after the 600 s wall
    limit; everything answered still counts."""
    from grader.cells import ANSWER, cell_role
    from grader.cputime import CELL_TIMES

    spec = _copy_assignment(repo_root, tmp_path)
    nb = nbformat.reads((CORPUS / "notebooks" / "solution.ipynb").read_text(), 4)
    answer = next(
        c for c in nb.cells
        if cell_role(c).role == ANSWER and cell_role(c).question == "first_nine_index"
    )
    times = json.loads((spec.root / CELL_TIMES).read_text())  # as `grader calibrate` wrote it
    times["cells"][answer.id] = 0.05
    (spec.root / CELL_TIMES).write_text(json.dumps(times))
    answer.source += "\nwhile True:\n    pass"
    nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_code_cell("import time\nwhile True:\n    time.sleep(1)"))
    session = open_session(load_spec(spec.root), cache_dir=grading_cache, cell_timeout=600)
    result = grade_bytes(session, notebook_text(nb).encode(), student="stuck", file="stuck.ipynb")
    said = " ".join(result.log)
    assert "CPU time limit (10 s)" in said and "waited 30 s without computing" in said, said
    expected = json.loads((CORPUS / "expected.json").read_text())["solution"]
    assert {q.id: q.points for q in result.questions if q.id in expected} == expected
