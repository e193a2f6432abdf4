"""Batch grading: grade the submissions in worker processes, keep every result.

* the submissions are found by `grader/submissions.py`; one student with several
  submissions: the newest counts, with a warning;
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
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from . import results as R
from .course import CourseFiles, finish_results
from .errors import GraderError, UsageError
from .fileio import atomic_write_text
from .gradebook import FILE_NAME as GRADEBOOK_FILE
from .gradebook import Gradebook, ManualScore
from .report import grade_table, one_line, write_outputs
from .results import SubmissionResult
from .scoring import ungradable
from .spec import AssignmentSpec, SandboxLimits, files_digest
from .submissions import (
    Submission,
    discover,
    newest_per_student,
    submitted_at,
    with_explicit_times,
)

log = logging.getLogger("grader")


def fingerprint(spec: AssignmentSpec, settings: str = "") -> str:
    """Changes whenever anything that can change a grade changes."""
    digest = hashlib.sha256(__version__.encode() + b"\0" + settings.encode())
    # the files as they were when the spec was read: what this process grades and draws with
    digest.update((spec.files_digest or files_digest(spec.root)).encode())
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
        submitted_at=submitted_at(sub),
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
        subs = with_explicit_times(subs, options.submission_times)
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
    book = Gradebook(options.gradebook or out / GRADEBOOK_FILE)
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
            if (cached.submitted_at, cached.origin) != (submitted_at(sub), sub.origin()):
                cached.submitted_at, cached.origin = submitted_at(sub), sub.origin()
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
        submitted_at=submitted_at(sub),
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
