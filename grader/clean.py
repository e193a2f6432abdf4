"""The clean process: a student's definition re-run, sandboxed, on inputs the checks choose.

The grader side of grader/harness.py. A request (the student's source, the cases or the
task, the codec) goes in on stdin; JSON lines come back on stdout. Those lines are the
student's answer, not a verdict: they are capped in bytes before they are decoded, in
structure while they are decoded, and compared with the reference here, in the grader.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import selfcheck

HARNESS = Path(__file__).with_name("harness.py")
MAX_RESULT_BYTES = 64 * 1024 * 1024  # all lines of one run together
MAX_LINE_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 40
MAX_NODES = 1_000_000


@dataclass(frozen=True)
class RunOutput:
    """What a clean process left: its stdout (capped), the tail of stderr, why it ended."""

    stdout: bytes
    stderr_tail: str = ""
    ended: str | None = None  # a kill reason or a non-zero exit, None for a clean exit


Runner = Callable[[bytes, float], RunOutput]


def make_runner(
    sandbox_factory: Callable[[Path], Any],
    dataset_path: Path | None,
    stage_as: str | None,
    tmp_root: Path | None = None,
) -> Runner:
    """A runner: a fresh working folder (holding only the staged data set), the harness
    given on the command line (never a file the student's code could read or change)."""
    from .data import stage_dataset

    program = HARNESS.read_text(encoding="utf-8")

    def run(request: bytes, timeout: float) -> RunOutput:
        workdir = Path(tempfile.mkdtemp(prefix="grader-run-", dir=tmp_root))
        try:
            if dataset_path is not None and stage_as:
                stage_dataset(dataset_path, workdir, stage_as)
            sandbox = sandbox_factory(workdir)
            result = sandbox.run([sys.executable, "-I", "-c", program], input=request, timeout=timeout)
            ended = getattr(result, "killed_reason", None)
            if ended is None and result.returncode != 0:
                ended = f"exit code {result.returncode}"
            tail = last_lines(result.stderr or b"")
            return RunOutput(bytes(result.stdout[:MAX_RESULT_BYTES]), tail, ended)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    return run


def last_lines(stderr: bytes) -> str:
    """The last three lines of a clean process's stderr, as RunOutput keeps them."""
    text = stderr.decode("utf-8", errors="replace")
    return "\n".join(text.strip().splitlines()[-3:])


FLOAT_KEY = "__float__"  # a NaN or an infinity given as an argument (JSON cannot hold one)


def _mark_floats(value: Any) -> Any:
    """Non-finite floats in arguments as {FLOAT_KEY: "nan"}, which the harness turns back
    into floats (the codec alone would hand the student's function a dict)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {FLOAT_KEY: repr(float(value))}
    if isinstance(value, list | tuple):
        return [_mark_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _mark_floats(v) for k, v in value.items()}
    return value


def request(
    source: str,
    *,
    mode: str,
    name: str = "",
    cases: list[dict[str, Any]] | None = None,
    task: str = "",
    payload: Any = None,
) -> bytes:
    """The request the harness reads: values encoded as in the kernel (arrays as bytes)."""
    body = {
        "codec": Path(selfcheck.__file__).read_text(encoding="utf-8"),
        "source": source,
        "mode": mode,
        "name": name,
        "cases": [
            {
                "args": [selfcheck.encode(_mark_floats(a)) for a in c.get("args", ())],
                "kwargs": {
                    k: selfcheck.encode(_mark_floats(v)) for k, v in c.get("kwargs", {}).items()
                },
            }
            for c in cases or []
        ],
        "task": task,
        "payload": selfcheck.encode(_mark_floats(payload)),
    }
    return json.dumps(body).encode()


class PayloadTooLarge(ValueError):
    pass


def _bounded(data: Any, depth: int = 0, count: list[int] | None = None) -> None:
    """Refuse data nested deeper than MAX_DEPTH or with more than MAX_NODES items."""
    count = count if count is not None else [0]
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_NODES:
        raise PayloadTooLarge("the result is nested too deeply or holds too many items")
    if isinstance(data, dict):
        for value in data.values():
            _bounded(value, depth + 1, count)
    elif isinstance(data, list):
        for value in data:
            _bounded(value, depth + 1, count)


@dataclass
class Line:
    """One result line: the decoded value or the error text, and the arguments after."""

    value: Any = None
    error: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


def parse_lines(output: RunOutput, expected: int) -> tuple[list[Line | None], str | None]:
    """The first line for each case index 0..expected-1 (None where none came back), and the
    error of the student's module itself (it did not run at all) if any."""
    from .checking import decode

    lines: list[Line | None] = [None] * expected
    module_error: str | None = None
    total = 0
    for raw in output.stdout.split(b"\n"):
        total += len(raw)
        if not raw.strip() or len(raw) > MAX_LINE_BYTES or total > MAX_RESULT_BYTES:
            continue
        try:
            data = json.loads(raw)
            _bounded(data)
        except (ValueError, RecursionError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("case"), int):
            continue
        index = data["case"]
        error = data.get("error")
        error = str(error)[:800] if error is not None else None
        if index == -1 and module_error is None:
            module_error = error or "the code could not run"
        if not 0 <= index < expected or lines[index] is not None:
            continue
        args = data.get("args")
        kwargs = data.get("kwargs")
        lines[index] = Line(
            value=decode(data.get("value")),
            error=error,
            args=[decode(a) for a in args] if isinstance(args, list) else [],
            kwargs={str(k): decode(v) for k, v in kwargs.items()}
            if isinstance(kwargs, dict)
            else {},
        )
    return lines, module_error


def no_result(output: RunOutput) -> str:
    """Why a case has no result line."""
    why = output.ended or "it ended early"
    tail = f": {output.stderr_tail.splitlines()[-1][:300]}" if output.stderr_tail else ""
    return f"no result came back ({why}){tail}"
