"""Checks run here, in the grader's process, never in the student's kernel.

An assignment's hidden checks module (`checks.py` beside its spec) defines one function per
auto-graded question, named by the spec's `check` key (default: the question id)::

    def first_nine_index(answer: Answer, ctx: CheckContext, params: dict) -> list[CheckResult]

It gets the student's answer as plain data (numbers, strings, lists, dicts, numpy arrays),
the assignment's reference module and data through `ctx`, and the question's `params`. For a
`function` or `class` question, `answer.source` is the definition's source with the helpers,
imports and constants it uses; `ctx.call_function` calls a function on inputs the check
chooses, `ctx.run_task` runs an assignment's task module on a class, both in a clean
sandboxed process (grader/clean.py) that returns plain data and decides nothing.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from . import selfcheck
from .data import sha256_file
from .datacache import kept_data
from .errors import ExecutionError, SpecError
from .fileio import atomic_write_json, locked
from .results import GRADER_CHECK, CheckResult
from .spec import AssignmentSpec, Question

if TYPE_CHECKING:
    from .clean import Runner, RunOutput
    from .functions import CallResult, Case

T = TypeVar("T")
_MODULES: dict[Path, ModuleType] = {}
_MODULES_LOCK = threading.Lock()


@dataclass(frozen=True)
class Unsupported:
    """An answer value that could not leave the kernel as data (e.g. a custom object)."""

    what: str


@dataclass
class Answer:
    question: Question
    present: bool
    value: Any = None
    source: str | None = None

    @property
    def blank(self) -> bool:
        return not self.present or self.value is Ellipsis or isinstance(self.value, Unsupported)


def decode(data: Any) -> Any:
    """Plain extracted data to Python values: arrays become numpy arrays. Never unpickles."""
    if isinstance(data, dict):
        if selfcheck.ARRAY_KEY in data:
            try:
                return selfcheck.decode_array(data[selfcheck.ARRAY_KEY])
            except Exception as exc:  # anything a forged payload can provoke
                return Unsupported(f"a malformed array ({type(exc).__name__})")
        if selfcheck.UNSUPPORTED_KEY in data:
            what = str(data[selfcheck.UNSUPPORTED_KEY])
            return Ellipsis if what == "ellipsis" else Unsupported(what)
        return {k: decode(v) for k, v in data.items()}
    if isinstance(data, list):
        return [decode(v) for v in data]
    return data


def load_module(path: Path, name: str) -> ModuleType:
    """Import an assignment's module by path, once per process."""
    path = path.resolve()
    with _MODULES_LOCK:
        if path in _MODULES:
            return _MODULES[path]
        if not path.is_file():
            raise SpecError(f"module {path} does not exist")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise SpecError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise SpecError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
        _MODULES[path] = module
        return module


def parse_cell(source: str) -> tuple[str, ast.Module] | None:
    """A cell's Python (IPython magics such as `%matplotlib inline` or `!pip install`
    turned into plain calls first) and its syntax tree; None when it is not Python."""
    try:
        return source, ast.parse(source)
    except (SyntaxError, ValueError):
        pass
    text = _without_magics(source)  # only for a cell that is not plain Python
    try:
        return text, ast.parse(text)
    except (SyntaxError, ValueError):
        return None


def _without_magics(source: str) -> str:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return source
    try:
        return str(TransformerManager().transform_cell(source))
    except Exception:
        return source


DEFINITIONS = {
    "class": (ast.ClassDef,),
    "function": (ast.FunctionDef, ast.AsyncFunctionDef),
}


def find_definition_source(sources: list[str], name: str, kind: str = "class") -> str | None:
    """The student's class or function `name` as a small module, or None when there is none.

    With the definition comes what it may need from the cells `sources`, in notebook order
    up to its last definition: imports (each guarded, so a Colab-only import cannot break
    it), functions, classes, and names bound to literals (`width = 16`). Nothing else of the
    notebook runs: no training, no printing, nothing that reads its data.
    """
    wanted = DEFINITIONS[kind]
    nodes: list[tuple[str, ast.stmt]] = []
    for source in sources:
        parsed = parse_cell(source)
        if parsed is not None:
            nodes += [(parsed[0], node) for node in parsed[1].body]
    last = None
    for i, (_, node) in enumerate(nodes):
        if isinstance(node, wanted) and node.name == name:
            last = i
    if last is None:
        return None
    parts: list[str] = []
    for source, node in nodes[: last + 1]:
        segment = ast.get_source_segment(source, node)
        if segment is None:
            continue
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            decorators = [ast.get_source_segment(source, d) for d in node.decorator_list]
            parts.append("".join(f"@{d}\n" for d in decorators if d) + segment)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            body = "\n".join("    " + line for line in segment.splitlines())
            parts.append(f"try:\n{body}\nexcept ImportError:\n    pass")
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            try:
                ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            parts.append(segment)
    return "\n\n".join(parts)


