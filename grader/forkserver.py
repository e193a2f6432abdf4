"""A clean-process runner that forks instead of starting: one sandboxed server per grading
process, with the codec and the assignment's task modules (and whatever they import and
prepare, such as torch and the data set) loaded once.

Each request still runs in a fresh process that has seen no other submission: the server
(grader/harness.py, ``serve``) forks a child per request, the child runs the student's code,
and before the next child starts the server kills every other process of its sandbox and
empties the writable places. The server is not dumpable, so a child can neither trace it nor
open its memory or pipes. Any run that does not end cleanly (a time or CPU limit, a signal,
an exit code, output past the cap, a garbled answer) ends the whole server; the next request
starts a new one. Only under bubblewrap: without a pid namespace of its own the server could
not tell a child's leftovers from the grader's processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
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

from .clean import HARNESS, MAX_RESULT_BYTES, RunOutput
from .errors import ExecutionError, GraderError
from .sandbox.limits import output_cap_bytes
from .sandbox.run import describe_signal, exit_reason, reap

HEADER_BYTES = 4096
STDERR_KEPT = 65536


def _setup(request: bytes) -> bytes:
    """What the server itself reads of a request: the codec, the task and its payload.
    Nothing of the student's (their source), which only the forked child reads."""
    body = json.loads(request)
    task = (body.get("task") or "") if body.get("mode") == "task" else ""
    setup = {"codec": body["codec"], "task": task, "payload": body["payload"] if task else None}
    return json.dumps(setup).encode()


class _Broken(Exception):
    """The server died, hung or answered something that is not an answer."""


class ForkServer:
    """A Runner (request bytes, timeout) -> RunOutput backed by one long-lived server."""

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
        self._workdir: Path | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        # bwrap dies with the thread that started it (PR_SET_PDEATHSIG): one thread that
        # lives as long as this runner starts every server.
        self._starter = cf.ThreadPoolExecutor(1, thread_name_prefix="grader-forkserver")
        self.started = 0  # servers started so far (tests and benchmarks read it)

    # ------------------------------------------------------------------ life

    def _start(self) -> None:
        from .data import stage_dataset

        workdir = Path(tempfile.mkdtemp(prefix="grader-serve-", dir=self._tmp_root))
        sandbox = None
        try:
            if self._dataset is not None and self._stage_as:
                stage_dataset(self._dataset, workdir, self._stage_as)
            sandbox = self._factory(workdir)
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
        self._proc, self._sandbox, self._workdir = proc, sandbox, workdir
        # a runner nobody closed (a caller's bug) still leaves no server behind
        self._finalizer = weakref.finalize(self, _shut, proc, sandbox, workdir)
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
        self._proc = self._sandbox = self._workdir = None

    # ------------------------------------------------------------------ one request

    def __call__(self, request: bytes, timeout: float) -> RunOutput:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._stop()
                self._starter.submit(self._start).result()
            assert self._proc is not None and self._sandbox is not None
            cpu_before = self._sandbox.cpu_seconds()
            try:
                header, stdout, stderr = self._exchange(request, timeout, cpu_before)
            except _Broken as broken:
                tail = self._stderr_tail()
                self._stop()
                return RunOutput(b"", tail, str(broken))
            ended = self._ended(header, stderr)
            if ended is not None or not header.get("clean"):
                self._stop()
            return RunOutput(stdout, _tail(stderr), ended)

    def _exchange(
        self, request: bytes, timeout: float, cpu_before: float | None
    ) -> tuple[dict[str, Any], bytes, bytes]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        limits = self._sandbox.limits
        cap = output_cap_bytes(limits)
        setup = _setup(request)
        try:
            proc.stdin.write(b"%d %d %d\n" % (len(setup), len(request), cap) + setup + request)
            proc.stdin.flush()
        except OSError as exc:
            raise _Broken("the clean process ended before it was asked") from exc
        deadline = time.monotonic() + timeout
        reader = _Reader(proc.stdout.fileno())
        limit = float(limits.cpu_seconds)

        def wait() -> None:
            now = time.monotonic()
            if now >= deadline:
                raise _Broken(f"timeout ({timeout:g} s)")
            used = self._sandbox.cpu_seconds()
            if cpu_before is not None and used is not None and used - cpu_before > limit:
                raise _Broken(f"cpu time limit ({limit:g} s)")
            reader.wait(min(0.1, deadline - now))

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
                return end, bytes(stdout), bytes(stderr)
            if kind not in (b"O", b"E") or not rest.isdigit() or int(rest) > 1 << 20:
                raise _Broken("the clean process answered something unreadable")
            piece = reader.exactly(int(rest), wait)
            if kind == b"O":
                stdout += piece[: MAX_RESULT_BYTES - len(stdout)]
            else:
                stderr = (stderr + piece)[-STDERR_KEPT:]

    def _ended(self, header: dict[str, Any], stderr: bytes) -> str | None:
        limits = self._sandbox.limits
        if header.get("truncated"):
            return f"output limit ({limits.max_output_mb} MB)"
        signum = header.get("signal")
        if isinstance(signum, int):
            group = self._sandbox.cgroup()
            oom = group is not None and group.oom_killed()
            return exit_reason(limits, -signum, stderr, oom_killed=oom) or describe_signal(signum)
        code = header.get("exit")
        if isinstance(code, int) and code != 0:
            return exit_reason(limits, code, stderr) or f"exit code {code}"
        return None

    def _stderr_tail(self) -> str:
        """What the server itself wrote on stderr (it has ended or is about to be killed)."""
        proc = self._proc
        if proc is None or proc.stderr is None:
            return ""
        with contextlib.suppress(OSError):
            os.set_blocking(proc.stderr.fileno(), False)
            data = proc.stderr.read(65536) or b""
            return _tail(data)
        return ""


def _shut(proc: subprocess.Popen[bytes], sandbox: Any, workdir: Path) -> None:
    reap(proc)
    sandbox.close()
    shutil.rmtree(workdir, ignore_errors=True)


def _tail(stderr: bytes) -> str:
    text = stderr.decode("utf-8", errors="replace")
    return "\n".join(text.strip().splitlines()[-3:])


class _Reader:
    """Reads a pipe in pieces, calling `wait` (which raises to give up) while it is empty."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._selector = selectors.DefaultSelector()
        self._selector.register(fd, selectors.EVENT_READ)

    def wait(self, seconds: float) -> None:
        if self._selector.select(timeout=max(seconds, 0.0)):
            data = os.read(self._fd, 1 << 20)
            if not data:
                raise _Broken("the clean process ended")
            self._buffer += data

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
