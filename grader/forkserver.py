"""A clean-process runner that forks instead of starting: one sandboxed server per grading
process, with the codec and the assignment's task modules (and whatever they import and
prepare, such as torch and the data set) loaded once.

Each request still runs in a fresh process that has seen no other submission: the server
(grader/harness.py, ``serve``) forks a child per request, the child runs the student's code,
and before the next child starts the server kills every other process of its sandbox and
empties the writable places. The server is not dumpable, so a child can neither trace it nor
open its memory or pipes. Any run that does not end cleanly (a time or CPU limit, a signal,
an exit code, output past the cap, a garbled answer) ends the whole server; the next request
starts a new one. A server that fails before the student's code began (it could not start,
prepare or fork) is the machine's failure, never the student's result: the run is tried in a
new server, then in a process started for it. Only under bubblewrap: without a pid namespace
of its own the server could not tell a child's leftovers from the grader's processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .clean import HARNESS, MAX_RESULT_BYTES, Runner, RunOutput, last_lines, make_runner
from .errors import ExecutionError, GraderError
from .sandbox.limits import output_cap_bytes
from .sandbox.run import describe_signal, exit_reason, reap
from .spec import SandboxLimits

HEADER_BYTES = 4096
STDERR_KEPT = 65536
READY_TIMEOUT = 300.0  # for a server to start and prepare a task: the grader's time, no student's
MEMORY_GROWTH = 256 * 2**20  # at most this (or an 8th of the limit) left charged by a run
SERVER_CPU_SECONDS = 10**7  # the server's own limit (each child gets the sandbox's cpu_seconds)


def _setup(request: bytes, cpu_seconds: int) -> bytes:
    """What the server itself reads of a request: the codec, the task and its payload, the
    limit. Nothing of the student's (their source), which only the forked child reads."""
    body = json.loads(request)
    task = (body.get("task") or "") if body.get("mode") == "task" else ""
    setup = {
        "codec": body["codec"],
        "task": task,
        "payload": body["payload"] if task else None,
        "cpu_seconds": cpu_seconds,
    }
    return json.dumps(setup).encode()


class _Broken(Exception):
    """The server died, hung or answered something that is not an answer."""


class _Unsupported(Exception):
    """The server cannot give its children namespaces of their own here."""


class _NotStarted(Exception):
    """The child failed before the student's code began (the machine's failure)."""


