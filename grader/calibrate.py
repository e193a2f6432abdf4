"""`grader calibrate`: thresholds measured from reference runs, written as data."""

from __future__ import annotations

from pathlib import Path

from .checking import load_module
from .data import resolve_dataset
from .errors import SpecError
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