def find_class_source(sources: list[str], name: str) -> str | None:
    """The student's class `name` with its helpers (see find_definition_source)."""
    return find_definition_source(sources, name, "class")


@dataclass
class CheckContext:
    """What a check may use: the reference, the data, a disk cache and the clean process."""

    spec: AssignmentSpec
    dataset_path: Path | None
    cache_dir: Path
    runner: Runner | None = None
    _data: Any = field(default=None, repr=False)
    _data_hash: str | None = field(default=None, repr=False)
    _code_key: dict[str, str] | None = field(default=None, repr=False)
    reference_seconds: float = 0.0  # spent computing (or waiting for) cached results

    @property
    def reference(self) -> ModuleType:
        if self.spec.reference_path is None:
            raise SpecError(f"assignment {self.spec.id!r} has no reference module")
        return load_module(self.spec.reference_path, f"_grader_ref_{self.spec.id}")

    @property
    def calibration(self) -> dict[str, Any]:
        if not self.spec.calibration:
            raise SpecError(
                f"assignment {self.spec.id!r} has no calibration.json",
                hint=f"run `grader calibrate {self.spec.id}`",
            )
        return self.spec.calibration

    def data(self) -> Any:
        """The data set as the reference's loader returns it (`[dataset] loader` in the spec,
        a function of the reference module taking the file's path), loaded once per process
        and kept on disk in the form fastest to read back (grader/datacache.py)."""
        if self._data is None:
            dataset = self.spec.dataset
            if self.dataset_path is None or dataset is None:
                raise SpecError(f"assignment {self.spec.id!r} has no data set")
            if not dataset.loader:
                raise SpecError(
                    f"assignment {self.spec.id!r}: ctx.data() needs [dataset] loader",
                    hint="name a function of the reference module that loads the file",
                )
            loader = getattr(self.reference, dataset.loader, None)
            if not callable(loader):
                raise SpecError(f"the reference module has no function {dataset.loader!r}")
            started = time.monotonic()  # the batch's cost, not a student's: see cached()
            # what the loaded value depends on: the file, the loader's code, numpy
            code = self.code_key
            key_data = {
                "data": self.data_hash,
                "loader": dataset.loader,
                "reference": code["reference"],
                "numpy": code["numpy"],
            }
            memo = json.dumps(key_data, sort_keys=True)
            if memo not in _DATA_CACHE:
                path = self.dataset_path

                def load() -> Any:
                    return loader(path)

                _DATA_CACHE[memo] = kept_data(self.cache_dir / self.spec.id, key_data, load)
                while len(_DATA_CACHE) > DATA_IN_PROCESS:
                    _DATA_CACHE.pop(next(iter(_DATA_CACHE)))  # the oldest
            self._data = _DATA_CACHE[memo]
            self.reference_seconds += time.monotonic() - started
        return self._data

    @property
    def data_hash(self) -> str:
        if self._data_hash is None:
            if self.dataset_path is None:
                self._data_hash = "none"
            else:
                # the file's own hash: a structurally valid file with another hash (accepted
                # with a warning) must not share cached reference results with the real one
                self._data_hash = sha256_file(self.dataset_path)
        return self._data_hash

    @property
    def code_key(self) -> dict[str, str]:
        """What else decides a reference result: the reference's and the checks' source, and
        the versions of the libraries that compute it."""
        if self._code_key is None:
            self._code_key = reference_code_key(self.spec)
        return self._code_key

    def cached(self, name: str, params: dict[str, Any], compute: Callable[[], T]) -> T:
        """A reference result cached on disk, keyed by data hash, name, parameters, the
        reference's and checks' source and the library versions. Workers sharing the cache
        compute each result once: the others wait on its lock file, then read it. The time
        spent computing is counted in `reference_seconds` (the batch's, not a student's)."""
        key_data = {"data": self.data_hash, "name": name, "params": params, **self.code_key}
        key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:32]
        path = self.cache_dir / self.spec.id / f"{name}-{key}.json"
        started = time.monotonic()
        try:
            return cached_json(path, key_data, compute)
        finally:
            self.reference_seconds += time.monotonic() - started

    def call_function(
        self, answer: Answer, cases: Sequence[Case], *, timeout: float | None = None
    ) -> list[CallResult]:
        """Call the student's function (`answer.source`, name `answer.question.variable`) on
        each case in a clean sandboxed process; one CallResult per case, in order.

        The function never sees an expected value: it only gets the cases' arguments. A case
        whose call raised has `error` set; if the process died or ran out of time, the cases
        it did not reach have `error` saying so.
        """
        from .clean import no_result, parse_lines, request
        from .functions import CallResult

        name = answer.question.variable
        if not answer.source:
            return [CallResult(c, error=f"no function {name} was found") for c in cases]
        body = request(
            answer.source,
            mode="call",
            name=name,
            cases=[{"args": list(c.args), "kwargs": dict(c.kwargs)} for c in cases],
        )
        output = self._run(body, timeout)
        lines, module_error = parse_lines(output, len(cases))
        results = []
        for case, line in zip(cases, lines, strict=True):
            if line is None:
                why = f"the code around it failed: {module_error}" if module_error else None
                results.append(CallResult(case, error=why or no_result(output)))
            else:
                results.append(
                    CallResult(case, line.value, line.error, tuple(line.args), dict(line.kwargs))
                )
        return results

    def run_task(
        self, answer: Answer, task: Path, payload: Any, *, timeout: float | None = None
    ) -> Any:
        """Run the assignment's task module `task` in a clean sandboxed process: it defines
        `run(namespace, payload)`, gets the student's executed `answer.source` as
        `namespace` and returns plain data, which this returns (decoded). Raises
        ExecutionError with the reason when the code failed or no result came back."""
        from .clean import no_result, parse_lines, request

        if not answer.source:
            raise ExecutionError(f"no definition of {answer.question.variable} was found")
        body = request(
            answer.source,
            mode="task",
            task=task.read_text(encoding="utf-8"),
            payload=payload,
        )
        output = self._run(body, timeout)
        (line,), module_error = parse_lines(output, 1)
        if module_error:
            raise ExecutionError(module_error)
        if line is None:
            raise ExecutionError(no_result(output))
        if line.error:
            raise ExecutionError(line.error)
        return line.value

    def _run(self, body: bytes, timeout: float | None) -> RunOutput:
        if self.runner is None:
            raise ExecutionError("no sandbox runner is configured for the clean process")
        return self.runner(body, timeout or float(self.spec.grading.cell_timeout))


