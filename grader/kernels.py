"""Kernels started ahead: while one submission's answers are checked, the next submission's
fresh kernel starts in its sandbox and does the heavy imports.

Every submission still gets its own new kernel and working folder; a kernel is never used
for a second student. The warm-up runs only the grader's own set-up code (imports, seeds),
which the notebook's set-up cell runs again, so a warm kernel and a cold one leave the
student's first cell in the same state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from .execute import KernelFactory, kernel_env
from .prepare import setup_code
from .spec import GradingSpec

WARMUP_TIMEOUT = 120  # seconds for a kernel to start and import; else it is not used
HISTORY = "--HistoryManager.hist_file=:memory:"  # as nbclient starts its kernels


@dataclass
class KernelSlot:
    """A submission's working folder (data staged) and, when started ahead, its kernel."""

    workdir: Path
    km: KernelManager | None = None
    seconds: float = 0.0  # what starting and warming the kernel took, off the critical path

    def factory(self, fallback: KernelFactory) -> KernelFactory:
        """The kernel factory for this submission: the warm kernel first, then (after a
        kernel death) fresh ones."""

        def make(workdir: Path) -> KernelManager:
            km, self.km = self.km, None
            return km if km is not None else fallback(workdir)

        return make

    def discard(self) -> None:
        if self.km is not None:
            _shutdown(self.km)
            self.km = None
        shutil.rmtree(self.workdir, ignore_errors=True)


def _shutdown(km: KernelManager) -> None:
    with contextlib.suppress(Exception):
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    with contextlib.suppress(Exception):
        km.cleanup_resources()


def warm_kernel(km: KernelManager, workdir: Path, grading: GradingSpec) -> bool:
    """Start `km` in `workdir` and run the grader's set-up code; False if anything failed
    (the kernel is then shut down and the submission starts a cold one)."""
    try:
        km.start_kernel(
            extra_arguments=[HISTORY], env=kernel_env(grading, workdir), cwd=str(workdir)
        )
        kc = km.blocking_client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=WARMUP_TIMEOUT)
            reply = kc.execute_interactive(
                setup_code(grading),
                silent=True,
                store_history=False,
                timeout=WARMUP_TIMEOUT,
                output_hook=lambda _msg: None,
            )
        finally:
            kc.stop_channels()
        if reply.get("content", {}).get("status") != "ok":
            raise RuntimeError("the set-up code failed")
        return True
    except Exception:
        _shutdown(km)
        return False


class Spare:
    """At most one kernel started ahead.

    The kernels are started by one long-lived thread: the sandbox ties a kernel's life to
    the thread that launched it (PR_SET_PDEATHSIG), so a short-lived thread would take its
    kernel with it when it ends."""

    def __init__(
        self,
        new_workdir: Callable[[], Path],
        factory: KernelFactory,
        grading: GradingSpec,
    ) -> None:
        self._new_workdir = new_workdir
        self._factory = factory
        self._grading = grading
        self._starter = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="grader-spare")
        self._next: cf.Future[KernelSlot | None] | None = None

    def prepare(self) -> None:
        """Start the next submission's kernel now (a no-op if one is on its way)."""
        if self._next is None:
            self._next = self._starter.submit(self._start)

    def _start(self) -> KernelSlot | None:
        started = time.monotonic()
        try:
            workdir = self._new_workdir()
        except Exception:  # e.g. the data cannot be staged: the submission says why
            return None
        try:
            km: Any = self._factory(workdir)
        except Exception:
            return KernelSlot(workdir)
        warm = warm_kernel(km, workdir, self._grading)
        return KernelSlot(workdir, km if warm else None, time.monotonic() - started)

    def _collect(self) -> KernelSlot | None:
        future, self._next = self._next, None
        if future is None:
            return None
        try:
            return future.result()
        except Exception:
            return None

    def take(self) -> KernelSlot:
        """The kernel started ahead, or a cold slot when none was."""
        slot = self._collect()
        return slot if slot is not None else KernelSlot(self._new_workdir())

    def close(self) -> None:
        """Stop a kernel started ahead that no submission will use, and the thread that
        started it (with the event loop jupyter_client made for it)."""
        slot = self._collect()
        if slot is not None:
            slot.discard()
        with contextlib.suppress(Exception):
            self._starter.submit(_close_thread_loop).result()
        self._starter.shutdown(wait=True)


def _close_thread_loop() -> None:
    """Close the event loop that jupyter_client's blocking calls set for this thread (its
    sockets stay open until then; a long-lived Dask worker closes sessions one by one)."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # none was made here
        return
    if not loop.is_running() and not loop.is_closed():
        loop.close()
