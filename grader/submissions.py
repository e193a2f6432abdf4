"""Finding the submissions: files, folders, LMS downloads and zip archives.

* folders hold `<student>/<file>.ipynb` or `<student>.ipynb`; LMS downloads are named as
  Canvas names them (`lastfirst_12345_67890_hw1.ipynb`); `.zip` files are a student's own or
  a class archive;
* symbolic links are refused submissions, never followed; a file's bytes are read only when
  it is graded, with a size limit;
* one student with several submissions: the newest counts (`newest_per_student`).
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .assemble import MAX_SUBMISSION_BYTES
from .course import SOURCE_CSV, SOURCE_MTIME, SOURCE_ZIP, time_for
from .errors import UsageError
from .results import writable_text
from .scoring import choose_newest

CANVAS_RE = re.compile(
    r"^(?P<student>[^_]+?)(?P<late>_LATE)?_(?P<uid>\d{3,})_\d{3,}(?:_.+)?$", re.IGNORECASE
)
SKIP_PARTS = ("__MACOSX", ".ipynb_checkpoints")


@dataclass(frozen=True)
class Submission:
    student: str
    label: str  # how it is shown: a path, or archive:member
    path: Path
    member: str | None = None  # inside a zip archive
    mtime: datetime = field(default_factory=lambda: datetime.fromtimestamp(0, UTC))
    time_source: str = SOURCE_MTIME  # where `mtime` came from: grader/course.py
    refused: str | None = None  # why it is not read at all (a symbolic link)

    def origin(self) -> dict[str, Any]:
        """The LMS user id and `_LATE` marker of a Canvas file name, and the time's source."""
        names = [self.member.split("/")[-1]] if self.member else []
        stems = [Path(name).stem for name in (*names, self.path.name)]
        match = next((m for stem in stems if (m := CANVAS_RE.match(stem))), None)
        origin: dict[str, Any] = {"time_source": self.time_source}
        if match:
            origin |= {"lms_id": match.group("uid"), "canvas_late": bool(match.group("late"))}
        return origin

    def read(self) -> bytes:
        """The submission's bytes; OSError for anything that stops reading them."""
        if self.refused:
            raise OSError(self.refused)
        limit = MAX_SUBMISSION_BYTES
        try:
            if self.member is None:
                if self.path.stat().st_size > limit:
                    raise OSError(f"larger than {limit // 2**20} MB")
                return self.path.read_bytes()
            with zipfile.ZipFile(self.path) as zf:
                if zf.getinfo(self.member).file_size > limit:
                    raise OSError(f"larger than {limit // 2**20} MB once unzipped")
                return zf.read(self.member)
        except OSError:
            raise
        except Exception as exc:  # encrypted or corrupt members, unsupported compression
            raise OSError(f"{type(exc).__name__}: {exc}") from exc