class ForkServer:
    """A Runner (request bytes, timeout) -> RunOutput backed by one long-lived server; where
    the server cannot isolate its children it says so once, and every later run is started
    afresh (grader/clean.py) instead."""

    def __init__(
        self,
        sandbox_factory: Callable[[Path], Any],
        dataset_path: Path | None,
        stage_as: str | None,
        tmp_root: Path | None = None,
    ) -> None:
        self._factory = sandbox_factory
        self._dataset = dataset_path
        self._stage_as = stage_as
        self._tmp_root = tmp_root
        self._program = HARNESS.read_text(encoding="utf-8")
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sandbox: Any = None
        self._limits: SandboxLimits | None = None  # the sandbox's, for each run
        self._reader: _Reader | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._fallback: Runner | None = None
        self._ever_ready = False  # a server here has once run a child
        self._fresh: int | None = None  # the sandbox's memory with the server fresh
        # bwrap dies with the thread that started it (PR_SET_PDEATHSIG): one thread that
        # lives as long as this runner starts every server.
        self._starter = cf.ThreadPoolExecutor(1, thread_name_prefix="grader-forkserver")
        self.started = 0  # servers started so far (tests and benchmarks read it)

    @property
    def forking(self) -> bool:
        """False once a server said it cannot isolate its children (runs start afresh)."""
        return self._fallback is None

    # ------------------------------------------------------------------ life

    def _start(self) -> None:
        from .data import stage_dataset

        workdir = Path(tempfile.mkdtemp(prefix="grader-serve-", dir=self._tmp_root))
        sandbox = None
        try:
            if self._dataset is not None and self._stage_as:
                stage_dataset(self._dataset, workdir, self._stage_as)
            sandbox = self._factory(workdir)
            limits = sandbox.limits
            sandbox.limits = dataclasses.replace(limits, cpu_seconds=SERVER_CPU_SECONDS)
            sandbox.prepare()
            proc = subprocess.Popen(
                sandbox.command([sys.executable, "-I", "-c", self._program, "serve"]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                **sandbox.popen_kwargs(),
            )
        except (OSError, subprocess.SubprocessError, GraderError) as exc:
            if sandbox is not None:
                sandbox.close()
            shutil.rmtree(workdir, ignore_errors=True)
            if isinstance(exc, GraderError):
                raise
            raise ExecutionError(f"sandbox: cannot start the clean process: {exc}") from exc
        assert proc.stdout is not None and proc.stderr is not None
        self._proc, self._sandbox, self._limits = proc, sandbox, limits
        self._reader = _Reader(proc.stdout.fileno(), proc.stderr.fileno())
        # a runner nobody closed (a caller's bug) still leaves no server behind
        self._finalizer = weakref.finalize(self, _shut, proc, sandbox, workdir, self._reader)
        self.started += 1

    def close(self) -> None:
        """Stop the server (if any) and remove what it left."""
        with self._lock:
            self._stop()
        self._starter.shutdown(wait=True)

    def _stop(self) -> None:
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()
        self._proc = self._sandbox = self._reader = None
        self._fresh = None

    # ------------------------------------------------------------------ one request

    def __call__(self, request: bytes, timeout: float) -> RunOutput:
        with self._lock:
            if self._fallback is None:
                for _attempt in range(2):  # a child the machine failed is tried once more
                    if self._proc is None or self._proc.poll() is not None:
                        self._stop()
                        self._starter.submit(self._start).result()
                    try:
                        output = self._request(request, timeout)
                    except _Unsupported:
                        self._stop()
                        if self._ever_ready:  # a passing failure: this run starts afresh
                            return self._plain()(request, timeout)
                        self._fallback = self._plain()
                        break
                    except _NotStarted:
                        self._stop()
                        continue
                    self._ever_ready = True
                    return output
                else:
                    return self._plain()(request, timeout)
            assert self._fallback is not None
            return self._fallback(request, timeout)

    def _plain(self) -> Runner:
        """A process started for the run, as without a server (grader/clean.py)."""
        return make_runner(self._factory, self._dataset, self._stage_as, self._tmp_root)

    def _request(self, request: bytes, timeout: float) -> RunOutput:
        try:
            end, stdout, stderr, oom_before = self._exchange(request, timeout)
        except _Broken as broken:
            tail = self._reader.server_stderr() if self._reader is not None else ""
            self._stop()
            return RunOutput(b"", tail, str(broken))
        if end.get("started") is False:
            raise _NotStarted
        ended = self._ended(end, stderr, oom_before)
        if ended is not None or not end.get("clean") or self._memory_left():
            self._stop()
        return RunOutput(stdout, last_lines(stderr), ended)

    def _memory_left(self) -> bool:
        """Whether more memory than allowed stays charged to the sandbox compared with the
        server just started (or just prepared): e.g. held by a kernel object of a child's."""
        group = self._sandbox.cgroup()
        memory = group.memory_bytes() if group is not None else None
        limits = self._limits
        if memory is None or self._fresh is None or limits is None:
            return False
        most = min(MEMORY_GROWTH, (limits.memory_mb + limits.max_disk_mb) * 2**20 // 8)
        return bool(memory - self._fresh > most)

    def _exchange(
        self, request: bytes, timeout: float
    ) -> tuple[dict[str, Any], bytes, bytes, int]:
        proc, reader, limits = self._proc, self._reader, self._limits
        assert proc is not None and proc.stdin is not None and reader is not None
        assert limits is not None
        setup = _setup(request, limits.cpu_seconds)
        header = b"%d %d %d\n" % (len(setup), len(request), output_cap_bytes(limits))
        try:  # nothing of the student's has run yet: a failure here is the machine's
            self._send(header + setup)
            ready = reader.line(HEADER_BYTES, self._waiter(READY_TIMEOUT, None, "to start"))
        except _Broken as exc:
            raise _NotStarted from exc
        if ready == b"N":
            raise _Unsupported
        if ready not in (b"R", b"R prepared"):
            raise _Broken("the clean process answered something unreadable")
        group = self._sandbox.cgroup()
        oom_before = group.oom_kills() if group is not None else 0
        if self._fresh is None or ready == b"R prepared":
            self._fresh = group.memory_bytes() if group is not None else None
        wait = self._waiter(timeout, self._sandbox.cpu_seconds(), "")
        self._send(request)
        stdout, stderr = bytearray(), bytearray()
        while True:
            kind, _, rest = reader.line(HEADER_BYTES, wait).partition(b" ")
            if kind == b"S":
                try:
                    end = json.loads(rest)
                except ValueError as exc:
                    raise _Broken("the clean process answered something unreadable") from exc
                if not isinstance(end, dict):
                    raise _Broken("the clean process answered something unreadable")
                return end, bytes(stdout), bytes(stderr), oom_before
            if kind not in (b"O", b"E") or not rest.isdigit() or int(rest) > 1 << 20:
                raise _Broken("the clean process answered something unreadable")
            piece = reader.exactly(int(rest), wait)
            if kind == b"O":
                stdout += piece[: MAX_RESULT_BYTES - len(stdout)]
            else:
                stderr = (stderr + piece)[-STDERR_KEPT:]

    def _send(self, data: bytes) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except OSError as exc:
            raise _Broken("the clean process ended before it was asked") from exc

    def _waiter(self, timeout: float, cpu_before: float | None, what: str) -> Callable[[], None]:
        """A wait for more output that gives up at `timeout` seconds or past the CPU limit."""
        deadline = time.monotonic() + timeout
        limit = float(self._limits.cpu_seconds) if self._limits is not None else float("inf")
        reader = self._reader
        assert reader is not None

        def wait() -> None:
            now = time.monotonic()
            if now >= deadline:
                raise _Broken(f"timeout ({timeout:g} s{' ' + what if what else ''})")
            used = self._sandbox.cpu_seconds()
            if cpu_before is not None and used is not None and used - cpu_before > limit:
                raise _Broken(f"cpu time limit ({limit:g} s)")
            reader.wait(min(0.1, deadline - now))

        return wait

    def _ended(self, end: dict[str, Any], stderr: bytes, oom_before: int) -> str | None:
        limits = self._limits
        assert limits is not None
        if end.get("truncated"):
            return f"output limit ({limits.max_output_mb} MB)"
        signum = end.get("signal")
        if isinstance(signum, int):
            group = self._sandbox.cgroup()
            oom = group is not None and group.oom_kills() > oom_before
            return exit_reason(limits, -signum, stderr, oom_killed=oom) or describe_signal(signum)
        code = end.get("exit")
        if isinstance(code, int) and code != 0:
            return exit_reason(limits, code, stderr) or f"exit code {code}"
        return None


def _shut(proc: subprocess.Popen[bytes], sandbox: Any, workdir: Path, reader: _Reader) -> None:
    reap(proc)
    sandbox.close()
    reader.close()
    shutil.rmtree(workdir, ignore_errors=True)


class _Reader:
    """Reads the server's answers in pieces, calling `wait` (which raises to give up) while
    none is there, and keeps the tail of what the server itself writes on stderr."""

    def __init__(self, fd: int, err_fd: int) -> None:
        self._fd, self._err_fd = fd, err_fd
        self._buffer = bytearray()
        self._err = bytearray()
        self._selector = selectors.DefaultSelector()
        self._selector.register(fd, selectors.EVENT_READ)
        self._selector.register(err_fd, selectors.EVENT_READ)

    def wait(self, seconds: float) -> None:
        for key, _ in self._selector.select(timeout=max(seconds, 0.0)):
            data = os.read(key.fd, 1 << 20)
            if key.fd == self._err_fd:
                if not data:
                    self._selector.unregister(key.fd)
                self._err = (self._err + data)[-STDERR_KEPT:]
            elif not data:
                raise _Broken("the clean process ended")
            else:
                self._buffer += data

    def server_stderr(self) -> str:
        """The last lines the server wrote on stderr (it has ended or is about to be)."""
        with contextlib.suppress(OSError, ValueError, _Broken):
            self.wait(0.05)
        return last_lines(bytes(self._err))

    def line(self, limit: int, wait: Callable[[], None]) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > limit:
                raise _Broken("the clean process answered something unreadable")
            wait()
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line

    def exactly(self, size: int, wait: Callable[[], None]) -> bytes:
        while len(self._buffer) < size:
            wait()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def close(self) -> None:
        self._selector.close()
