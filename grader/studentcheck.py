"""`grader check`: a student's self-check, public checks only.

The notebook runs as the student left it (nothing restored), with the grading parameters,
in a sandboxed kernel; then the bundled public checks run in that kernel, exactly as
`selfcheck.check(globals())` does from a notebook cell. The public checks come from the
`selfcheck.py` beside the notebook (a student's bundle) or from the assignment's spec (an
instructor's checkout); they hold no answer and no hidden check.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .assemble import read_submission
from .cells import cell_label, mark_origin
from .data import resolve_dataset, stage_dataset
from .errors import SpecError, UsageError
from .execute import kernel_env, run_notebook
from .spec import DatasetSpec, GradingSpec, SandboxLimits

_EMBEDDED = re.compile(r"PUBLIC_CHECKS: dict\[str, Any\] = json\.loads\(\s*r'''(.*?)'''\s*\)", re.S)


def public_from_selfcheck(path: Path) -> dict[str, Any]:
    """Read the public checks embedded in a released selfcheck.py, without importing it."""
    match = _EMBEDDED.search(path.read_text(encoding="utf-8"))
    if not match:
        raise UsageError(f"{path} holds no public checks", hint="use the selfcheck.py of the bundle")
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def find_public(
    notebook: Path, assignment: str | None, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The public checks: of `--assignment`, else of the selfcheck.py beside the notebook,
    else of the assignment the notebook's own metadata names (an instructor's checkout)."""
    from .release import public_checks
    from .spec import find_assignment

    if assignment:
        return public_checks(find_assignment(assignment))
    beside = notebook.parent / "selfcheck.py"
    if beside.is_file():
        return public_from_selfcheck(beside)
    named = (metadata or {}).get("grader", {}).get("assignment")
    if isinstance(named, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", named):
        for root in [*notebook.resolve().parents, None]:
            with contextlib.suppress(SpecError):
                return public_checks(find_assignment(named, root))
    raise UsageError(
        f"no selfcheck.py next to {notebook}"
        + (f", and no assignment {named!r} (named in the notebook) was found" if named else ""),
        hint="put the selfcheck.py of the assignment beside your notebook, or pass --assignment",
    )


def final_code(public: dict[str, Any]) -> Any:
    variables = [rule.get("variable", qid) for qid, rule in public["questions"].items()]
    literal = json.dumps(public)

    def code(nonce: str) -> str:
        return (
            "import json as _g_json\n"
            f"_g_public = _g_json.loads({literal!r})\n"
            f"_g_answers = _grader_selfcheck.extract(globals(), {variables!r}, [])\n"
            "_grader_selfcheck.emit({'nonce': %r, 'results': "
            "_grader_selfcheck.run_public_checks(_g_answers, _g_public, globals())})" % nonce
        )

    return code


def check_notebook(
    notebook: Path,
    *,
    assignment: str | None = None,
    dataset: Path | None = None,
    sandbox: bool = True,
) -> tuple[list[dict[str, str]], list[str]]:
    """Run the notebook and its public checks: (results, notes about the run)."""
    nb, notes = read_submission(notebook)
    public = find_public(notebook, assignment, nb.metadata)
    for position, cell in enumerate(nb.cells):
        mark_origin(cell, position, cell.get("source", ""))
    grading = GradingSpec(**{k: v for k, v in public.get("grading", {}).items()})
    limits = SandboxLimits()
    workdir = Path(tempfile.mkdtemp(prefix="grader-check-"))
    try:
        if public.get("dataset"):
            ds = DatasetSpec(**public["dataset"])
            path = resolve_dataset(ds, explicit=dataset)
            if ds.stage_as:
                stage_dataset(path, workdir, ds.stage_as)
        kernel_factory = None
        if sandbox:
            from .sandbox import Sandbox, SandboxedKernelManager

            box = Sandbox(limits=limits, workdir=workdir)
            warning = box.warning()
            if warning:
                notes.append(warning)

            def kernel_factory(wd: Path) -> Any:
                return SandboxedKernelManager.for_sandbox(box, kernel_name=grading.kernel_name)

        report = run_notebook(
            nb,
            workdir=workdir,
            grading=grading,
            limits=limits,
            values=[],
            models=[],
            final_code=final_code(public),
            kernel_factory=kernel_factory,
            env=kernel_env(grading, workdir),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for cell in report.failed_cells():
        if cell.kind in ("student", "given", "parameters"):
            name = cell_label(report.notebook.cells[cell.index], cell.index)
            notes.append(f"{name} {cell.status}: {cell.error}")
    results: list[dict[str, str]] = []
    for payload in report.payloads:
        results = payload.get("results", [])
    if not results:
        notes.append("the public checks could not run: the notebook did not finish")
    return results, notes
