"""Batch grading on a Dask cluster: one task per submission.

`grader grade ... --scheduler tcp://HOST:8786` sends each submission to a worker of a running
Dask cluster; `--scheduler local:N` starts a LocalCluster of N single-threaded worker
processes on this machine.

* The task carries everything a worker needs that is not installed there: the assignment's
  hidden folder (spec, reference, checks, source notebook) as bytes, and the submission's
  bytes. The data set is resolved on the worker (env var, user cache, package, download).
* The worker grades exactly as a local worker process does: its own sandbox, its own
  reference cache. A worker without bwrap says so in the result's warnings.
* Results stream back as they complete; the instructor's process alone writes the gradebook.
  A worker that dies mid-task: Dask's scheduler runs the task again on another worker; the
  instructor records one result per submission, so nothing is graded twice.
"""

from __future__ import annotations

import atexit
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .spec import AssignmentSpec, assignment_files, digest_of
from .submissions import Submission, submitted_at

MAX_BUNDLE_BYTES = 50 * 2**20

log = logging.getLogger("grader")


@dataclass(frozen=True)
class Bundle:
    """An assignment's hidden folder as bytes, with its digest (the workers' cache key)."""

    name: str
    files: tuple[tuple[str, bytes], ...]
    digest: str

    @classmethod
    def of(cls, spec: AssignmentSpec) -> Bundle:
        root = spec.root.resolve()
        files: list[tuple[str, bytes]] = []
        size = 0
        for rel, path in assignment_files(root):
            data = path.read_bytes()
            size += len(data)
            if size > MAX_BUNDLE_BYTES:
                raise UsageError(f"the assignment folder {root} is larger than 50 MB")
            files.append((rel, data))
        return cls(root.name, tuple(files), digest_of(files)[:24])

    def unpack(self, into: Path) -> Path:
        folder = into / self.digest / self.name
        if not folder.is_dir():
            staging = Path(tempfile.mkdtemp(prefix="bundle-", dir=into))
            for rel, data in self.files:
                target = staging / self.name / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                (staging / self.name).rename(folder)
            except OSError:  # another task of this worker unpacked it first
                pass
        return folder


# ------------------------------------------------------------------ on the worker

_SESSIONS: dict[str, Any] = {}  # the most recently used last
MAX_SESSIONS = 2  # per worker process: the assignments (or versions of one) graded last
_GRADING = threading.Lock()  # one submission at a time per worker process
_ROOT: Path | None = None


def _close_sessions() -> None:
    """At the worker's exit: close the sessions it keeps. One handler for all of them, so a
    session closed earlier is not kept alive (with its loaded data) by a handler of its own."""
    while _SESSIONS:
        try:
            _SESSIONS.pop(next(iter(_SESSIONS))).close()
        except Exception:  # one that fails to close leaves the others to close
            log.exception("closing a grading session at exit failed")


def _session(bundle: Bundle, options: dict[str, Any]) -> Any:
    """The grading session of this worker process for the assignment bundle, opened on first
    use; the least recently used beyond MAX_SESSIONS are closed (each holds a kernel started
    ahead and a fork server with the data loaded: a long-lived worker serving an edited
    assignment version after version would otherwise keep them all). Call with _GRADING."""
    global _ROOT
    from .grading import open_session
    from .spec import load_spec

    key = bundle.digest + repr(sorted(options.items()))
    session = _SESSIONS.pop(key, None)
    if session is None:
        if _ROOT is None:
            _ROOT = Path(tempfile.mkdtemp(prefix="grader-worker-"))
            atexit.register(_close_sessions)
        spec = load_spec(bundle.unpack(_ROOT))
        worker_options = dict(options)
        dataset = worker_options.get("dataset")
        if dataset is not None and not Path(dataset).is_file():
            worker_options["dataset"] = None  # not on this machine: resolve it here
        cache = worker_options.get("cache_dir")
        if cache is not None and not Path(cache).is_dir():
            worker_options["cache_dir"] = None  # the worker's own reference cache
        session = open_session(spec, **worker_options)
        session.start_kernels_ahead()
    _SESSIONS[key] = session
    while len(_SESSIONS) > MAX_SESSIONS:
        _SESSIONS.pop(next(iter(_SESSIONS))).close()
    return session


