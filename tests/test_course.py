"""The course around a batch: submission times, extensions, the roster and the Canvas
gradebook round trip (tests/course/canvas_gradebook.csv is laid out as Canvas exports it:
UTF-8 byte-order mark, CRLF, a `Manual Posting` row, a `Points Possible` row, a section
column with a comma, quoted names, read-only total columns, the Test Student)."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from grader import results as R
from grader.canvas import fill_gradebook, split_records
from grader.cli import main
from grader.course import CourseFiles, finish_results, read_extensions, read_submission_times
from grader.errors import UsageError
from grader.gradebook import Gradebook
from grader.results import QuestionResult, SubmissionResult
from grader.roster import MISSING, apply_roster, read_roster
from grader.spec import load_spec
from grader.submissions import discover

HERE = Path(__file__).parent / "course"
CANVAS = HERE / "canvas_gradebook.csv"
DEADLINE = '\n[deadline]\ndue = "2026-03-07T23:59"\ntimezone = "America/New_York"\ngrace_minutes = 10\npenalty = "per_day"\npercent = 10\nfloor = 50\n'


@pytest.fixture
def course_spec(tmp_path, repo_root):
    """The mnist_nn spec with a deadline (a copy: tests never write into the source tree)."""
    root = tmp_path / "spec"
    shutil.copytree(repo_root / "solutions" / "mnist_nn", root)
    (root / "assignment.toml").write_text((root / "assignment.toml").read_text() + DEADLINE)
    return load_spec(root)


def result(spec, student: str, auto: float, manual: float = 0, *, when: str = "2026-03-07T20:00:00-05:00", **origin) -> SubmissionResult:
    """A gradebook record with `auto` points spread over the auto questions, in order."""
    questions, left = [], auto
    for q in spec.questions:
        if q.auto:
            points = min(q.points, left)
            left -= points
        else:
            points = min(q.points, manual)
            manual -= points
        questions.append(QuestionResult(q.id, R.Q_PASSED if points else R.Q_FAILED, points, q.points))
    return SubmissionResult(student, f"{student}.ipynb", "hash-" + student, R.GRADED, questions, submitted_at=when, origin=origin)


# ------------------------------------------------------------------ submission times


def test_times_come_from_the_csv_then_the_zip_entry_then_the_file(tmp_path):
    folder = tmp_path / "downloads"
    folder.mkdir()
    loose = folder / "eriksenlars_LATE_10277_884302_mnist_nn.ipynb"
    loose.write_text("{}")
    archive = folder / "submissions.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("okaforchidi_10266_884400_mnist_nn.ipynb", (2026, 3, 8, 4, 30, 0))
        zf.writestr(info, "{}")
    own = folder / "lee_LATE_10301_884501_mnist_nn.zip"  # a student's own zip: its name says who
    with zipfile.ZipFile(own, "w") as zf:
        zf.writestr("work/notebook.ipynb", "{}")
    subs = {s.student: s for s in discover([folder])}
    assert subs["lee"].origin() == {"time_source": "file modification time", "lms_id": "10301", "canvas_late": True}
    assert subs["okaforchidi"].mtime == datetime(2026, 3, 8, 4, 30, tzinfo=UTC)
    assert subs["okaforchidi"].origin() == {"time_source": "zip entry time", "lms_id": "10266", "canvas_late": False}
    assert subs["eriksenlars"].origin() == {"time_source": "file modification time", "lms_id": "10277", "canvas_late": True}

    times = tmp_path / "submissions.csv"
    times.write_text("student,file,submitted_at\neriksenlars,,2026-03-09T10:00:00-05:00\n")
    from grader.submissions import with_explicit_times

    fixed = {s.student: s for s in with_explicit_times(list(subs.values()), times)}
    assert fixed["eriksenlars"].mtime == datetime(2026, 3, 9, 15, 0, tzinfo=UTC)
    assert fixed["eriksenlars"].origin()["time_source"] == "submissions.csv"
    assert fixed["okaforchidi"].time_source == "zip entry time"
    times.write_text("student,file,submitted_at\neriksenlars,,2026-03-09T10:00\n")
    with pytest.raises(UsageError, match="no time zone"):
        read_submission_times(times)
    # two times for one file: which one was graded is not guessed (the last row used to win)
    times.write_text("student,file,submitted_at\nlee,a.ipynb,2026-03-07T10:00:00-05:00\nLee,a.ipynb,2026-03-09T10:00:00-05:00\n")
    with pytest.raises(UsageError, match=r"a second time for 'Lee' and 'a\.ipynb'"):
        read_submission_times(times)
    times.write_text("student,file,submitted_at\n,a.ipynb,2026-03-07T10:00:00-05:00\n")
    with pytest.raises(UsageError, match="no student named"):
        read_submission_times(times)


def test_late_penalties_extensions_and_the_mtime_warning(course_spec, tmp_path):
    spec = course_spec
    results = [
        result(spec, "ontime", 15),
        result(spec, "twodays", 15, 10, when="2026-03-09T12:00:00-04:00", time_source="submissions.csv"),
        result(spec, "extended", 10, when="2026-03-09T12:00:00-04:00"),
        result(spec, "copied", 15, when="2026-03-08T00:30:00-05:00", time_source="file modification time"),
    ]
    ext = tmp_path / "ext.csv"
    ext.write_text("student,due,days\nextended,,3\nnobody,2026-03-20T12:00,\n")
    assert read_extensions(ext, spec.deadline)["extended"] == datetime.fromisoformat("2026-03-10T23:59:00-04:00")
    out = tmp_path / "out"
    done, report = finish_results(spec, results, out, CourseFiles(extensions=ext))
    late = {r.student: r for r in done}
    assert late["ontime"].final == 15 and late["ontime"].late["penalty_percent"] == 0
    assert late["twodays"].late["penalty_percent"] == 20 and late["twodays"].final == 20  # 25 * 0.8
    assert "2 started days x 10% = 20%" in late["twodays"].late["explanation"]
    assert "time from the submissions.csv" in late["twodays"].late["explanation"]
    assert late["extended"].final == 10 and "extension" in late["extended"].late["explanation"]
    assert late["copied"].late["penalty_percent"] == 10
    assert any("modification times" in w and "copied" in w for w in report.warnings)
    assert any("nobody" in w for w in report.warnings)
    assert (out / "extensions.csv").read_bytes() == ext.read_bytes()  # kept for `grader export`

    from grader.report import feedback_markdown, grades_csv

    rows = {r["student"]: r for r in csv.DictReader(io.StringIO(grades_csv(spec, done)))}
    assert (rows["twodays"]["total"], rows["twodays"]["penalty_percent"], rows["twodays"]["final"]) == ("25", "20", "20")
    assert rows["twodays"]["late_hours"] == "35.02"  # real hours: DST took one
    assert "Final score 20 \\(raw 25, 20% off\\)" in feedback_markdown(spec, late["twodays"])
    assert "Late" not in feedback_markdown(spec, late["ontime"])


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (",,3\n", "no student named"),  # a blank name must not extend everyone's deadline
        ("alice,,2\nALICE,,3\n", "second extension"),
        ("alice,,nan\n", "days must be"),
        ("alice,,inf\n", "days must be"),
        ("alice,,1e12\n", "days must be"),
        ("alice,,soon\n", "days must be"),
    ],
)
def test_malformed_extension_rows_are_refused(course_spec, tmp_path, rows, message):
    ext = tmp_path / "ext.csv"
    ext.write_text("student,due,days\n" + rows)
    with pytest.raises(UsageError, match=message):
        read_extensions(ext, course_spec.deadline)


# ------------------------------------------------------------------ roster


def test_every_roster_student_gets_a_row_and_strangers_are_listed(course_spec):
    spec = course_spec
    roster = read_roster(HERE / "roster.csv")
    results = [result(spec, "salvarez", 15), result(spec, "JBrown", 12), result(spec, "ghost", 3)]
    match = apply_roster(spec, results, roster)
    rows = {r.student: r for r in match.results}
    assert sorted(rows) == ["JBrown", "cokafor", "ghost", "salvarez", "wchen"]
    assert (rows["cokafor"].status, rows["cokafor"].total, rows["cokafor"].file) == (MISSING, 0, "")
    assert rows["JBrown"].origin["roster_id"] == "jbrown"  # ids compare without case
    assert match.unknown == ["ghost"]


def test_two_submissions_of_one_roster_student_are_listed(course_spec):
    spec = course_spec
    roster = read_roster(HERE / "roster.csv")
    # a second notebook under the e-mail's name: both would carry one student's id silently
    results = [result(spec, "salvarez", 15), result(spec, "salvarez@uni.example", 3)]
    match = apply_roster(spec, results, roster)
    assert match.ambiguous == ["salvarez, salvarez@uni.example (all match salvarez)"]
    # a Canvas export listing one student twice (two sections) gives one `missing` row
    twice = read_roster(CANVAS) * 2
    rows = [r.student for r in apply_roster(spec, [], twice).results]
    assert len(rows) == len(set(rows)) == 6


def test_an_absentee_never_shares_a_name_with_a_submission(course_spec, tmp_path):
    """A file named like one student's login but bearing another's Canvas id matches both:
    both are `missing`, and the absentee whose id is the file's name gets a row of its own,
    never the submission's feedback page or notebook."""
    from grader.report import write_outputs
    from grader.roster import RosterStudent

    roster = [
        RosterStudent("okaforc2", "Okafor, Chidi", canvas_id="20127", login="okaforc2"),
        RosterStudent("OkaforChidi", "Okafor, Chidiebere", canvas_id="20999", login="okaforchidi"),
    ]
    submitted = result(course_spec, "okaforchidi", 15, lms_id="20127")
    match = apply_roster(course_spec, [submitted], roster)
    assert match.ambiguous == ["okaforchidi (matches OkaforChidi, okaforc2)"]
    rows = [(r.student, r.status) for r in match.results]
    assert rows == [("okaforchidi", R.GRADED), ("okaforc2", MISSING), ("OkaforChidi (no submission)", MISSING)]
    write_outputs(course_spec, match.results, tmp_path)
    pages = sorted(p.name for p in (tmp_path / "feedback").glob("*.html"))
    assert len(pages) == 3
    own = (tmp_path / "feedback" / "okaforchidi.html").read_text()
    assert "missing" not in own.split("Score:", 1)[1][:200]


