"""The three users' workflows through the CLI, end to end, on real kernels and real MNIST.

* the instructor: the README's main command on the shipped samples (exact expected scores),
  cached and deterministic re-runs, manual scores merged back, grades rebuilt from the
  gradebook, and a batch killed with SIGKILL half way that resumes and loses nothing;
* the student: `grader check` on the released bundle, without the repository;
* CI: `grader release` and its leak check, `grader validate` passing, and failing with a
  clear list after the solution is broken on purpose.
"""

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from notebook_edits import without_experiments

from grader.cli import main
from grader.errors import ValidationFailed

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples" / "mnist_nn"
EXPECTED_SAMPLES = json.loads((ROOT / "tests" / "samples" / "expected_mnist_nn.json").read_text())
CORPUS = ROOT / "tests" / "corpus" / "notebooks"

pytestmark = pytest.mark.slow


def _grades(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", newline="", encoding="utf-8") as fh:
        return {row["student"]: row for row in csv.DictReader(fh)}


def _points(row: dict[str, str], ids: list[str]) -> dict[str, float]:
    return {qid: float(row[qid]) for qid in ids}


def _grade_argv(out: Path, grading_cache: Path) -> list[str]:
    argv = ["grade", str(SAMPLES), "--assignment", "mnist_nn", "--out", str(out), "--jobs", "2"]
    return [*argv, "--cache-dir", str(grading_cache), "--quiet"]


@pytest.fixture(scope="module")
def graded_once(tmp_path_factory, grading_cache):
    """The samples graded once per module; tests never change this folder (see below)."""
    out = tmp_path_factory.mktemp("samples-out")
    return main(_grade_argv(out, grading_cache)), out


@pytest.fixture
def graded_samples(graded_once, tmp_path, grading_cache):
    """A private copy of the graded outputs (gradebook included) for each test, so tests that
    merge scores, delete files or grade again cannot change what another test sees."""
    code, shared = graded_once
    out = tmp_path / "samples-out"
    shutil.copytree(shared, out)
    return code, out, _grade_argv(out, grading_cache)


def test_readme_main_command_grades_the_samples_exactly(graded_samples, capsys):
    code, out, _ = graded_samples
    assert code == 0
    rows = _grades(out)
    assert set(rows) == set(EXPECTED_SAMPLES)
    wrong = {
        student: _points(rows[student], list(points))
        for student, points in EXPECTED_SAMPLES.items()
        if _points(rows[student], list(points)) != points
    }
    assert wrong == {}
    for name in ("grades.csv", "manual.csv", "run.log", "gradebook.sqlite"):
        assert (out / name).is_file()
    for student in EXPECTED_SAMPLES:
        for ext in ("json", "md", "html"):
            assert (out / "feedback" / f"{student}.{ext}").is_file()
    # free-response answers are not scored yet: visible in the status and the score
    assert {row["status"] for row in rows.values()} <= {"needs manual grading", "partial"}
    assert rows["alvarezsofia"]["score"] == "15/15 auto, 10 pending"


def test_unchanged_submissions_are_cached_and_results_identical(graded_samples, capsys):
    _, out, argv = graded_samples
    before = (out / "grades.csv").read_text()
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"0 graded, {len(EXPECTED_SAMPLES)} unchanged (cached)" in printed
    assert (out / "grades.csv").read_text() == before


def test_grading_twice_gives_identical_results(graded_samples, tmp_path, grading_cache, pages_drawn_here):
    """--force executes again: every check, message and point is the same. The feedback
    pages are drawn by the workers, none at the end by the instructor's process."""
    _, out, _ = graded_samples
    again = tmp_path / "again"
    picked = [SAMPLES / "chenwei_10251_884190_mnist_nn.ipynb", SAMPLES / "dialloaminata_10260_884211_mnist_nn.ipynb"]
    argv = ["grade", *map(str, picked), "--assignment", "mnist_nn", "--out", str(again)]
    assert main([*argv, "--cache-dir", str(grading_cache), "--quiet", "--force", "--jobs", "2"]) == 0
    assert pages_drawn_here == []
    from grader.executed import unpack
    from grader.feedback import render_feedback
    from grader.gradebook import Gradebook
    from grader.spec import load_spec

    spec = load_spec(ROOT / "solutions" / "mnist_nn")
    with Gradebook(again / "gradebook.sqlite") as book:
        for r in book.current_results():  # the worker's page is the one drawn here from the book
            page = (again / "feedback" / f"{r.student}.html").read_text()
            assert "Your notebook, as the grader ran it" in page and "data:image/png;base64," in page
            blob = book.executed(r.student)
            assert blob is not None
            assert page == render_feedback(spec, r, unpack(blob))
    for student in ("chenwei", "dialloaminata"):
        first = json.loads((out / "feedback" / f"{student}.json").read_text())
        second = json.loads((again / "feedback" / f"{student}.json").read_text())
        for record in (first, second):
            for volatile in ("timings", "graded_at", "file", "log"):
                record.pop(volatile, None)
        assert first == second, student


def test_manual_scores_merge_back_and_grades_rebuild(graded_samples, tmp_path, capsys, pages_drawn_here):
    _, out, _ = graded_samples
    pages = {p.name: p.read_text() for p in (out / "feedback").glob("*.html")}
    with open(out / "manual.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["question"] for r in rows} >= {"cost_makes_sense", "claim_justification"}
    alvarez = [r for r in rows if r["student"] == "alvarezsofia"]
    assert alvarez and all(r["answer"] for r in alvarez) and all(r["points"] == "" for r in alvarez)
    assert not any("Your answer:" in r["answer"] for r in rows)  # the student's text only
    blank = [r for r in rows if r["student"] == "fitzgeraldkate"]  # handed in the template
    assert blank and all(r["answer"] == "" for r in blank)
    for r in rows:
        if r["student"] == "alvarezsofia":
            r["points"] = "1"
    filled = tmp_path / "manual-filled.csv"
    with open(filled, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    before = float(_grades(out)["alvarezsofia"]["total"])
    drawn = pages_drawn_here
    assert main(["grade", "--assignment", "mnist_nn", "--out", str(out), "--manual", str(filled)]) == 0
    assert float(_grades(out)["alvarezsofia"]["total"]) == before + len(alvarez)
    assert _grades(out)["alvarezsofia"]["status"] == "graded"  # nothing pending any more
    # only the page whose result changed is drawn again; the others are the kept ones
    assert len(drawn) == 1
    after = {p.name: p.read_text() for p in (out / "feedback").glob("*.html")}
    assert {n for n in pages if after[n] != pages[n]} == {"alvarezsofia.html"}
    (out / "grades.csv").unlink()
    shutil.rmtree(out / "feedback")
    assert main(["export", "--assignment", "mnist_nn", "--out", str(out)]) == 0
    assert float(_grades(out)["alvarezsofia"]["total"]) == before + len(alvarez)
    assert len(drawn) == 1  # the page drawn for the merged score was kept too
    assert {p.name: p.read_text() for p in (out / "feedback").glob("*.html")} == after


def test_a_manual_sheet_with_a_bad_row_changes_nothing(graded_samples, tmp_path, capsys):
    _, out, _ = graded_samples
    before = (out / "grades.csv").read_text()
    sheet = tmp_path / "bad.csv"
    sheet.write_text(
        "student,question,max_points,answer,points\n"
        "brownjames,cost_trend,1,x,1\n"
        "brownjmaes,cost_trend,1,x,1\n",  # a typo in a name
        encoding="utf-8",
    )
    code = main(["grade", "--assignment", "mnist_nn", "--out", str(out), "--manual", str(sheet)])
    assert code == 2
    assert "line 3" in capsys.readouterr().err
    assert main(["export", "--assignment", "mnist_nn", "--out", str(out)]) == 0
    assert (out / "grades.csv").read_text() == before


def _results_in(book: Path) -> int:
    if not book.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{book}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_batch_killed_half_way_resumes_and_loses_nothing(tmp_path, grading_cache):
    names = ["solution", "blank_template", "cost_1_5", "onehot_digit_value"]
    folder = tmp_path / "class"
    folder.mkdir()
    for name in names:
        shutil.copy(CORPUS / f"{name}.ipynb", folder / f"{name}.ipynb")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "grader", "grade", str(folder), "--assignment", "mnist_nn"]
    cmd += ["--out", str(out), "--jobs", "1", "--quiet", "--cache-dir", str(grading_cache)]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    book = out / "gradebook.sqlite"
    deadline = time.monotonic() + 300
    while _results_in(book) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the batch finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    saved = _results_in(book)
    assert 2 <= saved < len(names)
    assert not (out / "grades.csv").exists()

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(names) - saved} graded, {saved} unchanged (cached)" in rerun.stdout
    expected = json.loads((ROOT / "tests" / "corpus" / "expected.json").read_text())
    rows = _grades(out)
    assert set(rows) == set(names)
    for name in names:
        assert _points(rows[name], list(expected[name])) == expected[name], name
    with sqlite3.connect(book) as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == len(names)
        assert db.execute("SELECT COUNT(*) FROM current").fetchone()[0] == len(names)


def test_student_self_check_from_the_released_bundle(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert main(["release", "mnist_nn", "--out", str(bundle)]) == 0
    released = bundle / "mnist_nn"
    assert sorted(p.name for p in released.iterdir()) == ["mnist_nn.ipynb", "selfcheck.py"]
    assert "none found" in capsys.readouterr().out

    # The student fills in their notebook (here: the solution's answers) in their own folder.
    student = tmp_path / "student"
    shutil.copytree(released, student)
    shutil.copy(CORPUS / "cost_1_5.ipynb", student / "mnist_nn.ipynb")
    cwd = os.getcwd()
    os.chdir(student)  # a student has no repository: the checks come from selfcheck.py
    try:
        code = main(["check", "mnist_nn.ipynb"])
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert code == 0
    status = {line.split()[0]: line.split()[1] for line in printed.splitlines() if len(line.split()) > 1}
    assert status["first_nine_index"] == "pass" and status["target_for_3"] == "pass"
    assert status["expected_cost"] == "fail"
    assert "public checks pass" in printed and "hidden checks" in printed
    assert "1.25" not in printed  # the hint does not give the answer away


def test_self_check_cell_inside_the_notebook(tmp_path):
    """The template's SELFCHECK cell, run in a plain Jupyter kernel beside the bundle's
    selfcheck.py, as in Jupyter or Colab: no grader package, no repository."""
    import nbclient
    import nbformat

    assert main(["release", "mnist_nn", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "mnist_nn"
    template = nbformat.read(folder / "mnist_nn.ipynb", 4)
    (cell,) = [c for c in template.cells if c.source.startswith("# SELFCHECK")]
    answers = "first_nine_index = 4\ntarget_for_3 = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]\nexpected_cost = 0.625"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(answers), nbformat.v4.new_code_cell(cell.source)])
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    client = nbclient.NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(folder)}})
    client.execute(env=env, cwd=str(folder))
    printed = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    status = {line.split()[0]: line.split()[1] for line in printed.splitlines() if len(line.split()) > 1}
    assert status["first_nine_index"] == "pass" and status["target_for_3"] == "pass", printed
    assert status["expected_cost"] == "fail", printed
    imports = [line for line in (folder / "selfcheck.py").read_text().splitlines() if "import" in line]
    assert not [line for line in imports if "grader" in line]  # stands alone beside the notebook


