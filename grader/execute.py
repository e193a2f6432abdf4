"""The one component that runs notebooks: nbclient, extended through its hooks.

`run_notebook` executes a prepared notebook in a fresh (sandboxed) kernel and returns the
executed notebook, a report per cell, and the answers that left the kernel as plain data.

* grading parameters are injected right after the parameters cell;
* seeds, one thread and matplotlib's inline backend (figures as PNG outputs) are set first;
* after each answer cell a snapshot of its answer leaves the kernel, so a later crash or
  timeout still leaves what was answered before; a final extraction cell sends them all;
* every wait is bounded: a per-cell timeout (interrupt, then go on), a whole-notebook
  deadline (the remaining cells are skipped, extraction still runs), a watchdog that kills a
  kernel that ignores interrupts, and a bounded number of restarts after a kernel death;
* outputs are capped per notebook, so a flood of prints costs memory once, not forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from . import selfcheck
from .cells import cell_label
from .cputime import IDLE_CPU, CellLimits, tree_cpu_seconds
from .payload import FrameGuard, bounded, cap_clients
from .prepare import MPL_BACKEND, SKIP_TAG, cell_kind, prepare
from .sandbox import ASYNC_CLIENT
from .spec import GradingSpec, SandboxLimits

GRADER_CELL_ALLOWANCE = 60  # seconds a grader cell may take, within the run's budget
GRADER_KINDS = ("snapshot", "extract", "final", "setup")  # the grader's own cells
MAX_RESTARTS = 2
MIN_RESTART_BUDGET = 20  # seconds: with less time left, a restart could not get far
INTERRUPT_GRACE = 20  # seconds a timed-out cell has to stop after its interrupt

KernelFactory = Callable[[Path], KernelManager]


@dataclass
class CellReport:
    index: int
    cell_id: str
    kind: str  # student | given | parameters | inject | setup | snapshot | extract
    status: str  # ok | error | timeout | skipped | died | not-run
    error: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the kernel's (and its children's) CPU time in this cell


@dataclass
class ExecutionReport:
    notebook: NotebookNode
    answers: dict[str, Any] = field(default_factory=lambda: {"values": {}, "models": {}})
    payloads: list[dict[str, Any]] = field(default_factory=list)
    cells: list[CellReport] = field(default_factory=list)
    restarts: int = 0
    kernel_seconds: float = 0.0  # starting kernels, up to their first cell
    deadline_hit: bool = False
    output_truncated: bool = False
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)

    def failed_cells(self) -> list[CellReport]:
        return [c for c in self.cells if c.status not in ("ok", "skipped", "not-run")]

    def stage_seconds(self) -> dict[str, float]:
        """Where the run's time went: kernel start, the grader's set-up cell (the heavy
        imports), the notebook's own cells, and the grader's extraction cells."""
        stages = {"kernel": self.kernel_seconds, "setup": 0.0, "cells": 0.0, "extract": 0.0}
        for cell in self.cells:
            if cell.kind == "setup":
                stages["setup"] += cell.seconds
            elif cell.kind in ("snapshot", "extract", "final"):
                stages["extract"] += cell.seconds
            else:
                stages["cells"] += cell.seconds
        return {k: round(v, 3) for k, v in stages.items()}


class _GradingClient(NotebookClient):
    """nbclient with an output cap. Everything else goes through nbclient's own hooks."""

    max_output_bytes: int = 20 * 2**20
    output_bytes: int = 0
    truncated: bool = False
    dropped: list[str] = field(default_factory=list)  # messages refused before decoding
    nonce: str = ""
    on_kernel_started_cell: Callable[[], None] | None = None

    def process_message(
        self, msg: dict[str, Any], cell: NotebookNode, cell_index: int
    ) -> NotebookNode | None:
        if msg.get("msg_type") == "execute_input" and self.on_kernel_started_cell:
            # the kernel began this cell, so it let go of any cell interrupted before
            self.on_kernel_started_cell()
        return super().process_message(msg, cell, cell_index)

    def output(
        self,
        outs: list[NotebookNode],
        msg: dict[str, Any],
        display_id: str | None,
        cell_index: int,
    ) -> NotebookNode | None:
        content = msg.get("content", {})
        size = len(json.dumps(content, default=str)) if content else 0
        payload = content.get("data", {}).get(selfcheck.MIME)
        is_grader = (
            isinstance(payload, dict)
            and payload.get("nonce") == self.nonce
            and cell_kind(self.nb.cells[cell_index]) in ("snapshot", "extract", "final")
        )
        if not is_grader:
            self.output_bytes += size
            if self.output_bytes > self.max_output_bytes:
                if not self.truncated:
                    self.truncated = True
                    outs.append(
                        nbformat.v4.new_output(
                            "stream",
                            name="stderr",
                            text="[grader] output limit reached: further output was dropped\n",
                        )
                    )
                return None
        return super().output(outs, msg, display_id, cell_index)