def test_a_canvas_export_is_a_roster_and_matches_by_canvas_id(course_spec):
    roster = read_roster(CANVAS)
    assert [s.name for s in roster] == ["Alvarez, Sofia", "Brown, James", "Chen, Wei", "Okafor, Chidi", 'Zhang, "Max" Wei', "Student, Test"]
    assert roster[2].section == "Section A, Lab 2"
    match = apply_roster(course_spec, [result(course_spec, "alvarezsofia", 15, lms_id="10231")], roster)
    assert match.unknown == [] and len(match.results) == 6


def test_roster_and_extension_files_odd_but_valid_or_broken(course_spec, tmp_path):
    roster = tmp_path / "roster.csv"
    roster.write_text('id,name,email\r\nx1,"Ann\u2028Lee",a@x\r\nx2,"Bob\nSmith",b@x\r\n', encoding="utf-8")
    assert [s.name for s in read_roster(roster)] == ["Ann\u2028Lee", "Bob\nSmith"]  # not "AnnLee"
    roster.write_text('id,name\n"x1,' + "x" * 200_000 + "\n")  # an unclosed quote: one huge field
    with pytest.raises(UsageError, match="cannot read the roster"):
        read_roster(roster)
    ext = tmp_path / "ext.csv"
    ext.write_text('student,days\n"alice,' + "x" * 200_000 + "\n")
    with pytest.raises(UsageError, match="field larger than field limit"):
        read_extensions(ext, course_spec.deadline)


