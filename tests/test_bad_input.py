"""Bad input in a real batch: every case is graded or gets a clear per-submission error in
grades.csv and the feedback, and none of them stops the batch.

The graded cases run in real sandboxed kernels on real MNIST; their expected points are exact.
"""

import base64
import csv
import html
import io
import json
import os
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader.authoring import notebook_text
from grader.batch import BatchOptions, grade_batch
from grader.report import safe_filename

HERE = Path(__file__).resolve().parent
SOLUTION = HERE / "corpus" / "notebooks" / "solution.ipynb"
BLANK = HERE / "corpus" / "notebooks" / "blank_template.ipynb"
EXPECTED = json.loads((HERE / "corpus" / "expected.json").read_text())
FULL = EXPECTED["solution"]
ZERO = EXPECTED["blank_template"]

pytestmark = pytest.mark.slow


def _nb(path: Path = SOLUTION) -> nbformat.NotebookNode:
    return nbformat.reads(path.read_text(encoding="utf-8"), 4)


def _answer_index(nb: nbformat.NotebookNode, qid: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.source.lstrip().startswith(f"# ANSWER: {qid}"))


def _text(nb: nbformat.NotebookNode) -> str:
    return notebook_text(nb)


def _v3() -> str:
    return nbformat.writes(nbformat.convert(_nb(), 3), 3)


def _broken_ids() -> str:
    data = json.loads(SOLUTION.read_text())
    for i, cell in enumerate(data["cells"]):
        if i % 3 == 0:
            del cell["id"]
        elif i % 3 == 1:
            cell["id"] = "same"
    return json.dumps(data)


def _answer_deleted_and_moved() -> str:
    nb = _nb()
    del nb.cells[_answer_index(nb, "first_nine_index")]
    moved = nb.cells.pop(_answer_index(nb, "expected_cost"))
    nb.cells.insert(len(nb.cells) - 1, moved)  # still before the last cell, after everything
    return _text(nb)


def _duplicated_and_metadata_stripped() -> str:
    nb = _nb()
    index = _answer_index(nb, "target_for_3")
    copy = nbformat.from_dict(json.loads(json.dumps(nb.cells[index])))
    copy["id"] = "copy-of-target"
    nb.cells[index].source = "# ANSWER: target_for_3\ntarget_for_3 = [0] * 10  # first try"
    nb.cells.insert(index + 1, copy)  # the later answer is the one the student kept
    for cell in nb.cells:
        cell.metadata = {}
    return _text(nb)


def _colab_vscode() -> str:
    nb = _nb()
    nb.metadata = {
        "colab": {"provenance": [], "name": "mnist_nn.ipynb"},
        "kernelspec": {"display_name": "Python 3", "name": "python3"},
        "vscode": {"interpreter": {"hash": "ab" * 20}},
        "accelerator": "GPU",
    }
    for cell in nb.cells:
        cell.metadata["colab"] = {"base_uri": "https://localhost:8080/"}
        cell.metadata["executionInfo"] = {"status": "ok", "elapsed": 12}
    return _text(nb)


def _fifty_megabytes() -> str:
    nb = _nb()
    blob = base64.b64encode(os.urandom(38 * 2**20)).decode()
    nb.cells[3].outputs = [nbformat.v4.new_output("display_data", data={"image/png": blob})]
    nb.cells[3].execution_count = 1
    text = _text(nb)
    assert len(text) > 50 * 10**6
    return text


def _latin1() -> bytes:
    """Saved by an editor that wrote Latin-1 bytes into otherwise UTF-8 JSON."""
    raw = SOLUTION.read_bytes()
    assert raw.count(b"MNIST dataset.") == 1
    return raw.replace(b"MNIST dataset.", b"MNIST dataset (r\xe9sum\xe9).")


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("zipped_ann/submission.ipynb", SOLUTION.read_text())
        zf.writestr("__MACOSX/zipped_ann/._submission.ipynb", "AppleDouble junk")
        zf.writestr("zippedbo_20001_30001_mnist_nn.ipynb", BLANK.read_text())