# the loaded data sets of this process, by what they depend on: a long-lived process (a Dask
# worker) that grades an assignment whose data file, loader or numpy changed loads it anew
_DATA_CACHE: dict[str, Any] = {}
DATA_IN_PROCESS = 2  # the most recently loaded


def cached_json(path: Path, key_data: dict[str, Any], compute: Callable[[], T]) -> T:
    """`compute()`'s JSON-able value, stored at `path` for exactly `key_data`; computed once
    by whichever process holds the lock first. A compute that raises stores nothing."""
    found = _read_cached(path, key_data)
    if found is not None:
        return found[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_suffix(".lock")):
        found = _read_cached(path, key_data)
        if found is not None:
            return found[0]
        value = compute()
        atomic_write_json(path, {"key": key_data, "value": value})
    return value


def _read_cached(path: Path, key_data: dict[str, Any]) -> tuple[Any] | None:
    """(value,) when `path` holds the result for exactly `key_data`."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == key_data:
            return (stored["value"],)
    except (OSError, json.JSONDecodeError, KeyError, AttributeError):
        pass
    return None


def installed_versions(packages: Sequence[str]) -> dict[str, str]:
    """Each package's installed version ("none" when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "none"
    return found


def reference_code_key(spec: AssignmentSpec) -> dict[str, str]:
    """Hashes of the reference and checks modules, and the numeric libraries' versions."""
    key: dict[str, str] = {}
    for label, path in (("reference", spec.reference_path), ("checks", spec.checks_path)):
        key[label] = sha256_file(path) if path is not None and path.is_file() else "none"
    return key | installed_versions(("torch", "numpy"))


def run_check(
    question: Question, answer: Answer, ctx: CheckContext, checks_module: ModuleType
) -> list[CheckResult]:
    """Call the assignment's check for one question. A crashing check is the grader's bug,
    reported as a failed check with the reason, never as points."""
    name = question.check or question.id
    func = getattr(checks_module, name, None)
    if not callable(func):
        raise SpecError(
            f"the checks module has no function {name!r} for question {question.id!r}",
            hint="add it to the assignment's checks.py or set `check` in assignment.toml",
        )
    try:
        results = func(answer, ctx, dict(question.params))
    except SpecError:
        raise
    except Exception as exc:
        return [
            CheckResult(
                GRADER_CHECK,
                False,
                f"the check could not be completed ({type(exc).__name__}: {exc}); "
                "ask your instructor",
            )
        ]
    if not isinstance(results, list) or not all(isinstance(r, CheckResult) for r in results):
        raise SpecError(f"check {name!r} must return a list of CheckResult")
    return results
