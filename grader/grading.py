"""Grading one submission: read, restore, execute, extract, check, score.

Nothing here raises for a student's mistake: every problem becomes part of the returned
SubmissionResult, so a batch never stops because of one submission.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import threadpoolctl
from nbformat import NotebookNode

from . import results as R
from .assemble import Assembly, assemble, content_hash, parse_notebook
from .authoring import load_source, make_template, recorded_assignment
from .cells import ANSWER, cell_label, cell_role
from .checking import (
    Answer,
    CheckContext,
    cached_json,
    decode,
    find_definition_source,
    load_module,
    parse_cell,
    run_check,
)
from .clean import Runner, RunOutput, make_runner
from .cputime import CellLimits, cell_limits, load_cell_times
from .data import default_cache_dir, resolve_dataset, stage_dataset
from .errors import GraderError, SubmissionError
from .execute import ExecutionReport, KernelFactory, kernel_env, run_notebook
from .executed import curve_variables, keep_executed, shown_answers, training_curve
from .forkserver import ForkServer
from .kernels import KernelSlot, Spare
from .results import QuestionResult, SubmissionResult
from .scoring import manual_pending, score_question, ungradable
from .spec import AssignmentSpec, Question, SandboxLimits

SandboxFactory = Callable[[Path], Any]


@dataclass
class Session:
    """What grading needs, prepared once per process and reused for every submission."""

    spec: AssignmentSpec
    template: NotebookNode
    checks: ModuleType | None
    dataset_path: Path | None
    cache_dir: Path
    limits: SandboxLimits
    sandbox_factory: SandboxFactory | None
    kernel_factory: KernelFactory | None
    hidden_paths: list[Path] = field(default_factory=list)
    tmp_root: Path | None = None
    cell_timeout: float | None = None
    notebook_timeout: float | None = None
    context: CheckContext | None = None
    sandbox_warning: str | None = None
    ends_at: float = float("inf")  # the current submission's budget ends (time.monotonic)
    reference_mark: float = 0.0  # the context's reference_seconds when this submission began
    spare: Spare | None = None  # the next submission's kernel, started ahead (batch workers)
    _checker: cf.ThreadPoolExecutor | None = field(default=None, repr=False)
    cell_cpu: CellLimits = field(default_factory=CellLimits)  # per-cell CPU-time limits
    last_report: ExecutionReport | None = None  # the last run (grader calibrate reads it)
    fork_server: bool = False  # clean processes forked by one server (needs bwrap)
    server: ForkServer | None = field(default=None, repr=False)

    def start_kernels_ahead(self) -> None:
        """From now on, start each next submission's kernel while this one is checked."""
        if self.spare is None and self.kernel_factory is not None:
            self.spare = Spare(self.new_workdir, self.kernel_factory, self.spec.grading)
            self.spare.prepare()

    def close(self) -> None:
        """Stop the kernel started ahead, the check thread and the fork server (once)."""
        spare, self.spare = self.spare, None
        if spare is not None:
            spare.close()
        checker, self._checker = self._checker, None
        if checker is not None:
            checker.shutdown(wait=True)
        server, self.server = self.server, None
        if server is not None:
            server.close()

    def checker(self) -> cf.ThreadPoolExecutor:
        """One long-lived thread for checks that run while the notebook executes (a thread
        that ended would take the sandboxed processes it started with it)."""
        if self._checker is None:
            self._checker = cf.ThreadPoolExecutor(1, thread_name_prefix="grader-check")
        return self._checker

    def new_workdir(self) -> Path:
        """A fresh working folder with the data set staged where the notebook reads it."""
        workdir = Path(tempfile.mkdtemp(prefix="grader-nb-", dir=self.tmp_root))
        dataset = self.spec.dataset
        if self.dataset_path is not None and dataset and dataset.stage_as:
            stage_dataset(self.dataset_path, workdir, dataset.stage_as)
        return workdir

    def take_slot(self) -> KernelSlot:
        return self.spare.take() if self.spare is not None else KernelSlot(self.new_workdir())

    def budget(self) -> float:
        """One wall-clock budget per submission: execution, grader cells and checks."""
        return float(self.notebook_timeout or self.spec.grading.notebook_timeout)

    def ctx(self) -> CheckContext:
        if self.context is None:
            runner = None
            if self.sandbox_factory is not None:
                stage = self.spec.dataset.stage_as if self.spec.dataset else None
                args = (self.sandbox_factory, self.dataset_path, stage, self.tmp_root)
                plain: Runner
                if self.fork_server:
                    plain = self.server = ForkServer(*args)
                else:
                    plain = make_runner(*args)
                runner = self._shared(self._within_budget(plain))
            self.context = CheckContext(self.spec, self.dataset_path, self.cache_dir, runner)
        return self.context

    def _within_budget(self, run: Runner) -> Runner:
        """A clean-process run gets what is left of the submission's budget, at least the
        part kept for checks, never more than it asked for. Time the batch spent on
        reference results (shared by every student) is not the student's."""

        def bounded(body: bytes, timeout: float) -> RunOutput:
            reference = self.ctx().reference_seconds - self.reference_mark
            left = self.ends_at + reference - time.monotonic()
            return run(body, min(timeout, max(left, self.check_reserve())))

        return bounded

    def check_reserve(self) -> float:
        """The part of a submission's budget kept for its checks after the notebook ran."""
        return check_reserve(self.budget())

    def _shared(self, run: Runner) -> Runner:
        """A clean-process run computed once per distinct request (the student's source and
        what the check asks of it), shared through the reference cache by every worker and
        batch. Only a run that ended cleanly is kept: a timeout or a crash is never reused."""

        def shared(body: bytes, timeout: float) -> RunOutput:
            ctx = self.ctx()
            setting = json.dumps([asdict(self.limits), self.sandbox_warning], default=str)
            digest = hashlib.sha256(body + b"\0" + setting.encode()).hexdigest()
            key = {"data": ctx.data_hash, "input": digest, **ctx.code_key}
            path = self.cache_dir / self.spec.id / f"clean-run-{digest[:32]}.json"

            def compute() -> dict[str, str]:
                output = run(body, timeout)
                if output.ended is not None or len(output.stdout) > MAX_SHARED_OUTPUT:
                    raise _Uncacheable(output)
                stdout = base64.b64encode(output.stdout).decode()
                return {"stdout": stdout, "stderr_tail": output.stderr_tail}

            try:
                stored = cached_json(path, key, compute)
            except _Uncacheable as failed:
                return failed.output
            return RunOutput(base64.b64decode(stored["stdout"]), stored["stderr_tail"], None)

        return shared