def test_a_roster_without_ids_is_refused(tmp_path):
    bad = tmp_path / "r.csv"
    bad.write_text("name,email\nA,a@x\n")
    with pytest.raises(UsageError, match="no 'id' column"):
        read_roster(bad)


# ------------------------------------------------------------------ Canvas


def test_split_records_keeps_every_byte():
    text = CANVAS.read_bytes().decode("utf-8")
    records = split_records(text)
    assert len(records) == 9 and all(len(r.spans) == 15 for r in records)
    assert records[7].value(text, 0) == 'Zhang, "Max" Wei'
    assert [[r.value(text, i) for i in range(15)] for r in records] == list(
        csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))  # the BOM is no field's
    )
    for text in ('a,"b\r\nc",d\ne,f', "a,b\r", '"x""y",,\r\n"",q\n'):
        values = [[r.value(text, i) for i in range(len(r.spans))] for r in split_records(text)]
        assert values == list(csv.reader(io.StringIO(text, newline=""))), text


def test_a_quoted_header_after_the_byte_order_mark(course_spec):
    """Excel and LibreOffice may quote every field: the first one then follows the BOM."""
    text = '\ufeff"Student","ID","SIS User ID","SIS Login ID","Section","HW1 (77)"\r\n'
    text += '"    Points Possible","","","","","10"\r\n"Doe, Jane","123","s1","jdoe","A",""\r\n'
    filled, report = fill_gradebook(text, [result(course_spec, "jdoe", 12.5)], ["HW1"])
    assert report.filled == {"Doe, Jane": "12.5"}
    assert filled == text.replace('"A",""', '"A","12.5"')


