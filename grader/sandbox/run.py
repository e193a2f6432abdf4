"""Running a plain process to its end: feeding stdin, capping output, bounding time,
and saying in words why it ended."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..spec import SandboxLimits

_DISK_FULL = b"No space left on device"
_MEMORY_MARKERS = (b"MemoryError", b"Cannot allocate memory", b"can't allocate memory")


@dataclass
class SandboxResult:
    """What a sandboxed process did. `returncode` is negative for a signal (as subprocess)."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes
    duration: float
    killed_reason: str | None = None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_reason is None

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


@dataclass
class Pumped:
    """What :func:`pump` collected, and why it stopped early (None: the process ended)."""

    stdout: bytes
    stderr: bytes
    killed: str | None
    truncated: bool


def pump(
    proc: subprocess.Popen[bytes],
    input: bytes | None,
    *,
    timeout: float,
    cap: int,
    cap_reason: str,
    over_limit: Callable[[], str | None] = lambda: None,
) -> Pumped:
    """Feed `input`, read both pipes up to `cap` bytes in all, until the process ends.

    Stops early (returning why) at `timeout` seconds, at the cap, or when `over_limit()`
    (asked about ten times a second) names a limit. The caller kills the process.
    """
    start = time.monotonic()
    chunks: dict[int, list[bytes]] = {1: [], 2: []}
    captured = 0
    killed: str | None = None
    truncated = False
    exited_at: float | None = None
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, 1)
    sel.register(proc.stderr, selectors.EVENT_READ, 2)
    pending = memoryview(input or b"")
    if proc.stdin is not None:
        os.set_blocking(proc.stdin.fileno(), False)
        if pending:
            sel.register(proc.stdin, selectors.EVENT_WRITE, 0)
        else:
            proc.stdin.close()
    try:
        while sel.get_map() and killed is None:
            now = time.monotonic()
            if now - start >= timeout:
                killed = f"timeout ({timeout:g} s)"
                break
            killed = over_limit()
            if killed:
                break
            if proc.poll() is not None:
                exited_at = exited_at or now
                if now - exited_at > 0.5:  # descendants keep the pipes open
                    break
            for key, _ in sel.select(timeout=min(0.1, max(0.0, timeout - (now - start)))):
                if key.data == 0:
                    assert proc.stdin is not None
                    try:
                        sent = os.write(proc.stdin.fileno(), pending[:65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        sent = len(pending)
                    pending = pending[sent:]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                data = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                room = cap - captured
                if len(data) > room:
                    data = data[: max(room, 0)]
                    truncated = True
                chunks[key.data].append(data)
                captured += len(data)
                if truncated:
                    killed = cap_reason
                    break
    finally:
        sel.close()
    return Pumped(b"".join(chunks[1]), b"".join(chunks[2]), killed, truncated)


def reap(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group the sandbox started (bwrap takes its namespace with it),
    wait for it and close its pipes."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    if proc.returncode is None:  # pragma: no cover - the kernel did not reap it
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def describe_signal(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "?"
    return f"signal {signum} ({name})"


def exit_reason(
    limits: SandboxLimits, returncode: int, stderr: bytes, *, oom_killed: bool = False
) -> str | None:
    """Why a process ended, in words, when a limit (or a signal) ended it; None otherwise."""
    if oom_killed:
        return f"memory limit of the whole sandbox ({limits.memory_mb} MB + files)"
    if returncode < 0:
        signum = -returncode
        if signum == signal.SIGXCPU:
            return f"cpu time limit ({limits.cpu_seconds} s)"
        if signum == signal.SIGXFSZ:
            return f"file size limit ({limits.max_file_mb} MB)"
        if signum == signal.SIGKILL:
            return f"{describe_signal(signum)}: cpu time limit or out of memory"
        return describe_signal(signum)
    if returncode != 0 and any(m in stderr[-4096:] for m in _MEMORY_MARKERS):
        return f"memory limit ({limits.memory_mb} MB)"
    if returncode != 0 and _DISK_FULL in stderr[-4096:]:
        return f"disk limit ({limits.max_disk_mb} MB per private file system)"
    return None