MAX_SHARED_OUTPUT = 8 * 2**20  # larger clean-process outputs are not kept in the cache


class _Uncacheable(Exception):
    def __init__(self, output: RunOutput) -> None:
        super().__init__("a run that did not end cleanly")
        self.output = output


def check_reserve(budget: float) -> float:
    """The part of a submission's budget kept for the checks after the notebook ran (a
    class check starts with the run and has the whole budget)."""
    return min(60.0, budget / 6)


def single_threaded_numerics() -> None:
    """The grading process's own numerical libraries run on one thread each.

    A grading process forks (kernels started ahead, clean processes for checks) from
    background threads while its main thread computes. OpenBLAS's fork handler deadlocks when
    a multi-threaded BLAS call is in flight at that moment: a batch hung for good with one
    thread in ``fork`` and the main thread in a numpy product. One thread per library also
    fits ``--jobs N`` on N cores."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # libraries loaded from now on
    threadpoolctl.threadpool_limits(1)  # libraries already loaded


def open_session(
    spec: AssignmentSpec,
    *,
    limits: SandboxLimits | None = None,
    cache_dir: Path | None = None,
    dataset: Path | None = None,
    hidden_paths: list[Path] | None = None,
    sandbox: bool = True,
    cell_timeout: float | None = None,
    notebook_timeout: float | None = None,
    tmp_root: Path | None = None,
    fork_server: bool = True,
) -> Session:
    """Load the template, checks and data once; choose the sandbox. `fork_server`: clean
    processes are forked by one sandboxed server that has the task modules loaded (under
    bubblewrap only; elsewhere each starts afresh)."""
    from . import sandbox as sb

    single_threaded_numerics()

    template = make_template(spec, load_source(spec))
    checks = (
        load_module(spec.checks_path, f"_grader_checks_{spec.id}") if spec.checks_path else None
    )
    dataset_path = None
    if spec.dataset is not None:
        validator = None
        if spec.dataset.validator and spec.reference_path:
            ref = load_module(spec.reference_path, f"_grader_ref_{spec.id}")
            validator = getattr(ref, spec.dataset.validator)
        dataset_path = resolve_dataset(spec.dataset, explicit=dataset, validator=validator)
    limits = limits or spec.sandbox
    hidden = [spec.root.resolve(), *(hidden_paths or [])]
    use_bwrap = None if sandbox else False
    probe = sb.Sandbox(
        limits=limits, workdir=Path(tempfile.gettempdir()), hidden=hidden, use_bwrap=use_bwrap
    )
    warning = probe.warning()

    def sandbox_factory(workdir: Path) -> Any:
        return sb.Sandbox(limits=limits, workdir=workdir, hidden=hidden, use_bwrap=use_bwrap)

    def kernel_factory(workdir: Path) -> Any:
        return sb.SandboxedKernelManager.for_sandbox(
            sandbox_factory(workdir), kernel_name=spec.grading.kernel_name
        )

    return Session(
        spec=spec,
        template=template,
        checks=checks,
        dataset_path=dataset_path,
        cache_dir=cache_dir or default_cache_dir(),
        limits=limits,
        sandbox_factory=sandbox_factory,
        kernel_factory=kernel_factory,
        hidden_paths=hidden,
        tmp_root=tmp_root,
        cell_timeout=cell_timeout,
        notebook_timeout=notebook_timeout,
        sandbox_warning=warning,
        cell_cpu=_cell_cpu(spec),
        fork_server=fork_server and probe.mode == sb.MODE_BWRAP,
    )


def _cell_cpu(spec: AssignmentSpec) -> CellLimits:
    """Per-cell CPU-time limits from the reference's cell times (idle cells are stopped
    whether or not those were measured)."""
    times = load_cell_times(spec.root)
    if not times:
        return CellLimits()
    return cell_limits(times, spec.grading.cell_cpu_factor, spec.grading.cell_cpu_margin)


def _context_sources(template: NotebookNode, q: Question) -> list[str]:
    """The question's `context_cells`, whole, from the template (the source's given cells,
    never the submission's), with IPython magics turned into Python."""
    cells = {c.get("id"): c.source for c in template.cells}
    parsed = [parse_cell(cells[cid]) for cid in q.context_cells if cid in cells]
    return [p[0] for p in parsed if p is not None]