def grade_task(
    bundle: Bundle,
    options: dict[str, Any],
    raw: bytes,
    student: str,
    file: str,
    submitted_at: str,
    extra: list[str],
    origin: dict[str, Any] | None = None,
    page_fingerprint: str = "",
) -> dict[str, Any]:
    """Runs on a worker: grade one submission's bytes; the result as plain data, with the
    executed notebook and its feedback page as a local worker returns them
    (batch.worker_answer). `origin`: where the submission came from, as the instructor's
    process records it."""
    from .batch import worker_answer
    from .grading import grade_bytes_executed

    with _GRADING:  # one submission at a time, whatever the worker's threads
        session = _session(bundle, options)
        result, executed = grade_bytes_executed(
            session, raw, student=student, file=file, submitted_at=submitted_at,
            extra_warnings=extra,
        )
    where = _worker_name()
    if session.sandbox_warning:
        result.warnings.append(f"on worker {where}: {session.sandbox_warning}")
    result.log.append(f"graded on worker {where}")
    if origin is not None:
        result.origin = origin
    return worker_answer(session.spec, page_fingerprint, result, executed)


def _worker_name() -> str:
    import socket

    try:
        from distributed import get_worker

        return f"{get_worker().name} ({socket.gethostname()})"
    except (ImportError, ValueError):
        return socket.gethostname()


# ------------------------------------------------------------------ on the instructor's side


@contextmanager
def connect(scheduler: str) -> Iterator[Any]:
    """A Dask client for `tcp://HOST:PORT` (a running scheduler) or `local:N`."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - distributed is a dependency
        raise UsageError("--scheduler needs the `distributed` package") from None
    if scheduler.startswith("local:"):
        try:
            workers = int(scheduler.split(":", 1)[1])
        except ValueError:
            raise UsageError(f"bad scheduler {scheduler!r}", hint="local:N, e.g. local:2") from None
        if workers < 1:
            raise UsageError("local:N needs N >= 1")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        )
        with cluster, Client(cluster) as client:
            yield client
        return
    if "://" not in scheduler:
        raise UsageError(
            f"bad scheduler {scheduler!r}", hint="tcp://HOST:8786 or local:N (a LocalCluster)"
        )
    try:
        client = Client(scheduler, timeout=30)
    except OSError as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    with client:
        yield client


def run_on_dask(
    scheduler: str,
    spec: AssignmentSpec,
    jobs: list[tuple[Submission, bytes, list[str]]],
    options: dict[str, Any],
    page_fingerprint: str,
    record: Callable[[Submission, dict[str, Any], bool], None],
    failed: Callable[[Submission, str], None],
) -> None:
    """Grade `jobs` (submission, its bytes, extra warnings) on the cluster; `record` each
    result (as grade_task's plain data) as it arrives. A task that failed on every try (its
    workers died, or the grader failed) goes to `failed` with the reason."""
    from distributed import as_completed

    bundle = Bundle.of(spec)
    with connect(scheduler) as client:
        shared = client.scatter(bundle, broadcast=True, hash=False)
        futures = {}
        for sub, raw, extra in jobs:
            future = client.submit(
                grade_task,
                shared,
                options,
                raw,
                sub.student,
                sub.label,
                submitted_at(sub),
                extra,
                sub.origin(),
                page_fingerprint,
                pure=False,
            )
            futures[future] = sub
        for future in as_completed(futures):
            sub = futures[future]
            try:
                data = future.result()
            except Exception as exc:  # KilledWorker after repeated deaths, a grader bug
                failed(sub, f"{type(exc).__name__}: {exc}"[:300])
                continue
            record(sub, data, True)
