"""Manual scores: checked whole, tied to the answer they graded, saved from the review page
and from manual.csv with comments; the review server's API over real HTTP on 127.0.0.1."""

import csv
import io
import json
import threading
import urllib.error
import urllib.request

import pytest
from review_helpers import SAMPLES, sample_gradebook, sample_result

from grader.batch import rebuild_outputs
from grader.errors import UsageError
from grader.gradebook import Gradebook
from grader.manual import answer_hash, check_points, import_manual
from grader.report import manual_csv
from grader.review_data import ReviewData, SaveRefused
from grader.review_server import start


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1.0), (" 0.5 ", 0.5), ("0,5", 0.5), (0, 0.0), ("", None), (None, None), (1, 1.0)],
)
def test_points_accepted(value, expected):
    assert check_points(value, 1) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "must be a number"),
        ("1.5", "between 0 and 1"),
        ("-0.5", "between 0 and 1"),
        ("0.3", "halves"),
        ("nan", "between 0 and 1"),
        ("inf", "between 0 and 1"),
        (True, "must be a number"),
        ("=1+1", "must be a number"),
    ],
)
def test_points_refused(value, message):
    with pytest.raises(ValueError, match=message):
        check_points(value, 1)


@pytest.mark.parametrize(
    ("points", "given_for", "max_points", "expected"),
    [
        (1, "the answer", 1, ("passed", 1.0, "scored by hand")),
        (0.5, "the answer", 1, ("partial", 0.5, "scored by hand")),
        (0, "the answer", 1, ("failed", 0.0, "scored by hand")),
        (None, "the answer", 1, ("manual", 0.0, "waits")),
        (1, "", 1, ("passed", 1.0, "scored by hand")),  # a sheet without hashes
        (1, "an older answer", 1, ("manual", 0.0, "answer changed since it was scored: review again (it had 1 points)")),
        (1, "the answer", 0.5, ("manual", 0.0, "scored above what the question is worth now: review again (it had 1 of 0.5 points)")),
        (0.5, "the answer", 0.5, ("passed", 0.5, "scored by hand")),
    ],
)
def test_a_manual_entry_applied(points, given_for, max_points, expected):
    from grader.gradebook import ManualScore
    from grader.manual import applied
    from grader.scoring import manual_pending

    q = manual_pending("essay", max_points)
    q = q.__class__(q.id, q.status, q.points, q.max_points, q.checks, "waits")
    entry = ManualScore(points, "", answer_hash(given_for) if given_for else "")
    out = applied(q, entry, "the answer")
    assert (out.status, out.points, out.message) == expected


def test_answer_hash_ignores_line_endings_and_trailing_blanks():
    assert answer_hash("a \r\nb\n\n") == answer_hash("a\nb")
    assert answer_hash("a b") != answer_hash("a  b")


@pytest.fixture
def book(tmp_path, spec):
    path = tmp_path / "gradebook.sqlite"
    students = sample_gradebook(spec, path, count=3)
    return path, students


def test_review_saves_points_and_comments_and_refuses_bad_input(book, spec):
    path, _students = book
    data = ReviewData(spec, path)
    state = data.state()
    assert [q["id"] for q in state["questions"]] == [q.id for q in spec.manual_questions]
    assert state["questions"][0]["model"]  # the model answer from the source notebook
    first = state["students"][0]
    answer = first["answers"]["cost_trend"]
    assert answer["state"] == "ungraded" and answer["html"]
    base = {"student": first["student"], "question": "cost_trend", "answer_hash": answer["hash"]}
    comment = 'Good, but "why"?\nSee the plot; it\'s <b>not</b> flat.'
    assert data.save({**base, "points": "0.5"})["points"] == 0.5
    assert data.save({**base, "comment": comment})["points"] == 0.5  # points kept
    bad = [
        ({**base, "points": "x"}, "must be a number"),
        ({**base, "points": 3}, "between 0 and 1"),
        ({**base, "question": "first_nine_index", "points": 1}, "unknown free-response"),
        ({**base, "student": "nobody", "points": 1}, "no graded submission"),
        ({**base, "answer_hash": "0" * 16, "points": 1}, "changed since the page loaded"),
        ({**base, "comment": "x" * 10_001}, "at most"),
        (base, "nothing to save"),
        (["not", "a", "dict"], "not a JSON object"),
    ]
    for request, message in bad:
        with pytest.raises(SaveRefused, match=message):
            data.save(request)
    again = data.state()["students"][0]["answers"]["cost_trend"]
    assert (again["points"], again["comment"], again["state"]) == (0.5, comment, "graded")