def _answers(
    session: Session, report: ExecutionReport | None, asm: Assembly
) -> dict[str, Answer]:
    spec = session.spec
    values = report.answers.get("values", {}) if report else {}
    models = report.answers.get("models", {}) if report else {}
    out: dict[str, Answer] = {}
    for q in spec.auto_questions:
        if q.kind in ("class", "function"):
            # of the student's cells only imports, definitions and literal constants,
            # after the instructor's context cells
            source = find_definition_source(asm.student_sources, q.variable, q.kind)
            if source is not None:
                source = "\n\n".join([*_context_sources(session.template, q), source])
            out[q.id] = Answer(q, source is not None, None, source)
        elif q.kind == "model":
            present = q.variable in models
            out[q.id] = Answer(q, present, decode(models.get(q.variable)) if present else None)
        else:
            present = q.variable in values
            out[q.id] = Answer(q, present, decode(values.get(q.variable)) if present else None)
    return out


def _execution_problem(report: ExecutionReport) -> str:
    parts = []
    if report.deadline_hit:
        parts.append("the notebook ran out of time and later cells were skipped")
    died = [c for c in report.cells if c.status == "died"]
    if died:
        cell = report.notebook.cells[died[0].index]
        parts.append(f"the kernel died in {cell_label(cell, died[0].index)}")
    if report.restarts:
        parts.append(f"the kernel was restarted {report.restarts} time(s)")
    if report.output_truncated:
        parts.append("the output limit was reached and further output was dropped")
    return "; ".join(parts)


