"""Finding submissions: files, folders, LMS downloads, zip archives, the same student twice."""

import os
import zipfile
from datetime import UTC, datetime

import pytest

from grader.errors import UsageError
from grader.submissions import discover, newest_per_student, student_from_name


@pytest.mark.parametrize(
    ("name", "student"),
    [
        ("alice.ipynb", "alice"),
        ("smithjohn_12345_67890_mnist_nn.ipynb", "smithjohn"),
        ("smithjohn_LATE_12345_67890_mnist_nn.ipynb", "smithjohn"),
        ("smithjohn_12345_67890_mnist_nn-1.ipynb", "smithjohn"),
        ("Zoë Müller.ipynb", "Zoë Müller"),
        ("my notebook (1).ipynb", "my notebook (1)"),
        ("cost_0_625.ipynb", "cost_0_625"),  # numbers in a name are not LMS ids
        ("model_1_2.ipynb", "model_1_2"),
    ],
)
def test_student_names(name, student):
    assert student_from_name(name) == student


def _touch(path, text="{}", when=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if when:
        os.utime(path, (when, when))


def test_folder_layouts_and_zip(tmp_path):
    _touch(tmp_path / "class" / "alice" / "work.ipynb")
    _touch(tmp_path / "class" / "bob.ipynb")
    _touch(tmp_path / "class" / "carol_111_222_mnist_nn.ipynb")
    _touch(tmp_path / "class" / ".ipynb_checkpoints" / "bob-checkpoint.ipynb")
    _touch(tmp_path / "class" / "notes.txt")
    with zipfile.ZipFile(tmp_path / "class" / "late.zip", "w") as zf:
        zf.writestr("dave/dave.ipynb", "{}")
        zf.writestr("__MACOSX/dave/._dave.ipynb", "junk")
        zf.writestr("erin_333_444_mnist_nn.ipynb", "{}")
    subs = discover([tmp_path / "class"])
    assert sorted(s.student for s in subs) == ["alice", "bob", "carol", "dave", "erin"]
    dave = next(s for s in subs if s.student == "dave")
    assert dave.read() == b"{}" and dave.member == "dave/dave.ipynb"


def test_newest_submission_counts(tmp_path):
    _touch(tmp_path / "s" / "amy_1001_2002_a.ipynb", when=1_700_000_000)
    _touch(tmp_path / "s" / "amy_LATE_1001_2003_a.ipynb", when=1_700_000_500)
    chosen, dropped = newest_per_student(discover([tmp_path / "s"]))
    assert [c.label.endswith("amy_LATE_1001_2003_a.ipynb") for c in chosen] == [True]
    assert len(dropped["amy"]) == 1 and dropped["amy"][0].endswith("amy_1001_2002_a.ipynb")
    assert chosen[0].mtime == datetime.fromtimestamp(1_700_000_500, UTC)


def test_missing_path_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        discover([tmp_path / "nope"])


def test_a_broken_zip_is_one_broken_submission(tmp_path):
    bad = tmp_path / "frank.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    (sub,) = discover([bad])
    assert sub.student == "frank" and sub.member is None


def test_a_students_own_zip_is_theirs_whatever_it_holds(tmp_path):
    """Names and dates inside a student's zip are the uploader's to choose: not trusted."""
    bundle = tmp_path / "class"
    _touch(bundle / "bob" / "bob.ipynb", when=1_700_000_000)
    bundle.joinpath("alice").mkdir(parents=True)
    for target in (bundle / "alice" / "work.zip", bundle / "carol_11111_22222_hw.zip"):
        with zipfile.ZipFile(target, "w") as zf:
            info = zipfile.ZipInfo("bob/x.ipynb", date_time=(2099, 1, 1, 0, 0, 0))
            zf.writestr(info, "{}")
        os.utime(target, (1_600_000_000, 1_600_000_000))
    subs = discover([bundle])
    students = sorted(s.student for s in subs)
    assert students == ["alice", "bob", "carol"]
    chosen, dropped = newest_per_student(subs)
    assert dropped == {}
    assert next(s for s in chosen if s.student == "alice").mtime.year == 2020


def test_a_zip_with_an_impossible_date_is_still_read(tmp_path):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(zipfile.ZipInfo("dora.ipynb", date_time=(1980, 1, 1, 0, 0, 0)), "{}")
    raw = bytearray(archive.read_bytes())
    # zero the DOS date (month 0 does not exist) in the local and central headers
    for header in (b"PK\x03\x04", b"PK\x01\x02"):
        at = raw.find(header)
        offset = 12 if header == b"PK\x03\x04" else 14
        raw[at + offset : at + offset + 2] = b"\x00\x00"
    archive.write_bytes(bytes(raw))
    (sub,) = discover([archive])
    assert sub.student == "dora" and sub.read() == b"{}"
