"""Cell limits counted in the kernel's CPU time, derived from the reference's own cells.

A busy machine stretches a cell's wall time, not the CPU time it needs: a limit in CPU
seconds gives the same verdict on an idle machine and on a loaded one. Each cell of the
template gets `factor * reference + margin` CPU seconds (the reference's time measured by
`grader calibrate` running the solution under the grading parameters, kept beside the spec
in `cell_times.json`); a cell the student added gets the largest of those. A cell that runs
`IDLE_WINDOW` seconds without computing (a sleep, a wait) is stopped too: in the sandbox
there is nothing it could be waiting for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CELL_TIMES = "cell_times.json"
IDLE_WINDOW = 30.0  # seconds of wall time ...
IDLE_CPU = 0.5  # ... with less CPU time than this: the cell is waiting, not computing


@dataclass(frozen=True)
class CellLimits:
    """CPU-second limits by template cell id, and for cells the template does not have."""

    by_cell: dict[str, float] = field(default_factory=dict)
    other: float | None = None
    idle_window: float | None = IDLE_WINDOW

    def for_cell(self, cell_id: str) -> float | None:
        return self.by_cell.get(cell_id, self.other)


def cell_limits(times: dict[str, float], factor: float, margin: float) -> CellLimits:
    """`factor * reference + margin` per cell; the largest for any other cell."""
    by_cell = {cid: factor * max(0.0, seconds) + margin for cid, seconds in times.items()}
    return CellLimits(by_cell, max(by_cell.values()) if by_cell else None)


def load_cell_times(spec_root: Path) -> dict[str, float]:
    """The reference's CPU seconds per cell id, as `grader calibrate` wrote them."""
    path = spec_root / CELL_TIMES
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    cells = data.get("cells", {}) if isinstance(data, dict) else {}
    return {
        str(k): float(v)
        for k, v in cells.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def tree_cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU seconds of a process and all its descendants; None if gone."""
    if not pid:
        return None
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
