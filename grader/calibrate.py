"""`grader calibrate`: thresholds measured from reference runs, written as data, and the
reference cache built ahead of grading.

The cache is filled by grading the assignment's own solution (and any notebooks given, e.g.
last term's class) with the grading parameters, so every reference result the checks need
for those answers is computed here, once, and a class graded afterwards trains none. An
assignment's checks module may define `warm_cache(ctx, progress)` for more (the common
hyperparameters students try).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .checking import load_module
from .cputime import CELL_TIMES, CellLimits
from .data import resolve_dataset
from .errors import SpecError
from .execute import ExecutionReport
from .fileio import atomic_write_json
from .spec import AssignmentSpec


def calibrate(spec: AssignmentSpec, dataset: Path | None = None) -> Path:
    """Run the reference module's `calibrate(dataset_path)` and write calibration.json."""
    if spec.reference_path is None or spec.dataset is None:
        raise SpecError(f"assignment {spec.id!r} needs a reference module and a data set")
    reference = load_module(spec.reference_path, f"_grader_ref_{spec.id}")
    run = getattr(reference, "calibrate", None)
    if run is None:
        raise SpecError(f"{spec.reference_path} defines no calibrate(dataset_path)")
    validator = getattr(reference, spec.dataset.validator) if spec.dataset.validator else None
    path = resolve_dataset(spec.dataset, explicit=dataset, validator=validator)
    data = run(path, progress=lambda message: print(message, flush=True))
    atomic_write_json(spec.calibration_path, data)
    return spec.calibration_path


def write_cell_times(spec: AssignmentSpec, report: ExecutionReport) -> Path:
    """The solution's CPU seconds per cell under the grading parameters: the base of each
    cell's CPU-time limit (see grader/cputime.py)."""
    cells = {
        c.cell_id: c.cpu_seconds
        for c in report.cells
        if c.cell_id and c.status == "ok" and c.kind in ("student", "given", "parameters")
    }
    path = spec.root / CELL_TIMES
    atomic_write_json(path, {"cells": cells, "total": round(sum(cells.values()), 3)})
    return path


def cache_entries(cache_dir: Path, spec: AssignmentSpec) -> set[str]:
    folder = cache_dir / spec.id
    return {p.name for p in folder.glob("*.json")} if folder.is_dir() else set()


def warm_cache(
    spec: AssignmentSpec,
    *,
    notebooks: list[Path] | None = None,
    cache_dir: Path | None = None,
    dataset: Path | None = None,
    sandbox: bool = True,
    progress: Callable[[str], None] = print,
    cell_times: bool = False,
) -> int:
    """Compute the reference results grading will need; returns how many were added.
    With `cell_times`, also write the solution's CPU seconds per cell beside the spec."""
    from .grading import grade_bytes, open_session

    session = open_session(spec, cache_dir=cache_dir, dataset=dataset, sandbox=sandbox)
    session.cell_cpu = CellLimits(idle_window=None)  # the reference runs unlimited
    before = cache_entries(session.cache_dir, spec)
    sources = [(spec.source_path, "solution"), *((p, p.stem) for p in notebooks or [])]
    for path, student in sources:
        progress(f"reference results for {path.name}")
        grade_bytes(session, path.read_bytes(), student=student, file=path.name)
        if cell_times and student == "solution" and session.last_report is not None:
            write_cell_times(spec, session.last_report)
    hook = getattr(session.checks, "warm_cache", None)
    if callable(hook):
        progress("reference results from the checks' warm_cache()")
        hook(session.ctx(), progress)
    added = len(cache_entries(session.cache_dir, spec) - before)
    progress(f"{added} reference results added to {session.cache_dir / spec.id}")
    return added