def test_canvas_round_trip_changes_only_the_assignment_column(course_spec, tmp_path, capsys):
    spec = course_spec
    out = tmp_path / "out"
    with Gradebook(out / "gradebook.sqlite") as book:
        for r in (
            result(spec, "alvarezsofia", 15, 9, lms_id="10231"),  # 24 on time
            result(spec, "brownjames", 15, 10, when="2026-03-09T12:00:00-04:00", lms_id="10244"),  # 25 -20%
            result(spec, "wchen", 12.5),  # by SIS login
            result(spec, "ghost", 3),
        ):
            book.save(r, "key:" + r.content_hash)
    argv = ["export", "--assignment", str(spec.root), "--out", str(out), "--canvas", str(CANVAS)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    original = CANVAS.read_bytes()
    expected = (
        original.replace(b"S2026001,salvarez,Section A,,", b"S2026001,salvarez,Section A,24,")
        .replace(b'jbrown,Section B,"12.00",', b'jbrown,Section B,"20",')
        .replace(b'wchen,"Section A, Lab 2",,', b'wchen,"Section A, Lab 2",12.5,')
    )
    assert (out / "canvas-canvas_gradebook.csv").read_bytes() == expected
    assert "filled for 3 students" in printed
    assert "graded, not in Canvas: ghost" in printed
    assert "Okafor, Chidi (ID 10266)" in printed and "Student, Test (ID 10400)" in printed

    # a column given on the command line that matches nothing is an error, not the title's
    assert main([*argv, "--canvas-column", "88400"]) != 0
    assert "no Canvas column" in capsys.readouterr().err
    assert (out / "canvas-canvas_gradebook.csv").read_bytes() == expected

    # with Canvas's own export as the roster, absentees are `missing` and get 0
    assert main([*argv, "--roster", str(CANVAS), "--canvas-column", "884001"]) == 0
    filled = (out / "canvas-canvas_gradebook.csv").read_bytes()
    assert b"cokafor,Section B,0,7.00" in filled and b"mzhang,Section B,0,10.00" in filled
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    assert rows["cokafor"]["status"] == MISSING and rows["cokafor"]["final"] == "0"
    assert rows["brownjames"]["final"] == "20" and rows["brownjames"]["total"] == "25"


def test_canvas_rows_are_never_guessed(course_spec):
    text = CANVAS.read_bytes().decode("utf-8")
    same = [result(course_spec, "x", 1, lms_id="10231"), result(course_spec, "salvarez", 2)]
    filled, report = fill_gradebook(text, same, ["884001"])
    assert filled == text and report.ambiguous == ["Alvarez, Sofia (ID 10231): x, salvarez"]
    broken = result(course_spec, "jbrown", 0)
    broken.status = R.ERROR
    filled, report = fill_gradebook(text, [broken], ["884001"])
    assert filled == text and report.not_graded == ["Brown, James: jbrown could not be graded"]
    # manual points not scored yet: filled with the points so far, and said so
    waiting = result(course_spec, "jbrown", 10)
    waiting.questions = [
        QuestionResult(q.id, R.Q_MANUAL, 0.0, q.points) if not q.auto else q2
        for q, q2 in zip(course_spec.questions, waiting.questions, strict=True)
    ]
    waiting.status = R.NEEDS_MANUAL
    filled, report = fill_gradebook(text, [waiting], ["884001"])
    manual = sum(q.points for q in course_spec.manual_questions)
    assert report.filled == {"Brown, James": "10"}
    assert report.pending == [f"Brown, James: 10 so far, {manual:g} points not scored yet"]
    # Canvas scores the column out of 25 like the assignment: no warning; out of 100: one
    assert report.warnings == []
    out_of_100 = text.replace("Points Possible,,,,,25.00,", "Points Possible,,,,,100.00,")
    filled, report = fill_gradebook(out_of_100, [waiting], ["884001"])
    assert report.warnings == [
        f"Canvas scores {report.column!r} out of 100, this assignment out of 25: points were "
        "written as they are (change one of the two)"
    ]
    # one submission matching two Canvas users (its name part is another James Brown's login)
    twin = text.replace("\r\n\"Chen, Wei\"", '\r\n"Brown, James",10500,S2026099,brownjames,Section A,,,,,,,,,,\r\n"Chen, Wei"')
    filled, report = fill_gradebook(twin, [result(course_spec, "brownjames", 7, lms_id="10244")], ["884001"])
    assert filled == twin and report.filled == {}
    assert report.ambiguous == [
        "Brown, James (ID 10244): brownjames also matches Canvas ID 10500",
        "Brown, James (ID 10500): brownjames also matches Canvas ID 10244",
    ]
    # an older export: LF line endings, no byte-order mark, a `Muted` row
    old = text.lstrip("\ufeff").replace("\r\n", "\n").replace(",,,,,Manual Posting,", ",,,,,Muted,")
    filled, report = fill_gradebook(old, [result(course_spec, "jbrown", 7)], ["Building and training a simple neural network"])
    assert filled == old.replace('jbrown,Section B,"12.00",', 'jbrown,Section B,"7",')
    assert report.filled == {"Brown, James": "7"} and len(report.unmatched_rows) == 5
    with pytest.raises(UsageError, match="no Canvas column"):
        fill_gradebook(text, same, ["Homework 9"])
    with pytest.raises(UsageError, match="not a Canvas gradebook"):
        fill_gradebook("name,score\r\na,1\r\n", same, ["x"])


# ------------------------------------------------------------------ wrong assignment


def test_a_notebook_from_another_assignment_is_an_error_row_not_a_zero(spec, grading_cache, repo_root):
    import json

    from grader.grading import grade_bytes, open_session
    from grader.report import grades_csv

    template = json.loads((repo_root / "assignments" / "mnist_nn" / "mnist_nn.ipynb").read_text())
    assert template["metadata"]["grader"]["assignment"] == "mnist_nn"  # the template records it
    template["metadata"]["grader"]["assignment"] = "mnist_numpy"
    session = open_session(spec, cache_dir=grading_cache)
    result = grade_bytes(session, json.dumps(template).encode(), student="lost", file="hw.ipynb")
    assert result.status == R.ERROR and result.timings == {}  # refused before any kernel ran
    assert result.error == "this notebook is from the assignment 'mnist_numpy', not 'mnist_nn': submit your mnist_nn.ipynb"
    assert {q.status for q in result.questions} == {R.Q_UNGRADABLE}
    row = next(csv.DictReader(io.StringIO(grades_csv(spec, [result]))))
    assert row["status"] == "error" and "mnist_numpy" in row["notes"]


# ------------------------------------------------------------------ the whole batch


def test_grade_a_canvas_download_with_deadline_roster_and_times(course_spec, tmp_path, grading_cache, repo_root, capsys, pages_drawn_here):
    """`grader grade` on a Canvas class zip: zip entry times, the `_LATE` marker, a roster
    (one absentee, one stranger), then a submissions.csv correcting a time on a cached rerun.
    The notebooks are from another assignment, so no kernel runs: this is the plumbing."""
    import json

    template = json.loads((repo_root / "assignments" / "mnist_nn" / "mnist_nn.ipynb").read_text())
    template["metadata"]["grader"]["assignment"] = "another_course"
    body = json.dumps(template).encode()
    archive = tmp_path / "submissions.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        # 2026-03-07 23:59 EST is 2026-03-08 04:59 UTC; Canvas zip entry times are UTC
        zf.writestr(zipfile.ZipInfo("salvarez_10231_900001_mnist_nn.ipynb", (2026, 3, 8, 4, 0, 0)), body)
        zf.writestr(zipfile.ZipInfo("jbrown_LATE_10244_900002_mnist_nn.ipynb", (2026, 3, 9, 6, 0, 0)), body)
        zf.writestr(zipfile.ZipInfo("ghost_10999_900003_mnist_nn.ipynb", (2026, 3, 8, 1, 0, 0)), body)
    out = tmp_path / "out"
    argv = [
        "grade", str(archive), "--assignment", str(course_spec.root), "--out", str(out),
        "--roster", str(HERE / "roster.csv"), "--cache-dir", str(grading_cache), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "not on the roster: ghost" in err
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    assert sorted(rows) == ["cokafor", "ghost", "jbrown", "salvarez", "wchen"]
    assert rows["salvarez"]["submitted_at"] == "2026-03-08T04:00:00+00:00"
    assert (rows["salvarez"]["penalty_percent"], rows["jbrown"]["penalty_percent"]) == ("0", "20")
    assert rows["jbrown"]["status"] == "error" and "another_course" in rows["jbrown"]["notes"]
    assert (rows["wchen"]["status"], rows["wchen"]["final"], rows["wchen"]["file"]) == (MISSING, "0", "")
    feedback = json.loads((out / "feedback" / "jbrown.json").read_text())
    assert feedback["origin"] == {"time_source": "zip entry time", "lms_id": "10244", "canvas_late": True, "roster_id": "jbrown", "roster_name": "James Brown"}
    assert "time from the zip entry time" in feedback["late"]["explanation"]
    # the workers drew the pages; the penalty and the roster are in the summary, made here:
    # only the absentees' pages (no submission, so no worker) were drawn in this process
    absent = [s for s, row in rows.items() if row["status"] == MISSING]
    assert len(absent) == 2 and len(pages_drawn_here) == len(absent)
    assert "20% off" in (out / "feedback" / "jbrown.html").read_text()

    times = tmp_path / "submissions.csv"
    times.write_text("student,file,submitted_at\njbrown,jbrown_LATE_10244_900002_mnist_nn.ipynb,2026-03-08T00:05:00-05:00\n")
    assert main([*argv, "--submissions-csv", str(times)]) == 0
    assert "3 unchanged (cached)" in capsys.readouterr().out
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    assert rows["jbrown"]["submitted_at"] == "2026-03-08T05:05:00+00:00"
    assert rows["jbrown"]["penalty_percent"] == "0"  # inside the 10-minute grace period
    assert "% off" not in (out / "feedback" / "jbrown.html").read_text()
    assert len(pages_drawn_here) == len(absent)  # the new time changed the summary only
    late = json.loads((out / "feedback" / "jbrown.json").read_text())["late"]["explanation"]
    assert "grace" in late and "Canvas marked it LATE" in late and "submissions.csv" in late
    assert main(["export", "--assignment", str(course_spec.root), "--out", str(out)]) == 0
    assert "cokafor" in (out / "grades.csv").read_text()  # the roster kept in out/ is used again


def test_two_roster_students_sharing_an_id_are_never_merged(course_spec):
    """A Canvas export giving two students one id (one's login is the other's SIS id): a
    submission bearing it matches both and is ambiguous, never put on one of them; absent,
    each gets a row of its own, and no absentee's row takes a name another row bears."""
    from grader.roster import RosterStudent

    roster = [
        RosterStudent("jdoe", "Doe, Jane", canvas_id="301", login="jdoe"),
        RosterStudent("jdoe", "Doe, John", canvas_id="302", sis_id="jdoe"),
        RosterStudent("kim", "Kim, A", canvas_id="303", login="kim"),
    ]
    match = apply_roster(course_spec, [result(course_spec, "jdoe", 15)], roster)
    assert match.ambiguous == ["jdoe (matches jdoe (Canvas ID 301), jdoe (Canvas ID 302))"]
    rows = [(r.student, r.status) for r in match.results]
    assert rows == [
        ("jdoe", R.GRADED),
        ("jdoe (Canvas ID 301)", MISSING),
        ("jdoe (Canvas ID 302)", MISSING),
        ("kim", MISSING),
    ]
    # the absentee's name and its first alternative borne by submissions: numbered on
    files = [result(course_spec, name, 15) for name in ("amy", "Amy (no submission)")]
    roster = [RosterStudent("amy", "A, Amy"), RosterStudent("bo", "B, Bo", email="AMY@uni.edu")]
    match = apply_roster(course_spec, files, roster)
    assert match.ambiguous == ["amy (matches amy, bo)"] and match.unknown == ["Amy (no submission)"]
    assert [r.student for r in match.results] == ["amy", "Amy (no submission)", "amy (no submission 2)", "bo"]


def test_the_canvas_export_fills_the_row_the_roster_matched_when_two_students_share_an_id(course_spec, tmp_path):
    from grader.roster import RosterStudent

    """Jane's login is John's SIS id (`jdoe`). John's file (his Canvas id in its name) is
    matched to John by the roster; the Canvas export fills John's row with his score and
    Jane's with her `missing` 0, never the other way round, never both as ambiguous."""
    from grader.canvas import fill_gradebook

    text = CANVAS.read_text(encoding="utf-8-sig")
    rows = '"Doe, Jane",301,S2026301,jdoe,Section A,,,,,,,,,,\r\n"Doe, John",302,jdoe,,Section A,,,,,,,,,,\r\n'
    text = text.replace('"Alvarez, Sofia"', rows + '"Alvarez, Sofia"', 1)
    path = tmp_path / "canvas.csv"
    path.write_text(text, encoding="utf-8")
    roster = [s for s in read_roster(path) if s.canvas_id in ("301", "302")]
    assert [s.id for s in roster] == ["jdoe", "jdoe"]
    john = result(course_spec, "doejohn", 12, lms_id="302")
    match = apply_roster(course_spec, [john], roster)
    assert match.ambiguous == [] and match.unknown == []
    assert [(r.student, r.status) for r in match.results] == [("doejohn", R.GRADED), ("jdoe (Canvas ID 301)", MISSING)]
    filled, report = fill_gradebook(text, match.results, ["884001"])
    assert report.filled == {"Doe, John": "12", "Doe, Jane": "0"} and report.ambiguous == []
    assert '"Doe, John",302,jdoe,,Section A,12,' in filled and '"Doe, Jane",301,S2026301,jdoe,Section A,0,' in filled
    # a file bearing another Canvas user's id than the one the roster matched it to (the
    # roster predates that user): ambiguous, never filled on the roster's match alone
    late = text.replace('"Alvarez, Sofia"', '"Salva, Rez",10500,S2026500,srez,Section A,,,,,,,,,,\r\n"Alvarez, Sofia"', 1)
    sofia = [RosterStudent("salvarez", "Alvarez, Sofia", canvas_id="10231", login="salvarez")]
    match = apply_roster(course_spec, [result(course_spec, "salvarez", 12, lms_id="10500")], sofia)
    _, report = fill_gradebook(late, match.results, ["884001"])
    assert "Alvarez, Sofia" not in report.filled and "Salva, Rez" not in report.filled
    assert sorted(report.ambiguous) == [
        "Alvarez, Sofia (ID 10231): salvarez also matches Canvas ID 10500",
        "Salva, Rez (ID 10500): salvarez also matches Canvas ID 10231",
    ]
    # a roster from another Canvas (its user ids not in this export): matched as before
    other = [RosterStudent("salvarez", "Alvarez, Sofia", canvas_id="99231", login="salvarez")]
    match = apply_roster(course_spec, [result(course_spec, "salvarez", 12)], other)
    _, report = fill_gradebook(text, match.results, ["884001"])
    assert report.filled["Alvarez, Sofia"] == "12"