def grade_question(
    session: Session, q: Question, answer: Answer, report: ExecutionReport | None
) -> QuestionResult:
    if not answer.present:
        why = f"{q.variable} was not defined when the notebook finished"
        if q.kind in ("class", "function"):
            why = f"no {q.kind} {q.variable} was found in the notebook"
        if report is not None and (report.deadline_hit or report.restarts):
            return ungradable(q.id, q.points, f"{why}: {_execution_problem(report)}")
        if report is not None and any("dropped without being read" in x for x in report.log):
            why += " (an output too large to read was dropped: an answer may be too large)"
        return score_question(q.id, q.points, [], missing_message=why)
    if session.checks is None:
        raise SubmissionError(f"assignment {session.spec.id!r} has no checks module")
    checks = run_check(q, answer, session.ctx(), session.checks)
    return score_question(q.id, q.points, checks, q.subchecks)


# A given (locked) cell that fails with one of these, times out or kills the kernel failed
# because of the machine, not because of the student's answers.
ENVIRONMENT_ERRORS = frozenset(
    {"ModuleNotFoundError", "ImportError", "OSError", "FileNotFoundError", "PermissionError",
     "MemoryError", "ConnectionError", "TimeoutError", "CellTimeoutError"}
)


def given_cell_failures(report: ExecutionReport, result: SubmissionResult) -> None:
    """A given cell that failed because of the environment: every question it can have cost
    points (a model, or an answer cell after it) is ungradable, with that reason."""
    failed = [
        c
        for c in report.cells
        if c.kind == "given"
        and (c.status in ("timeout", "died") or c.error.split(":")[0] in ENVIRONMENT_ERRORS)
    ]
    if not failed:
        return
    first = failed[0]
    name = cell_label(report.notebook.cells[first.index], first.index)
    reason = (
        f"a given cell ({name}) {'timed out' if first.status == 'timeout' else first.status}"
        f" because of the grading environment, not your answers: {first.error[:200]}"
    )
    result.warnings.append(reason)
    answer_at = {
        cell_role(c).question: i
        for i, c in enumerate(report.notebook.cells)
        if cell_role(c).role == ANSWER
    }
    for i, q in enumerate(result.questions):
        after = answer_at.get(q.id, -1) > first.index
        if q.status not in (R.Q_PASSED, R.Q_MANUAL) and (after or q.id not in answer_at):
            result.questions[i] = R.QuestionResult(
                q.id, R.Q_UNGRADABLE, q.points, q.max_points, q.checks, reason
            )


def _start_source_checks(
    session: Session, asm: Assembly
) -> dict[str, cf.Future[tuple[QuestionResult, float]]]:
    """Questions answered by the notebook's source alone (a class or a function, re-run in
    the clean sandboxed process) are checked while the notebook runs: their answer does not depend
    on the run, and the two use separate processes."""
    if session.checks is None:
        return {}
    answers = _answers(session, None, asm)

    def timed(q: Question, answer: Answer) -> tuple[QuestionResult, float]:
        started = time.monotonic()
        checked = grade_question(session, q, answer, None)
        return checked, round(time.monotonic() - started, 3)

    return {
        q.id: session.checker().submit(timed, q, answers[q.id])
        for q in session.spec.auto_questions
        if q.kind in ("class", "function") and answers[q.id].present
    }


def grade_bytes(
    session: Session,
    raw: bytes,
    *,
    student: str,
    file: str,
    submitted_at: str = "",
    extra_warnings: list[str] | None = None,
) -> SubmissionResult:
    """Grade one submission's bytes. Never raises for the student's mistakes."""
    return grade_bytes_executed(
        session,
        raw,
        student=student,
        file=file,
        submitted_at=submitted_at,
        extra_warnings=extra_warnings,
    )[0]


