"""Batch grading: find the submissions, grade them in worker processes, keep every result.

* submissions are files, folders (`<student>/<file>.ipynb` or `<student>.ipynb`), LMS
  downloads (Canvas names such as `lastfirst_12345_67890_hw1.ipynb`) and `.zip` files;
* one student with several submissions: the newest counts, with a warning;
* results go to the gradebook one by one, so an interrupted batch resumes where it stopped,
  and an unchanged submission is not executed again unless `force` is set;
* grades.csv, feedback files and manual.csv are rebuilt from the gradebook at the end.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing
import os
import re
import stat
import sys
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from . import results as R
from .assemble import MAX_SUBMISSION_BYTES
from .course import SOURCE_CSV, SOURCE_MTIME, SOURCE_ZIP, CourseFiles, finish_results, time_for
from .errors import GraderError, UsageError
from .fileio import atomic_write_text
from .gradebook import Gradebook, ManualScore
from .report import grade_table, one_line, write_outputs
from .results import SubmissionResult, writable_text
from .scoring import choose_newest, ungradable
from .spec import AssignmentSpec, SandboxLimits

log = logging.getLogger("grader")

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


def _when(sub: Submission) -> str:
    return sub.mtime.isoformat(timespec="seconds")


def _explicit_times(subs: list[Submission], csv_path: Path) -> list[Submission]:
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


def fingerprint(spec: AssignmentSpec, settings: str = "") -> str:
    """Changes whenever anything that can change a grade changes."""
    digest = hashlib.sha256(__version__.encode() + b"\0" + settings.encode())
    for path in sorted(spec.root.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".toml", ".json", ".ipynb"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    digest.update(grader_source_digest())
    return digest.hexdigest()[:24]


def grader_source_digest() -> bytes:
    """A digest of this grader's own source files (read now: an edit shows at once)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.digest()


# ------------------------------------------------------------------ worker processes

_SESSION: Any = None


_PAGE_FINGERPRINT = ""  # the batch's, for the feedback pages drawn here (grader/pages.py)


def _init_worker(spec_root: str, options: dict[str, Any], page_fingerprint: str = "") -> None:
    global _SESSION, _PAGE_FINGERPRINT
    from .grading import open_session
    from .spec import load_spec

    spec = load_spec(Path(spec_root))
    _SESSION = open_session(spec, **options)
    _PAGE_FINGERPRINT = page_fingerprint
    _SESSION.start_kernels_ahead()
    # the worker exits through multiprocessing, which runs finalizers, not atexit
    multiprocessing.util.Finalize(_SESSION, _SESSION.close, exitpriority=10)


EXECUTED = "_executed"  # the key of the packed executed notebook in a worker's answer
PAGE = "_page"  # the key of the feedback page's parts drawn by the worker


@dataclass
class Kept:
    """What the gradebook keeps beside a result: the executed notebook (compressed) and the
    feedback page's parts drawn for it as (key, compressed parts), see grader/pages.py."""

    executed: bytes | None = None
    page: tuple[str, bytes] | None = None


def worker_answer(
    spec: AssignmentSpec, page_fingerprint: str, result: SubmissionResult, executed: Any
) -> dict[str, Any]:
    """A worker's answer as plain data: the result, the executed notebook packed and, when
    the batch's `page_fingerprint` is given, the feedback page's costly parts drawn here."""
    from .executed import pack
    from .pages import predraw

    data = result.to_dict()
    packed = pack(executed) if executed is not None else None
    drawn = None
    if page_fingerprint:  # from the result exactly as the instructor's process will read it
        shown = SubmissionResult.from_dict(data).questions
        drawn = predraw(spec, page_fingerprint, shown, packed)
    return {**data, EXECUTED: packed, PAGE: drawn}


def from_answer(data: dict[str, Any]) -> tuple[SubmissionResult, Kept]:
    """The result and what is kept beside it, from a worker's answer."""
    data = dict(data)
    executed = data.pop(EXECUTED, None)
    page = data.pop(PAGE, None)
    kept = Kept(executed)
    if isinstance(page, tuple | list) and len(page) == 2:
        key, parts = page
        if isinstance(key, str) and isinstance(parts, bytes):
            kept.page = (key, parts)
    return SubmissionResult.from_dict(data), kept


def _grade_one(sub: Submission, extra: list[str]) -> dict[str, Any]:
    from .grading import grade_bytes_executed

    try:
        raw = sub.read()
    except OSError as exc:
        raw = b""
        extra = [*extra, f"cannot read {sub.label}: {exc}"]
    result, executed = grade_bytes_executed(
        _SESSION,
        raw,
        student=sub.student,
        file=sub.label,
        submitted_at=_when(sub),
        extra_warnings=extra,
    )
    result.origin = sub.origin()
    return worker_answer(_SESSION.spec, _PAGE_FINGERPRINT, result, executed)