def _copy_assignment(tmp_path: Path) -> Path:
    root = tmp_path / "course"
    shutil.copytree(ROOT / "solutions" / "mnist_nn", root / "solutions" / "mnist_nn")
    shutil.copytree(ROOT / "assignments" / "mnist_nn", root / "assignments" / "mnist_nn")
    return root / "solutions" / "mnist_nn"


def test_a_grader_crash_loses_one_submission_and_is_not_cached(tmp_path, grading_cache):
    """A crash of the grader itself (here a check that kills its worker, standing for a
    segfault in a C extension) costs only the submission that causes it, and that one is
    graded again on the next run instead of being served from the cache."""
    from grader.batch import BatchOptions, grade_batch
    from grader.spec import load_spec

    folder = _copy_assignment(tmp_path)
    with open(folder / "checks.py", "a", encoding="utf-8") as fh:
        fh.write(
            "\n\n_first_nine_index = first_nine_index\n\n\n"
            "def first_nine_index(answer, ctx, params):\n"
            "    if answer.value == 13:\n"
            "        import os\n\n        os._exit(1)\n"
            "    return _first_nine_index(answer, ctx, params)\n"
        )
    spec = load_spec(folder)
    subs = tmp_path / "subs"
    subs.mkdir()
    # The edited checks.py changes the reference cache key: without experiments answered,
    # no reference experiment is trained again for this test.
    solution = without_experiments((CORPUS / "solution.ipynb").read_text())
    (subs / "fine.ipynb").write_text(solution)
    poison = solution.replace('"first_nine_index = 4"', '"first_nine_index = 13"')
    assert poison != solution
    (subs / "poison.ipynb").write_text(poison)
    out = tmp_path / "out"
    options = BatchOptions(jobs=1, cache_dir=grading_cache, progress=False)
    batch = grade_batch(spec, [subs], out, options)
    by_student = {r.student: r for r in batch.results}
    assert by_student["poison"].status == "error" and "crashed" in by_student["poison"].error
    full = sum(q.points for q in spec.auto_questions)
    assert by_student["fine"].total == full - spec.question("experiments").points
    assert set(_grades(out)) == {"fine", "poison"}
    again = grade_batch(spec, [subs], out, options)
    assert (again.cached, again.graded) == (1, 1)


def test_validate_passes_on_the_assignment(capsys, grading_cache):
    assert main(["validate", "mnist_nn", "--cache-dir", str(grading_cache)]) == 0
    printed = capsys.readouterr().out
    for item in ("full auto-graded points", "scores 0", "in sync", "no leak", "thresholds"):
        assert item in printed, item


def test_validate_fails_with_a_clear_list_when_the_solution_is_broken(tmp_path, capsys, grading_cache):
    folder = _copy_assignment(tmp_path)
    source = folder / "mnist_nn.source.ipynb"
    text = source.read_text()
    assert text.count("expected_cost = 1.25  # SOLUTION") == 1
    source.write_text(text.replace("expected_cost = 1.25  # SOLUTION", "expected_cost = 1.5  # SOLUTION"))
    code = main(["validate", str(folder), "--cache-dir", str(grading_cache)])
    printed = capsys.readouterr().out
    assert code == ValidationFailed.exit_code != 0
    fails = [line for line in printed.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and "solution loses points" in fails[0] and "expected_cost" in fails[0], printed
    assert sum(line.startswith("ok") for line in printed.splitlines()) == 4, printed