def _payloads(cell: NotebookNode, nonce: str) -> list[dict[str, Any]]:
    found = []
    for out in cell.get("outputs", []):
        data = out.get("data", {}) if out.get("output_type") == "display_data" else {}
        payload = data.get(selfcheck.MIME)
        if isinstance(payload, dict) and payload.get("nonce") == nonce:
            found.append(payload)
    return found


def _kernel_pid(km: KernelManager) -> int | None:
    provisioner = getattr(km, "provisioner", None)
    process = getattr(provisioner, "process", None)
    pid = getattr(process, "pid", None)
    return int(pid) if pid else None


def _cpu_reader(km: KernelManager) -> Callable[[], float | None]:
    """The kernel's CPU seconds so far: from its sandbox's control group when it has one
    (nothing outside the sandbox counts), else from its process tree."""
    group = getattr(km, "cpu_seconds", None)

    def read() -> float | None:
        if callable(group):
            with contextlib.suppress(Exception):
                value = group()
                if value is not None:
                    return float(value)
        return tree_cpu_seconds(_kernel_pid(km))

    return read


def _interrupt(km: KernelManager) -> None:
    """Interrupt the kernel from the watchdog's thread without jupyter_client's sync
    wrappers (each would leave an event loop behind in this thread): a control message for
    a kernel that takes one (the sandbox's), else SIGINT to its process group."""
    manager: Any = km
    with contextlib.suppress(Exception):
        spec = manager.kernel_spec
        if spec is not None and spec.interrupt_mode == "message":
            manager._connect_control_socket()  # made when the kernel started
            manager.session.send(
                manager._control_socket, manager.session.msg("interrupt_request", content={})
            )
            return
        pid = _kernel_pid(km)
        if pid:
            os.killpg(pid, signal.SIGINT)


def _kill(pid: int) -> None:
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        with contextlib.suppress(OSError):
            kill()


def kernel_env(grading: GradingSpec, workdir: Path) -> dict[str, str]:
    """The kernel's whole environment: a short whitelist, one thread, a quiet backend."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    threads = str(grading.threads)
    env.update(
        {
            "HOME": str(workdir),
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MPLBACKEND": MPL_BACKEND,
            "PYTHONHASHSEED": str(grading.seed),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
    )
    return env


def default_kernel_factory(kernel_name: str = "python3") -> KernelFactory:
    def factory(workdir: Path) -> KernelManager:
        return KernelManager(kernel_name=kernel_name, client_class=ASYNC_CLIENT)

    return factory


def grader_reserve(budget: float) -> float:
    """The part of a run's budget kept for the grader's own cells (extraction)."""
    return min(float(GRADER_CELL_ALLOWANCE), budget / 8)


@dataclass
class _Clock:
    """The time limits of one run: student cells start only before `deadline`; nothing of
    the run, the grader's own cells included, goes on after `end`."""

    deadline: float
    end: float
    per_cell: float
    cpu: CellLimits = field(default_factory=CellLimits)

    def timeout_for(self, kind: str) -> int:
        now = time.monotonic()
        if kind in GRADER_KINDS:
            return max(1, int(min(GRADER_CELL_ALLOWANCE, self.end - now)))
        return max(1, int(min(self.per_cell, self.deadline - now) + 0.999))