@dataclass
class BatchOptions:
    jobs: int = 1
    force: bool = False
    sandbox: bool = True
    limits: SandboxLimits | None = None
    cache_dir: Path | None = None
    dataset: Path | None = None
    cell_timeout: float | None = None
    notebook_timeout: float | None = None
    gradebook: Path | None = None
    progress: bool | None = None
    scheduler: str | None = None  # a Dask scheduler: tcp://HOST:PORT, or local:N
    fork_server: bool = True  # clean processes forked by one server per worker (bwrap)
    submission_times: Path | None = None  # submissions.csv: student, file, submitted_at
    course: CourseFiles = field(default_factory=CourseFiles)  # roster, extensions


@dataclass
class BatchResult:
    results: list[SubmissionResult]
    graded: int = 0
    cached: int = 0
    failed: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, student: str, note: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"[{bar}] {self.done}/{self.total} {one_line(student)[:30]} {note} "
            f"elapsed {elapsed:.0f}s ETA {eta:.0f}s"
        )
        end = "\r" if self.tty and self.done < self.total else "\n"
        sys.stderr.write(("\x1b[2K" if self.tty else "") + line + end)
        sys.stderr.flush()


def _pool(
    jobs: int, spec: AssignmentSpec, options: dict[str, Any], page_fingerprint: str
) -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(str(spec.root), options, page_fingerprint),
    )


def grade_batch(
    spec: AssignmentSpec,
    paths: list[Path],
    out: Path,
    options: BatchOptions | None = None,
    on_result: Callable[[SubmissionResult], None] | None = None,
) -> BatchResult:
    """Grade every submission under `paths` and write the outputs into `out`."""
    options = options or BatchOptions()
    started = time.monotonic()
    subs = discover(paths)
    if options.submission_times is not None:
        subs = _explicit_times(subs, options.submission_times)
    if not subs:
        raise UsageError(
            "no notebooks were found in " + ", ".join(str(p) for p in paths),
            hint="pass .ipynb files, folders holding them, or .zip downloads",
        )
    chosen, dropped = newest_per_student(subs)
    batch = BatchResult(results=[])
    extra: dict[str, list[str]] = {}
    for student, older in dropped.items():
        message = (
            f"{len(older) + 1} submissions found; the newest was graded, ignored: "
            + ", ".join(older)
        )
        extra[student] = [message]
        batch.warnings.append(f"{student}: {message}")
    out.mkdir(parents=True, exist_ok=True)
    book = Gradebook(options.gradebook or out / "gradebook.sqlite")
    worker_options = {
        "limits": options.limits,
        "cache_dir": options.cache_dir,
        "dataset": options.dataset,
        "sandbox": options.sandbox,
        "cell_timeout": options.cell_timeout,
        "notebook_timeout": options.notebook_timeout,
        "fork_server": options.fork_server,
    }
    session = _preflight(spec, worker_options)
    key = fingerprint(spec, _run_settings(session))
    todo: list[Submission] = []
    progress = Progress(len(chosen), options.progress if options.progress is not None else True)
    for sub in chosen:
        if sub.refused:
            refused = _error_result(spec, sub, sub.refused)
            book.save(refused, f"uncached:{key}:refused")
            batch.graded += 1
            batch.failed += 1
            progress.update(sub.student, "(refused)")
            continue
        cached = None
        if not options.force:
            try:
                content = hashlib.sha256(sub.read()).hexdigest()
            except OSError:
                content = ""
            cached = book.cached(sub.student, f"{key}:{content}")
        if cached is not None:
            if (cached.submitted_at, cached.origin) != (_when(sub), sub.origin()):
                cached.submitted_at, cached.origin = _when(sub), sub.origin()
                book.save(cached, f"{key}:{cached.content_hash}")  # a corrected time
            book.set_current(sub.student, f"{key}:{cached.content_hash}")
            batch.cached += 1
            progress.update(sub.student, "(unchanged, cached)")
        else:
            todo.append(sub)
    if todo:
        _check_sandbox(spec, options, batch)
        record = _recorder(book, key, batch, progress, on_result)
        pages = fingerprint(spec)  # the workers draw the feedback pages (grader/pages.py)
        if options.scheduler:
            _run_dask(spec, options.scheduler, todo, extra, worker_options, pages, record)
        else:
            _run_pool(spec, todo, extra, worker_options, options.jobs, pages, record)
    results = apply_manual(spec, book.current_results(), book)
    results, course = finish_results(spec, results, out, options.course)
    batch.warnings += course.warnings
    batch.results = results
    batch.warnings += write_outputs(spec, results, out, book)
    _write_log(out / "run.log", spec, batch, started)
    book.close()
    batch.seconds = round(time.monotonic() - started, 3)
    return batch