def test_a_changed_answer_keeps_its_old_score_but_asks_for_review(book, spec, tmp_path):
    path, _students = book
    data = ReviewData(spec, path)
    student = data.state()["students"][0]
    digest = student["answers"]["cost_trend"]["hash"]
    data.save(
        {
            "student": student["student"],
            "question": "cost_trend",
            "answer_hash": digest,
            "points": 1,
            "comment": "ok",
        }
    )
    out = tmp_path / "out"
    results = rebuild_outputs(spec, path, out)
    scored = next(r for r in results if r.student == student["student"]).question("cost_trend")
    assert scored.points == 1 and "Comment: ok" in scored.message
    assert "Comment: ok" in (out / "feedback" / f"{student['student']}.html").read_text()
    # the student resubmits with a different answer
    file = sorted(SAMPLES.glob("*.ipynb"))[0]
    result, executed = sample_result(spec, file, student["student"])
    result.manual_answers["cost_trend"] = "A different answer now."
    result.content_hash = "f" * 64
    with Gradebook(path) as gb:
        gb.save(result, "test:resubmitted", executed)
    results = rebuild_outputs(spec, path, out)
    pending = next(r for r in results if r.student == student["student"]).question("cost_trend")
    assert pending.status == "manual" and pending.points == 0
    assert "review again" in pending.message and "it had 1 points" in pending.message
    answer = ReviewData(spec, path).state()["students"][0]["answers"]["cost_trend"]
    assert answer["state"] == "review-again" and answer["before"]["points"] == 1
    assert "review again" in (out / "feedback" / f"{student['student']}.html").read_text()
    assert "changed since it was scored" in (out / "report.html").read_text()


def _sheet(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_manual_csv_round_trip_with_comments_and_nothing_half_saved(book, spec, tmp_path):
    path, _students = book
    with Gradebook(path) as gb:
        sheet = manual_csv(spec, gb.current_results(), gb)
    rows = list(csv.DictReader(io.StringIO(sheet)))
    assert set(rows[0]) >= {"comment", "answer_hash", "points"}
    rows[0]["points"], rows[0]["comment"] = "1", 'She said "yes",\nthen "no"; =SUM(A1)'
    good = tmp_path / "good.csv"
    _sheet(good, rows)
    assert import_manual(spec, good, path) == 1
    with Gradebook(path) as gb:
        entry = gb.manual_entries()[(rows[0]["student"], rows[0]["question"])]
        assert entry.points == 1 and entry.comment.startswith('She said "yes",\nthen')
        again = list(csv.DictReader(io.StringIO(manual_csv(spec, gb.current_results(), gb))))
    assert again[0]["points"] == "1" and again[0]["comment"].startswith("She said")
    for bad_value, message in (
        ("abc", "must be a number"),
        ("2", "between 0 and 1"),
        ("0.25", "halves"),
    ):
        rows[0]["points"], rows[1]["points"] = "0", bad_value
        bad = tmp_path / "bad.csv"
        _sheet(bad, rows)
        with pytest.raises(UsageError, match=f"line 3: .*{message}"):
            import_manual(spec, bad, path)
    with Gradebook(path) as gb:  # the good first row of the bad sheets was not written
        assert gb.manual_entries()[(rows[0]["student"], rows[0]["question"])].points == 1


def _request(server, path, body=None, token=None):
    headers = {"X-Grader-Token": server.token if token is None else token}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(server.url.split("/?")[0] + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=600) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"{}")