# (student, file name, bytes or a function making them, expected points or expected error text)
# An expected value of None: a file the batch must ignore (an older submission).
CASES: list[tuple[str, str, object, object]] = [
    ("empty", "empty.ipynb", b"", "empty"),
    ("truncated", "truncated.ipynb", SOLUTION.read_bytes()[: SOLUTION.stat().st_size // 2], "not valid JSON"),
    ("notjson", "notjson.ipynb", b"%PDF-1.7 this is a PDF renamed to .ipynb", "not valid JSON"),
    ("notnotebook", "notnotebook.ipynb", b'{"name": "my homework", "answers": [4]}', "not a Jupyter notebook"),
    ("brokenzip", "brokenzip.zip", b"PK\x03\x04 not really a zip", "zip"),
    ("oldformat", "oldformat_10001_20001_mnist_nn.ipynb", _v3, FULL),
    ("ids", "ids.ipynb", _broken_ids, FULL),
    ("moved", "moved.ipynb", _answer_deleted_and_moved, {**FULL, "first_nine_index": 0}),
    ("stripped", "stripped.ipynb", _duplicated_and_metadata_stripped, FULL),
    ("colab", "colab.ipynb", _colab_vscode, FULL),
    ("Zoë Müller", "Zoë Müller.ipynb", _latin1, FULL),
    ("huge", "huge.ipynb", _fifty_megabytes, FULL),
    ("zipped_ann", "class.zip", _zip, FULL),
    ("zippedbo", "class.zip", None, ZERO),
    ("twice", "twice_10002_20001_mnist_nn.ipynb", BLANK.read_bytes(), None),
    ("twice", "twice_LATE_10002_20002_mnist_nn.ipynb", SOLUTION.read_bytes(), FULL),
]


@pytest.fixture(scope="module")
def graded(spec, grading_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-input") / "downloads"
    folder.mkdir()
    for _student, name, content, _ in CASES:
        path = folder / name
        if name == "class.zip":
            if content is not None:
                _zip(path)
            continue
        if callable(content):
            content = content()
        path.write_bytes(content if isinstance(content, bytes) else str(content).encode("utf-8"))
    os.utime(folder / "twice_10002_20001_mnist_nn.ipynb", (1_700_000_000, 1_700_000_000))
    os.utime(folder / "twice_LATE_10002_20002_mnist_nn.ipynb", (1_700_000_900, 1_700_000_900))
    out = tmp_path_factory.mktemp("bad-input-out")
    batch = grade_batch(spec, [folder], out, BatchOptions(jobs=2, cache_dir=grading_cache, progress=False))
    return batch, out


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "grades.csv", newline="", encoding="utf-8") as fh:
        return {row["student"]: row for row in csv.DictReader(io.StringIO(fh.read()))}


def test_every_case_is_graded_or_explained(graded):
    batch, out = graded
    rows = _rows(out)
    assert set(rows) == {case[0] for case in CASES}
    by_student = {r.student: r for r in batch.results}
    wrong = []
    for student, _name, _content, expected in CASES:
        if expected is None:
            continue
        result = by_student[student]
        if isinstance(expected, str):
            if not (result.status == "error" and expected in result.error and expected in rows[student]["notes"]):
                wrong.append(f"{student}: status={result.status} error={result.error!r}")
            if any(q.points for q in result.questions):
                wrong.append(f"{student}: an unreadable file got points")
        else:
            got = {q.id: q.points for q in result.questions if q.id in expected}
            if got != expected:
                wrong.append(f"{student}: {got} != {expected}; {result.warnings} {result.log[-3:]}")
    assert not wrong, "\n".join(wrong)


def test_problems_are_reported_to_the_student(graded):
    batch, out = graded
    by_student = {r.student: r for r in batch.results}
    assert any("v3" in w for w in by_student["oldformat"].warnings)
    assert any("UTF-8" in w for w in by_student["Zoë Müller"].warnings)
    assert any("newest" in w for w in by_student["twice"].warnings)
    assert any("twice" in w for w in batch.warnings)
    deleted = by_student["moved"].question("first_nine_index")  # its stub came back from the template
    assert deleted is not None and "not answered" in deleted.checks[0].message
    for student in ("empty", "brokenzip", "Zoë Müller", "huge", "zipped_ann"):
        page = (out / "feedback" / f"{safe_filename(student)}.html").read_text(encoding="utf-8")
        assert html.escape(student) in page, student
    assert "empty" in (out / "feedback" / "empty.md").read_text(encoding="utf-8")