def _preflight(spec: AssignmentSpec, worker_options: dict[str, Any]) -> Any:
    """Open a session here first, as every worker will: a broken checks.py, reference or
    data set is the instructor's to fix, and says so once instead of failing every student."""
    from .grading import open_session

    return open_session(spec, **worker_options)


def _run_settings(session: Any) -> str:
    """What else decides a grade: limits, timeouts, the sandbox, the data file's content."""
    from dataclasses import asdict

    from .data import sha256_file

    settings = {
        "limits": asdict(session.limits),
        "cell_timeout": session.cell_timeout,
        "notebook_timeout": session.notebook_timeout,
        "sandbox": session.sandbox_warning,
        "data": sha256_file(session.dataset_path) if session.dataset_path else None,
    }
    return json.dumps(settings, sort_keys=True, default=str)


def _check_sandbox(spec: AssignmentSpec, options: BatchOptions, batch: BatchResult) -> None:
    if not options.sandbox:
        batch.warnings.append("the sandbox is OFF (--no-sandbox): student code runs unprotected")
        return
    from .sandbox import Sandbox

    warning = Sandbox(limits=options.limits or spec.sandbox, workdir=Path("/tmp")).warning()
    if warning:
        batch.warnings.append(warning)
        log.warning("%s", warning)
        sys.stderr.write(f"warning: {warning}\n")


# record(submission, result, cacheable, what is kept beside it)
Record = Callable[[Submission, SubmissionResult, bool, Kept], None]


def _recorder(
    book: Gradebook,
    key: str,
    batch: BatchResult,
    progress: Progress,
    on_result: Callable[[SubmissionResult], None] | None,
) -> Record:
    """Where every result goes, whichever backend graded it: the gradebook, the counts, the
    progress bar. Only the instructor's process calls it."""

    def record(sub: Submission, result: SubmissionResult, cacheable: bool, kept: Kept) -> None:
        # A failure of the grader itself is kept (nothing is lost) but not cached, so the
        # next run grades that submission again.
        prefix = "" if cacheable else "uncached:"
        book.save(result, f"{prefix}{key}:{result.content_hash}", kept.executed, kept.page)
        batch.graded += 1
        if result.status == R.ERROR:
            batch.failed += 1
        progress.update(sub.student, f"{result.total:g} pts")
        if on_result:
            on_result(result)

    return record


def _run_dask(
    spec: AssignmentSpec,
    scheduler: str,
    todo: list[Submission],
    extra: dict[str, list[str]],
    worker_options: dict[str, Any],
    page_fingerprint: str,
    record: Record,
) -> None:
    """One Dask task per submission; its bytes travel with it (see grader/cluster.py)."""
    from .cluster import run_on_dask

    jobs = []
    for sub in todo:
        warnings = extra.get(sub.student, [])
        try:
            raw = sub.read()
        except OSError as exc:
            raw, warnings = b"", [*warnings, f"cannot read {sub.label}: {exc}"]
        jobs.append((sub, raw, warnings))

    def with_origin(sub: Submission, data: dict[str, Any], cacheable: bool) -> None:
        result, kept = from_answer(data)
        result.origin = sub.origin()  # as the worker was told
        record(sub, result, cacheable and not result.grader_failed, kept)

    def failed(sub: Submission, why: str) -> None:
        error = _error_result(spec, sub, f"grading failed on the cluster: {why}")
        record(sub, error, False, Kept())

    run_on_dask(scheduler, spec, jobs, worker_options, page_fingerprint, with_origin, failed)


