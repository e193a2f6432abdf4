"""Time the grader's batch against executing the same notebooks as they were submitted.

    python benchmarks/batch_vs_as_submitted.py [NOTEBOOK_OR_FOLDER ...] [--jobs N]

Both runs happen here, side by side, on the same notebooks (default: tests/samples/mnist_nn),
so the figure that matters is the ratio, not the seconds (these machines are noisy).

* "as submitted": each notebook executed top to bottom with nbclient, exactly as the student
  left it (their own epochs and learning rates), one thread, the data staged beside it;
* "grader": `grade_batch` on the same files, sandboxed, grading parameters injected, with a
  cold reference cache (a fresh cache folder) and then a warm one (`--force`, same cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grader.batch import BatchOptions, discover, grade_batch  # noqa: E402
from grader.data import resolve_dataset, stage_dataset  # noqa: E402
from grader.spec import load_spec  # noqa: E402


def as_submitted(path: Path, data: Path, stage_as: str, timeout: int) -> float:
    nb = nbformat.read(path, 4)
    with tempfile.TemporaryDirectory(prefix="as-submitted-") as work:
        stage_dataset(data, Path(work), stage_as)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        client = nbclient.NotebookClient(
            nb, timeout=timeout, allow_errors=True, resources={"metadata": {"path": work}}
        )
        started = time.monotonic()
        client.execute(env=env, cwd=work)
        return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", default=[str(ROOT / "tests" / "samples" / "mnist_nn")])
    parser.add_argument("--jobs", type=int, default=1, help="grader workers (1: same cores as the plain run)")
    parser.add_argument("--timeout", type=int, default=1800, help="per cell, as submitted")
    args = parser.parse_args(argv)
    spec = load_spec(ROOT / "solutions" / "mnist_nn")
    assert spec.dataset is not None and spec.dataset.stage_as
    data = resolve_dataset(spec.dataset)
    subs = [s for s in discover([Path(p) for p in args.paths]) if s.member is None]

    plain = 0.0
    for sub in subs:
        seconds = as_submitted(sub.path, data, spec.dataset.stage_as, args.timeout)
        plain += seconds
        print(f"as submitted  {sub.student:<16} {seconds:7.1f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        cache = Path(tmp) / "cache"
        timings = []
        for label, force in (("cold cache", False), ("warm cache", True)):
            out = Path(tmp) / label.replace(" ", "-")
            started = time.monotonic()
            grade_batch(
                spec,
                [sub.path for sub in subs],
                out,
                BatchOptions(jobs=args.jobs, cache_dir=cache, progress=False, force=force),
            )
            timings.append((label, time.monotonic() - started))
            shutil.rmtree(out, ignore_errors=True)

    print(f"\n{len(subs)} notebooks, grader with --jobs {args.jobs}")
    print(f"as submitted, one after another: {plain:8.1f} s")
    for label, seconds in timings:
        print(f"grader batch ({label}):     {seconds:8.1f} s   ratio {plain / seconds:5.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