class _CellTracker:
    """nbclient's cell hooks: which cell runs since when, how each one ended, and which cell
    the kernel may still be stuck in after a timeout."""

    def __init__(self, nb: NotebookNode, clock: _Clock, report: ExecutionReport) -> None:
        self.clock = clock
        self.report = report
        self.cells = [
            CellReport(i, str(c.get("id", "")), cell_kind(c), "not-run")
            for i, c in enumerate(nb.cells)
        ]
        self.started_at = time.monotonic()
        self.first_cell_at: float | None = None  # the kernel was up and ready
        self.current_index = -1
        self.current_start = 0.0
        self.current_limit = float("inf")  # a cell's timeout plus the grace for its interrupt
        self.timed_out_index = -1
        self.stuck_limit = float("inf")  # the timed-out cell must have let go by then
        self.cpu_reader: Callable[[], float | None] = lambda: None
        self.cpu_start: float | None = None
        self.cpu_limit: float | None = None  # CPU seconds the current cell may use
        self.cpu_stopped = -1  # the cell interrupted for its CPU time or for idling
        self.cpu_reason = ""
        self.idle_mark: tuple[float, float] | None = None  # (wall, cpu) when last busy

    def on_start(self, cell: NotebookNode, cell_index: int, **_: Any) -> None:
        if self.first_cell_at is None:
            self.first_cell_at = time.monotonic()
        kind = cell_kind(cell)
        if time.monotonic() > self.clock.deadline and kind not in GRADER_KINDS:
            self.report.deadline_hit = True
            tags = cell.metadata.setdefault("tags", [])
            if SKIP_TAG not in tags:
                tags.append(SKIP_TAG)
        if SKIP_TAG in cell.metadata.get("tags", []) or cell.cell_type != "code":
            self.cells[cell_index].status = "skipped"

    def on_execute(self, cell: NotebookNode, cell_index: int, **_: Any) -> None:
        self.cpu_start = self.cpu_reader()
        self.cpu_limit = None
        if cell_kind(cell) not in GRADER_KINDS and cell_kind(cell) != "inject":
            self.cpu_limit = self.clock.cpu.for_cell(str(cell.get("id", "")))
        self.current_index = cell_index
        self.current_start = time.monotonic()
        self.idle_mark = (self.current_start, self.cpu_start or 0.0)
        limit = self.current_start + self.timeout_for(cell) + INTERRUPT_GRACE
        self.current_limit = min(limit, self.clock.end + INTERRUPT_GRACE / 4)

    def over_cpu(self, now: float) -> str:
        """Why the current cell must be interrupted now ("" if it may go on): it used
        more CPU time than its limit, or it has waited a while without computing."""
        if self.current_index < 0 or self.cpu_stopped == self.current_index:
            return ""
        used = self.cpu_reader()
        if used is None or self.cpu_start is None:
            return ""
        if self.cpu_limit is not None and used - self.cpu_start > self.cpu_limit:
            return f"the cell used more than its CPU time limit ({self.cpu_limit:.0f} s)"
        window = self.clock.cpu.idle_window
        if window is not None and self.idle_mark is not None:
            since, cpu_then = self.idle_mark
            if used - cpu_then >= IDLE_CPU:
                self.idle_mark = (now, used)
            elif now - since > window:
                return f"the cell waited {window:.0f} s without computing"
        return ""

    def stop_for_cpu(self, reason: str, now: float) -> None:
        """The watchdog interrupted the current cell: it gets the grace to let go."""
        self.cpu_stopped = self.current_index
        self.cpu_reason = reason
        self.current_limit = min(self.current_limit, now + INTERRUPT_GRACE)

    def on_executed(
        self, cell: NotebookNode, cell_index: int, execute_reply: dict[str, Any], **_: Any
    ) -> None:
        rec = self.cells[cell_index]
        rec.seconds = round(time.monotonic() - self.current_start, 3)
        used = self.cpu_reader()
        if used is not None and self.cpu_start is not None:
            rec.cpu_seconds = round(used - self.cpu_start, 3)
        content = execute_reply.get("content", {})
        # nbclient's own reply for a timeout has no header; a kernel's always has one, so a
        # student's exception that calls itself CellTimeoutError is just an error
        timed_out = "header" not in execute_reply and content.get("ename") == "CellTimeoutError"
        if content.get("status") == "error":
            ename = content.get("ename", "Error")
            rec.status = "timeout" if timed_out else "error"
            rec.error = f"{ename}: {content.get('evalue', '')}"[:500]
        else:
            rec.status = "ok"
        if self.cpu_stopped == cell_index:
            rec.status = "timeout"
            rec.error = f"CellTimeoutError: {self.cpu_reason} and was interrupted"
        if rec.status == "timeout":
            # nbclient interrupted the kernel and moves on; until a later cell replies, the
            # kernel may still be stuck in this one (a loop that catches KeyboardInterrupt)
            self.timed_out_index = cell_index
            self.stuck_limit = time.monotonic() + INTERRUPT_GRACE
        else:
            self.timed_out_index = -1
            self.stuck_limit = float("inf")
        self.current_index = -1

    def kernel_started_cell(self) -> None:
        """The kernel began a new cell, so it let go of any cell interrupted before."""
        if self.current_index != self.timed_out_index:
            self.timed_out_index = -1
            self.stuck_limit = float("inf")

    def timeout_for(self, cell: NotebookNode) -> int:
        return self.clock.timeout_for(cell_kind(cell))

    def stuck(self, now: float) -> bool:
        """The kernel ignores an interrupt, or runs past the end of the run."""
        running_late = self.current_index >= 0 and now > self.current_limit
        return running_late or now > self.stuck_limit or now > self.clock.end + INTERRUPT_GRACE

    def kernel_seconds(self) -> float:
        """From asking for a kernel to its first cell: start-up, in the sandbox."""
        if self.first_cell_at is None:
            return round(time.monotonic() - self.started_at, 3)
        return round(self.first_cell_at - self.started_at, 3)