def _run_pool(
    spec: AssignmentSpec,
    todo: list[Submission],
    extra: dict[str, list[str]],
    worker_options: dict[str, Any],
    jobs: int,
    page_fingerprint: str,
    record: Record,
) -> None:
    def collect(
        sub: Submission, future: cf.Future[dict[str, Any]]
    ) -> tuple[SubmissionResult, Kept]:
        try:
            return from_answer(future.result())
        except GraderError as exc:
            return _error_result(spec, sub, f"grading failed: {exc}"), Kept()

    suspects: dict[str, tuple[Submission, str]] = {}
    pool = _pool(max(1, min(jobs, len(todo))), spec, worker_options, page_fingerprint)
    try:
        futures = {pool.submit(_grade_one, sub, extra.get(sub.student, [])): sub for sub in todo}
        for future in cf.as_completed(futures):
            sub = futures[future]
            try:
                result, kept = collect(sub, future)
            except cf.process.BrokenProcessPool:
                suspects[sub.student] = (sub, "the grading worker process crashed")
                continue
            except Exception as exc:  # a grader bug must not lose the batch: retry it alone
                suspects[sub.student] = (sub, _describe(exc))
                log.warning(
                    "internal error grading %s, retrying: %s",
                    one_line(sub.student),
                    one_line(_describe(exc)),
                )
                continue
            record(sub, result, not result.grader_failed, kept)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    # A worker process died or the grader failed (not the student's kernel: the grader
    # itself). Retry those submissions one at a time in a fresh worker, so only one that
    # fails again is marked, and its reason kept.
    for sub, first in suspects.values():
        pool = _pool(1, spec, worker_options, page_fingerprint)
        try:
            result, kept = collect(sub, pool.submit(_grade_one, sub, extra.get(sub.student, [])))
            result.log.append(f"graded on the second try; the first failed: {first}")
            record(sub, result, not result.grader_failed, kept)
        except cf.process.BrokenProcessPool:
            message = "the grading worker process crashed on this submission (twice)"
            record(sub, _error_result(spec, sub, message), False, Kept())
        except Exception as exc:
            error = _error_result(spec, sub, f"internal grader error: {_describe(exc)}")
            error.log.append(_traceback(exc))
            record(sub, error, False, Kept())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _traceback(exc: BaseException) -> str:
    """The worker's own traceback travels as the exception's __cause__."""
    import traceback

    return "".join(traceback.format_exception(exc))[-4000:]


def _error_result(spec: AssignmentSpec, sub: Submission, message: str) -> SubmissionResult:
    try:
        content = hashlib.sha256(sub.read()).hexdigest()
    except OSError:
        content = ""
    return SubmissionResult(
        student=sub.student,
        file=sub.label,
        content_hash=content,
        status=R.ERROR,
        error=message,
        questions=[ungradable(q.id, q.points, message) for q in spec.questions],
        submitted_at=_when(sub),
        origin=sub.origin(),
    )


def apply_manual(
    spec: AssignmentSpec,
    results: list[SubmissionResult],
    scores: Gradebook | Mapping[tuple[str, str], float | ManualScore],
) -> list[SubmissionResult]:
    """Manual scores and comments (the gradebook's, or given by student and question) in the
    results (see grader/manual.py)."""
    from .manual import apply_manual as apply

    if isinstance(scores, Gradebook):
        return apply(spec, results, scores.manual_entries())
    entries = {
        key: value if isinstance(value, ManualScore) else ManualScore(float(value))
        for key, value in scores.items()
    }
    return apply(spec, results, entries)


def import_manual(spec: AssignmentSpec, csv_path: Path, gradebook: Path) -> int:
    """Merge a filled-in manual.csv into the gradebook (all rows or none)."""
    from .manual import import_manual as merge

    return merge(spec, csv_path, gradebook)


def rebuild_outputs(
    spec: AssignmentSpec,
    gradebook: Path,
    out: Path,
    course: CourseFiles | None = None,
    warnings: list[str] | None = None,
) -> list[SubmissionResult]:
    """grades.csv and feedback from the gradebook (and the roster and extensions kept in out)."""
    if not gradebook.is_file():
        raise UsageError(f"no gradebook at {gradebook}")
    with Gradebook(gradebook) as book:
        results = apply_manual(spec, book.current_results(), book)
        results, report = finish_results(spec, results, out, course)
        if warnings is not None:
            warnings += report.warnings
        for problem in write_outputs(spec, results, out, book):
            log.warning("%s", one_line(problem))
    return results


def _write_log(path: Path, spec: AssignmentSpec, batch: BatchResult, started: float) -> None:
    lines = [
        f"assignment {spec.id}; {len(batch.results)} students; graded {batch.graded}, "
        f"cached {batch.cached}, errors {batch.failed}; {time.monotonic() - started:.1f}s",
    ]
    lines += [f"warning: {w}" for w in batch.warnings]
    for r in batch.results:
        lines.append(f"== {r.student} ({r.file}) {r.status} {r.total:g}/{r.max_total:g}")
        lines += [f"   timing {k}: {v}s" for k, v in sorted(r.timings.items())]
        lines += [f"   warning: {w}" for w in r.warnings]
        lines += [f"   changed: {c}" for c in r.changed_cells]
        lines += [f"   log: {entry}" for entry in r.log]
        if r.error:
            lines.append(f"   error: {r.error}")
    atomic_write_text(path, "\n".join(one_line(line) for line in lines) + "\n")


def summary(spec: AssignmentSpec, batch: BatchResult) -> str:
    return grade_table(spec, batch.results)