def test_server_api_token_concurrent_tabs_and_export(book, spec, tmp_path):
    path, students = book
    server = start(spec, path, tmp_path / "out")
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert _request(server, "/api/state", token="wrong")[0] == 403
        status, state = _request(server, "/api/state")
        assert status == 200
        answer = state["students"][1]["answers"]["cost_makes_sense"]
        base = {
            "student": state["students"][1]["student"],
            "question": "cost_makes_sense",
            "answer_hash": answer["hash"],
        }
        # two tabs: one sets points, the other a comment, at the same time
        results = []
        threads = [
            threading.Thread(
                target=lambda f=f: results.append(_request(server, "/api/score", {**base, **f}))
            )
            for f in ({"points": 1}, {"comment": "two tabs"})
        ] * 1
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r[0] for r in results] == [200, 200]
        status, state = _request(server, "/api/state")
        saved = state["students"][1]["answers"]["cost_makes_sense"]
        assert (saved["points"], saved["comment"]) == (1, "two tabs")
        assert _request(server, "/api/score", b"{not json")[0] == 400
        assert _request(server, "/api/score", {**base, "points": "lots"}) == (
            400,
            {"error": "points must be a number, not 'lots'"},
        )
        status, done = _request(server, "/api/export", {})
        assert status == 200 and done["exported"] == len(students)
        assert "two tabs" in (tmp_path / "out" / "feedback" / f"{base['student']}.html").read_text()
        assert (tmp_path / "out" / "report.html").is_file()
    finally:
        server.close()


def test_an_older_gradebook_gains_the_comment_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE manual_scores (student TEXT NOT NULL, question TEXT NOT NULL, "
        "points REAL NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (student, question))"
    )
    db.execute("INSERT INTO manual_scores VALUES ('ann', 'cost_trend', 1, 'then')")
    db.commit()
    db.close()
    with Gradebook(path) as gb:
        entry = gb.manual_entries()[("ann", "cost_trend")]
    assert (entry.points, entry.comment, entry.answer_hash) == (1.0, "", "")


def test_a_megabyte_answer_and_an_oversized_request(book, spec):
    path, _ = book
    with Gradebook(path) as gb:
        result = gb.current_results()[0]
        result.manual_answers["cost_trend"] = "<script>x</script> " + "word " * 200_000
        gb.save(result, "test:huge")
    state = ReviewData(spec, path).state()
    answer = next(s for s in state["students"] if s["student"] == result.student)["answers"][
        "cost_trend"
    ]
    assert answer["chars"] > 1_000_000 and len(answer["html"]) < 150_000
    assert "<script>" not in answer["html"] and "&lt;script&gt;" in answer["html"]
    server = start(spec, path, path.parent / "out")
    try:
        assert _request(server, "/api/score", b"{" + b" " * 300_000 + b"}")[0] == 413
    finally:
        server.close()


def test_a_save_waits_for_a_batch_holding_the_gradebook(book, spec):
    """A running batch commits results while the page saves: the save waits, then lands."""
    import sqlite3
    import time

    path, _ = book
    data = ReviewData(spec, path)
    first = data.state()["students"][0]
    batch = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    batch.execute("BEGIN IMMEDIATE")  # as Gradebook.save holds it while writing a result
    released = threading.Event()

    def release() -> None:
        time.sleep(1.0)
        batch.execute("COMMIT")
        released.set()

    threading.Thread(target=release).start()
    saved = data.save(
        {
            "student": first["student"],
            "question": "cost_trend",
            "answer_hash": first["answers"]["cost_trend"]["hash"],
            "points": 1,
        }
    )
    assert released.is_set() and saved["points"] == 1
    batch.close()