def name_text(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (`jos\\xe9.ipynb`, kept by Python as
    surrogate escapes) are read as Latin-1, so the name can be stored, printed and written."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return writable_text(os.fsencode(name).decode("latin-1"))
        except UnicodeEncodeError:  # a lone surrogate that no file system byte made
            return writable_text(name)
    return name


def student_from_name(name: str) -> str:
    """`lastfirst_12345_67890_hw1.ipynb` -> `lastfirst`; `alice.ipynb` -> `alice`."""
    name = name_text(name)
    stem = Path(name).stem if name.lower().endswith(".ipynb") else Path(name).name
    match = CANVAS_RE.match(stem)
    return match.group("student") if match else stem


LINK_REFUSED = (
    "{what} is a symbolic link; links are not followed in submissions "
    "(ask the student to upload the notebook file itself)"
)


def _skip(path: Path) -> bool:
    return any(part in SKIP_PARTS or part.startswith(".") for part in path.parts)


def _from_zip(archive: Path, owner: str | None) -> list[Submission]:
    """The notebooks in a zip. A student's own zip (`owner`: found in their folder or named
    as an LMS names a student's file) is all theirs, dated by the file; only a class archive
    passed by the instructor names students by the folders and files inside it. A member
    that is a symbolic link is refused, never read."""
    label = name_text(str(archive))
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [
                i
                for i in zf.infolist()
                if i.filename.lower().endswith(".ipynb")
                and not i.is_dir()
                and not _skip(Path(i.filename))
            ]
    except Exception:  # not a zip, truncated, unreadable: one broken submission, never a stop
        student = owner or student_from_name(archive.stem)
        return [Submission(student, label, archive, None, _mtime(archive))]
    subs = []
    for info in infos:
        parts = Path(info.filename).parts
        if owner is not None:
            student, mtime, source = owner, _mtime(archive), SOURCE_MTIME
        else:
            student = name_text(parts[-2]) if len(parts) >= 2 else student_from_name(parts[-1])
            try:
                mtime = datetime(*info.date_time, tzinfo=UTC)
                source = SOURCE_ZIP
            except (ValueError, TypeError):
                mtime, source = _mtime(archive), SOURCE_MTIME
        label = f"{name_text(archive.name)}:{name_text(info.filename)}"
        refused = None
        if stat.S_ISLNK(info.external_attr >> 16):
            refused = LINK_REFUSED.format(what=label)
        subs.append(
            Submission(student, label, archive, info.filename, mtime, source, refused=refused)
        )
    return subs


def _zip_owner(name: str) -> str | None:
    """The student a zip belongs to when its name says so (`lastfirst_12345_67890_x.zip`)."""
    stem = Path(name_text(name)).stem
    match = CANVAS_RE.match(stem)
    return match.group("student") if match else None


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def discover(paths: list[Path]) -> list[Submission]:
    """Every submission under the given paths (files, folders, zip archives). Symbolic links
    inside them, and a file argument that is one, are refused submissions, never followed."""
    found: list[Submission] = []
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise UsageError(f"{path} does not exist", hint="pass notebook files or folders")
        if path.is_symlink() and not path.is_dir():
            found.append(_refused(path, path.name, None))
        elif path.is_file() and path.suffix.lower() == ".zip":
            found += _from_zip(path, _zip_owner(path.name))
        elif path.is_file():
            student = student_from_name(path.name)
            found.append(Submission(student, name_text(str(path)), path, None, _mtime(path)))
        else:
            for file, rel in _walk(path):
                owner = name_text(rel.parts[0]) if len(rel.parts) >= 2 else None
                if file.is_symlink():  # a linked notebook, zip or student folder
                    if owner or file.is_dir() or file.suffix.lower() in (".ipynb", ".zip"):
                        found.append(_refused(file, file.name, owner))
                else:
                    found += _from_file(file, file.name, owner)
    return found


def submitted_at(sub: Submission) -> str:
    """The submission's time as the gradebook keeps it."""
    return sub.mtime.isoformat(timespec="seconds")


def with_explicit_times(subs: list[Submission], csv_path: Path) -> list[Submission]:
    """Times from a submissions.csv win over zip entry and file times."""
    from dataclasses import replace

    from .course import read_submission_times

    table = read_submission_times(csv_path)
    out = []
    for sub in subs:
        when = time_for(table, sub.student, sub.label)
        out.append(replace(sub, mtime=when.astimezone(UTC), time_source=SOURCE_CSV) if when else sub)
    return out


def _walk(folder: Path) -> list[tuple[Path, Path]]:
    """Files and links under `folder`, sorted, without following any link."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        links = [d for d in dirs if (base / d).is_symlink()]
        dirs[:] = [d for d in dirs if d not in links and not _skip(Path(d))]
        for name in [*files, *links]:
            rel = (base / name).relative_to(folder)
            if not _skip(rel):
                out.append((base / name, rel))
    return sorted(out)


def _from_file(file: Path, name: str, owner: str | None) -> list[Submission]:
    if file.suffix.lower() == ".zip":
        return _from_zip(file, owner or _zip_owner(name))
    if file.suffix.lower() == ".ipynb":
        student = owner or student_from_name(name)
        return [Submission(student, name_text(str(file)), file, None, _mtime(file))]
    return []


def _refused(link: Path, name: str, owner: str | None) -> Submission:
    label = name_text(str(link))
    student = owner or student_from_name(name)
    when = datetime.fromtimestamp(link.lstat().st_mtime, UTC)
    return Submission(student, label, link, None, when, refused=LINK_REFUSED.format(what=label))


def newest_per_student(subs: list[Submission]) -> tuple[list[Submission], dict[str, list[str]]]:
    by_student: dict[str, list[Submission]] = {}
    for sub in subs:
        by_student.setdefault(sub.student, []).append(sub)
    chosen, dropped = [], {}
    for student, group in sorted(by_student.items()):
        labels = {s.label: s for s in group}
        newest, older = choose_newest((s.label, s.mtime) for s in group)
        chosen.append(labels[newest])
        if older:
            dropped[student] = older
    return chosen, dropped