class _Watchdog:
    """A thread that kills a kernel that ignores the interrupt at a cell's timeout, or runs
    past the end of the run. nbclient then raises DeadKernelError and run_notebook restarts
    without the cell that would not stop."""

    def __init__(self, km: KernelManager, tracker: _CellTracker) -> None:
        self.km = km
        self.tracker = tracker
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="grader-watchdog", daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            if self.tracker.stuck(now):
                self.fired = True
                pid = _kernel_pid(self.km)
                if pid:
                    _kill(pid)
                return
            reason = self.tracker.over_cpu(now)
            if reason:
                self.tracker.stop_for_cpu(reason, now)
                _interrupt(self.km)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class _Outcome:
    """How one attempt ended."""

    died: bool = False
    error: str = ""
    watchdog_fired: bool = False
    output_bytes: int = 0
    truncated: bool = False
    dropped: list[str] = field(default_factory=list)  # messages refused before decoding


def _client(
    nb: NotebookNode, km: KernelManager, tracker: _CellTracker, workdir: Path, nonce: str
) -> _GradingClient:
    client = _GradingClient(
        nb,
        km=km,
        timeout_func=tracker.timeout_for,
        interrupt_on_timeout=True,
        error_on_timeout={
            "ename": "CellTimeoutError",
            "evalue": f"the cell ran longer than its time limit ({int(tracker.clock.per_cell)} s)"
            " and was interrupted",
        },
        allow_errors=True,
        record_timing=False,
        iopub_timeout=10,
        shutdown_kernel="immediate",
        on_cell_start=tracker.on_start,
        on_cell_execute=tracker.on_execute,
        on_cell_executed=tracker.on_executed,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.nonce = nonce
    client.on_kernel_started_cell = tracker.kernel_started_cell
    return client


def _close(client: _GradingClient, km: KernelManager) -> None:
    kc = getattr(client, "kc", None)
    if kc is not None:  # nbclient stopped before its own clean-up
        with contextlib.suppress(Exception):
            kc.stop_channels()
    with contextlib.suppress(Exception):
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    with contextlib.suppress(Exception):
        km.cleanup_resources()


def _attempt_notebook(prepared: NotebookNode, skip: set[int]) -> NotebookNode:
    """A private copy of the prepared notebook with the cells that killed a kernel skipped."""
    nb: NotebookNode = nbformat.from_dict(json.loads(json.dumps(prepared)))
    for index in skip:
        tags = nb.cells[index].metadata.setdefault("tags", [])
        if SKIP_TAG not in tags:
            tags.append(SKIP_TAG)
    return nb


def _attempt(
    nb: NotebookNode,
    tracker: _CellTracker,
    km: KernelManager,
    workdir: Path,
    env: dict[str, str] | None,
    max_output: int,
    nonce: str,
) -> _Outcome:
    """One run of the notebook in one fresh kernel, every wait bounded."""
    client = _client(nb, km, tracker, workdir, nonce)
    client.max_output_bytes = max(0, max_output)
    tracker.cpu_reader = _cpu_reader(km)
    frames = FrameGuard()
    cap_clients(km, frames)  # before any message is decoded
    outcome = _Outcome()
    with _Watchdog(km, tracker) as watchdog:
        try:
            # cleanup_kc: nbclient keeps the client of a manager it was given; ours must
            # close its sockets whatever happened to the kernel.
            client.execute(env=env, cwd=str(workdir), cleanup_kc=True)
        except DeadKernelError:
            outcome.died = True
        except Exception as exc:  # a kernel that never started, a broken channel, ...
            outcome.died = True
            outcome.error = f"execution stopped: {type(exc).__name__}: {exc}"
    _close(client, km)
    outcome.watchdog_fired = watchdog.fired
    outcome.output_bytes = client.output_bytes
    outcome.truncated = client.truncated or bool(frames.dropped)
    outcome.dropped = list(frames.dropped)
    return outcome


def _collect_answers(nb: NotebookNode, nonce: str, answers: dict[str, Any]) -> None:
    """Answers from the grader's own snapshot and extraction cells only."""
    for cell in nb.cells:
        if cell_kind(cell) not in ("snapshot", "extract"):
            continue
        for payload in _payloads(cell, nonce):
            got = payload.get("answers")
            for part in ("values", "models"):
                found = got.get(part) if isinstance(got, dict) else None
                if isinstance(found, dict):
                    answers[part].update({k: bounded(v) for k, v in found.items()})


def run_notebook(
    nb: NotebookNode,
    *,
    workdir: Path,
    grading: GradingSpec,
    limits: SandboxLimits,
    values: list[str],
    models: list[str],
    answer_variables: dict[str, str] | None = None,
    final_code: Callable[[str], str] | None = None,
    kernel_factory: KernelFactory | None = None,
    env: dict[str, str] | None = None,
    cell_timeout: float | None = None,
    notebook_timeout: float | None = None,
    cell_cpu: CellLimits | None = None,
) -> ExecutionReport:
    """Execute `nb` in fresh kernels until it completes, with every wait bounded.

    `notebook_timeout` bounds the whole run, the grader's own cells included: student cells
    start only before the budget minus a reserve kept for extraction."""
    started = time.monotonic()
    budget = float(notebook_timeout or grading.notebook_timeout)
    clock = _Clock(
        deadline=started + budget - grader_reserve(budget),
        end=started + budget,
        per_cell=float(cell_timeout or grading.cell_timeout),
        cpu=cell_cpu or CellLimits(idle_window=None),
    )
    nonce = secrets.token_hex(16)
    factory = kernel_factory or default_kernel_factory(grading.kernel_name)
    prepared = prepare(
        nb,
        grading,
        nonce,
        values,
        models,
        answer_variables or {},
        final_code(nonce) if final_code else None,
    )
    report = ExecutionReport(notebook=prepared)
    killers: set[int] = set()
    answers: dict[str, Any] = {"values": {}, "models": {}}
    output_so_far = 0

    for attempt in range(MAX_RESTARTS + 1):
        run_nb = _attempt_notebook(prepared, killers)
        tracker = _CellTracker(run_nb, clock, report)
        max_output = limits.max_output_mb * 2**20 - output_so_far
        outcome = _attempt(run_nb, tracker, factory(workdir), workdir, env, max_output, nonce)
        report.kernel_seconds += tracker.kernel_seconds()
        output_so_far += outcome.output_bytes
        report.output_truncated = report.output_truncated or outcome.truncated
        _collect_answers(run_nb, nonce, answers)
        index = tracker.current_index
        if outcome.died and tracker.timed_out_index >= 0:
            index = tracker.timed_out_index  # the cell that ignored its interrupt, not the next
        left = clock.deadline - time.monotonic()
        restart = (
            outcome.died and index >= 0 and attempt < MAX_RESTARTS and left >= MIN_RESTART_BUDGET
        )
        if outcome.died:
            reason = "was killed by the grader's watchdog" if outcome.watchdog_fired else "died"
            if index >= 0:
                tracker.cells[index].status = "died"
                tracker.cells[index].error = f"the kernel {reason} while running this cell"
                killers.add(index)
            if restart:
                then = "restarting without that cell"
            elif index < 0:
                then = "not restarted"
            elif attempt >= MAX_RESTARTS:
                then = f"not restarted: {MAX_RESTARTS} restarts already"
            else:
                then = f"not restarted: only {max(0, int(left))} s of the notebook's time left"
            where = cell_label(run_nb.cells[index], index) if index >= 0 else "no cell"
            report.log.append(f"attempt {attempt + 1}: the kernel {reason} in {where} ({then})")
        report.log += outcome.dropped
        if outcome.error:
            report.log.append(outcome.error)
        report.notebook = run_nb
        report.cells = tracker.cells
        if not restart:
            break
        report.restarts += 1

    report.answers = answers
    report.seconds = round(time.monotonic() - started, 3)
    for cell in report.notebook.cells:
        if cell_kind(cell) == "final":
            report.payloads.extend(_payloads(cell, nonce))
    return report