def test_outputs_rebuilt_after_a_save_use_the_assignment_as_edited_meanwhile(book, tmp_path, caplog):
    """The review page was opened, then the instructor edited the assignment: the outputs a
    save rebuilds are what `grader export` would write now; an assignment broken mid-edit
    keeps the last good one, with a warning."""
    import shutil

    from grader.review_server import Exporter
    from grader.spec import load_spec

    path, students = book
    root = tmp_path / "mnist_nn"
    shutil.copytree(SAMPLES.parents[2] / "solutions" / "mnist_nn", root)
    exporter = Exporter(load_spec(root), path, tmp_path / "out")
    try:
        assert exporter.now() == len(students)
        report = tmp_path / "out" / "report.html"
        assert "Building and training a simple neural network" in report.read_text()
        toml = root / "assignment.toml"
        text = toml.read_text()
        toml.write_text(text.replace('title = "Building', 'title = "Edited: building', 1))
        exporter.now()
        assert "Edited: building and training" in report.read_text()
        toml.write_text(text.replace("[assignment]", "[assignment", 1))  # saved half-typed
        exporter.now()
        assert "Edited: building and training" in report.read_text()
        assert "cannot be read again" in caplog.text
    finally:
        exporter.close()


def test_points_lowered_below_a_given_score_ask_for_review_and_never_break_the_export(tmp_path):
    """A score of 1 was saved on the review page; the instructor then lowers the question to
    0.5 and grades again, the page still open. The page shows the new maximum and asks for
    the answer again (the old score shown as before), refuses 1 now, and the outputs are
    rebuilt with the question pending, never failing over the score saved before."""
    import shutil

    from grader.feedback import REVIEW_POINTS
    from grader.spec import load_spec

    root = tmp_path / "mnist_nn"
    shutil.copytree(SAMPLES.parents[2] / "solutions" / "mnist_nn", root)
    path = tmp_path / "gradebook.sqlite"
    first = sorted(SAMPLES.glob("*.ipynb"))[0]
    student = first.name.split("_")[0]
    sample_gradebook(load_spec(root), path, count=1)
    data = ReviewData(load_spec(root), path)
    answer = data.state()["students"][0]["answers"]["cost_trend"]
    base = {"student": student, "question": "cost_trend", "answer_hash": answer["hash"]}
    data.save({**base, "points": 1})
    toml = root / "assignment.toml"
    text = toml.read_text()
    at = text.index("[questions.cost_trend]")
    toml.write_text(text[:at] + text[at:].replace("points = 1", "points = 0.5", 1))
    lowered = load_spec(root)
    # not graded again yet: the score above what the question is worth now counts no more
    pending = rebuild_outputs(lowered, path, tmp_path / "out")[0].question("cost_trend")
    assert (pending.status, pending.points) == ("manual", 0.0)
    with Gradebook(path) as book:  # and the sheet asks for it again, comment kept
        sheet = list(csv.DictReader(io.StringIO(manual_csv(lowered, book.current_results(), book))))
    row = next(r for r in sheet if r["question"] == "cost_trend")
    assert (row["max_points"], row["points"]) == ("0.5", "")
    result, executed = sample_result(lowered, first, student)  # graded again
    with Gradebook(path) as book:
        book.save(result, "test:regraded", executed)
    state = data.state()
    assert next(q["max"] for q in state["questions"] if q["id"] == "cost_trend") == 0.5
    shown = state["students"][0]["answers"]["cost_trend"]
    assert shown["state"] == "review-again" and shown["before"]["points"] == 1 and shown["points"] is None
    with pytest.raises(SaveRefused, match=r"0\.5"):
        data.save({**base, "points": 1})
    results = rebuild_outputs(lowered, path, tmp_path / "out")
    pending = results[0].question("cost_trend")
    assert (pending.status, pending.points) == ("manual", 0.0)
    assert pending.message == f"{REVIEW_POINTS} (it had 1 of 0.5 points)"
    assert "points changed: review again" in (tmp_path / "out" / "feedback" / f"{student}.html").read_text()
    data.save({**base, "points": 0.5})
    scored = rebuild_outputs(lowered, path, tmp_path / "out")[0].question("cost_trend")
    assert (scored.status, scored.points) == ("passed", 0.5)