def grade_bytes_executed(
    session: Session,
    raw: bytes,
    *,
    student: str,
    file: str,
    submitted_at: str = "",
    extra_warnings: list[str] | None = None,
) -> tuple[SubmissionResult, NotebookNode | None]:
    """grade_bytes, and the notebook as executed (None when it was not run)."""
    spec = session.spec
    started = time.monotonic()
    session.ends_at = started + session.budget()
    session.reference_mark = session.context.reference_seconds if session.context else 0.0
    result = SubmissionResult(
        student=student,
        file=file,
        content_hash=content_hash(raw),
        status=R.GRADED,
        submitted_at=submitted_at or datetime.now(UTC).isoformat(timespec="seconds"),
        warnings=list(extra_warnings or []),
    )
    try:
        nb, read_warnings = parse_notebook(raw, file)
    except SubmissionError as exc:
        result.status = R.ERROR
        result.error = str(exc)
        result.questions = [ungradable(q.id, q.points, str(exc.message)) for q in spec.questions]
        return result, None
    result.warnings += read_warnings
    recorded = recorded_assignment(nb)
    if recorded is not None and recorded != spec.id:  # not a zero from a silent mismatch
        message = (
            f"this notebook is from the assignment {recorded!r}, not {spec.id!r}: "
            f"submit your {spec.template}"
        )
        result.status, result.error = R.ERROR, message
        result.questions = [ungradable(q.id, q.points, message) for q in spec.questions]
        return result, None
    asm = assemble(session.template, nb)
    result.timings["assemble"] = asm.seconds
    result.changed_cells = asm.changed
    result.warnings += asm.warnings
    result.manual_answers = asm.manual_answers
    report: ExecutionReport | None = None
    slot: KernelSlot | None = None
    early = _start_source_checks(session, asm)
    try:
        slot = session.take_slot()
        result.timings["prestart"] = round(slot.seconds, 3)
        models = [q.variable for q in spec.auto_questions if q.kind == "model"]
        values = [q.variable for q in spec.auto_questions if q.kind == "value"]
        values += curve_variables(spec)
        variables = {q.id: q.variable for q in spec.auto_questions if q.kind == "value"}
        with warnings.catch_warnings(record=True) as caught:  # nbformat's go to run.log
            warnings.simplefilter("always")
            report = run_notebook(
                asm.notebook,
                workdir=slot.workdir,
                grading=spec.grading,
                limits=session.limits,
                values=values,
                models=models,
                answer_variables=variables,
                kernel_factory=(
                    slot.factory(session.kernel_factory) if session.kernel_factory else None
                ),
                env=kernel_env(spec.grading, slot.workdir),
                cell_timeout=session.cell_timeout,
                cell_cpu=session.cell_cpu,
                # the budget started before the cells were matched: that time counts too
                notebook_timeout=max(
                    1.0, session.ends_at - time.monotonic() - check_reserve(session.budget())
                ),
            )
        result.log += [f"{w.category.__name__}: {w.message}" for w in caught]
        session.last_report = report
        result.timings["execute"] = report.seconds
        result.timings.update(report.stage_seconds())
        result.log += report.log
        for cell in report.failed_cells():
            if cell.kind in ("setup", "inject", "snapshot", "extract"):
                result.log.append(f"grader cell {cell.index} {cell.status}: {cell.error}")
            else:
                name = cell_label(report.notebook.cells[cell.index], cell.index)
                result.log.append(f"{name} ({cell.kind}) {cell.status}: {cell.error}")
        problem = _execution_problem(report)
        if problem:
            result.warnings.append(problem)
    except GraderError as exc:
        result.log.append(f"execution failed: {exc}")
        result.warnings.append(f"the notebook could not be executed: {exc.message}")
    finally:
        if slot is not None:
            slot.discard()
        if session.spare is not None:
            session.spare.prepare()  # the next kernel starts while these answers are checked
    check_started = time.monotonic()
    answers = _answers(session, report, asm)
    for q in spec.questions:
        if not q.auto:
            result.questions.append(manual_pending(q.id, q.points))
            continue
        if q.id in early:
            checked, seconds = early[q.id].result()
            if report is not None:
                result.questions.append(checked)
                result.timings[f"check:{q.id}"] = seconds
                continue
        if report is None:
            result.questions.append(ungradable(q.id, q.points, "the notebook was not executed"))
            continue
        question_started = time.monotonic()
        result.questions.append(grade_question(session, q, answers[q.id], report))
        result.timings[f"check:{q.id}"] = round(time.monotonic() - question_started, 3)
    result.timings["checks"] = round(time.monotonic() - check_started, 3)
    result.timings["total"] = round(time.monotonic() - started, 3)
    if report is not None:
        given_cell_failures(report, result)
    if report is None or any(q.status == R.Q_UNGRADABLE for q in result.questions):
        result.status = R.PARTIAL
    elif any(q.status == R.Q_MANUAL for q in result.questions):
        result.status = R.NEEDS_MANUAL
    if report is None:
        return result, None
    extras = {
        "answers": shown_answers(spec, answers),
        "curve": training_curve(spec, session.checks, session.ctx, report, result),
    }
    return result, keep_executed(report.notebook, extras)

