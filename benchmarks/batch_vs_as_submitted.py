"""Time the grader's batch against executing the same notebooks as they were submitted.

    python benchmarks/batch_vs_as_submitted.py [NOTEBOOK_OR_FOLDER ...] [--jobs 1,2]

Everything runs here, side by side, on the same notebooks (default: tests/samples/mnist_nn),
so the figures that matter are ratios, not seconds (these machines are noisy; the load
average is recorded with the results).

* "as submitted": each notebook executed top to bottom with nbclient, exactly as the student
  left it (their own epochs and learning rates), one thread, the data staged beside it;
* "floor": a fresh kernel running the same student cells under the grading parameters,
  nothing else (no sandbox, no grader cells, no checks): what grading cannot go below;
* "grader": `grade_batch` on the same files, sandboxed, with a cold reference cache (a fresh
  cache folder), then warm (`--force`, same cache) for each `--jobs` value. Per notebook and
  stage: kernel start, the set-up cell (imports), the notebook's cells, extraction, each
  question's check; for the batch, the time from the last result to the end (outputs);
* "ceiling": the students' cells alone spread over every CPU with no overhead at all, the
  bound no grader that runs them can beat (and with the checks' own work added).

Writes benchmarks/results/batch_vs_as_submitted.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grader.assemble import assemble, parse_notebook  # noqa: E402
from grader.authoring import load_source, make_template  # noqa: E402
from grader.batch import BatchOptions, grade_batch  # noqa: E402
from grader.cells import PARAMETERS, cell_role  # noqa: E402
from grader.data import resolve_dataset, stage_dataset  # noqa: E402
from grader.execute import kernel_env  # noqa: E402
from grader.prepare import parameters_code  # noqa: E402
from grader.spec import AssignmentSpec, load_spec  # noqa: E402
from grader.submissions import discover  # noqa: E402

STAGES = ("kernel", "setup", "cells", "extract", "checks", "total")


def _run(nb: nbformat.NotebookNode, work: str, env: dict[str, str], timeout: int) -> float:
    client = nbclient.NotebookClient(
        nb, timeout=timeout, allow_errors=True, resources={"metadata": {"path": work}}
    )
    started = time.monotonic()
    client.execute(env=env, cwd=work)
    return time.monotonic() - started


def as_submitted(path: Path, data: Path, stage_as: str, timeout: int) -> float:
    nb = nbformat.read(path, 4)
    with tempfile.TemporaryDirectory(prefix="as-submitted-") as work:
        stage_dataset(data, Path(work), stage_as)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        return _run(nb, work, env, timeout)


def floor(spec: AssignmentSpec, template: Any, path: Path, data: Path, timeout: int) -> float:
    """The student's cells as graded (assembled, grading parameters injected) in a fresh
    plain kernel: kernel start plus cells, nothing of the grader's."""
    nb, _ = parse_notebook(path.read_bytes(), path.name)
    cells = []
    for cell in assemble(template, nb).notebook.cells:
        cells.append(cell)
        if cell.cell_type == "code" and cell_role(cell).role == PARAMETERS:
            cells.append(nbformat.v4.new_code_cell(parameters_code(spec.grading)))
    graded = nbformat.v4.new_notebook(cells=cells)
    assert spec.dataset is not None and spec.dataset.stage_as
    with tempfile.TemporaryDirectory(prefix="floor-") as work:
        stage_dataset(data, Path(work), spec.dataset.stage_as)
        return _run(graded, work, kernel_env(spec.grading, Path(work)), timeout)


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "max": 0.0}
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def grader_run(
    spec: AssignmentSpec,
    paths: list[Path],
    cache: Path,
    jobs: int,
    force: bool,
    tmp: Path,
    fork_server: bool = True,
) -> dict[str, Any]:
    out = tmp / f"out-{jobs}-{'warm' if force else 'cold'}-{fork_server}"
    # a warm cache holds reference results only: the students' own class runs (cached per
    # distinct input) are computed again by each run, as in a first batch
    for stale in (cache / spec.id).glob("clean-run-*"):
        stale.unlink()
    started = time.monotonic()
    options = BatchOptions(
        jobs=jobs, cache_dir=cache, progress=False, force=force, fork_server=fork_server
    )
    last = [started]

    def arrived(_result: Any) -> None:
        last[0] = time.monotonic()

    batch = grade_batch(spec, paths, out, options, on_result=arrived)
    ended = time.monotonic()
    seconds = ended - started
    per_notebook = {r.student: dict(r.timings) for r in batch.results}
    stage_names = sorted({k for t in per_notebook.values() for k in t})
    return {
        "jobs": jobs,
        "cache": "warm" if force else "cold",
        "fork_server": fork_server,
        "seconds": round(seconds, 3),
        # after the last result came in: feedback pages, tables, the class report
        "outputs_after_last": round(ended - last[0], 3),
        "per_notebook": per_notebook,
        "stages": {k: _stats([t[k] for t in per_notebook.values() if k in t]) for k in stage_names},
        "scores": {r.student: r.total for r in batch.results},
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    runs = [g for g in results["grader"] if g["cache"] == "warm"]
    forked = [g for g in runs if g.get("fork_server", True)]
    warm = forked[-1] if forked else None
    if warm is not None:
        names = [s for s in STAGES if s in warm["stages"] and s != "total"]
        checks = sorted(k for k in warm["stages"] if k.startswith("check:"))
        medians = [warm["stages"][s]["median"] for s in names + checks]
        left.barh(names + checks, medians, color="tab:blue", label="grader, median")
        if results["floor"]["median"]:
            left.axvline(results["floor"]["median"], color="tab:green", label="floor (whole run)")
        left.set_xlabel("seconds per notebook")
        left.set_title("Where a notebook's grading time goes")
        left.legend()
    for label, chosen in (("grader", forked), ("without the fork server", [g for g in runs if g not in forked])):
        if chosen:
            right.plot(
                [g["jobs"] for g in chosen],
                [len(g["per_notebook"]) / g["seconds"] * 60 for g in chosen],
                marker="o",
                label=f"{label} (warm cache)",
            )
    if results["as_submitted"]["total"]:
        n = results["notebooks"]  # the total is for all of them (estimated or measured)
        right.axhline(n / results["as_submitted"]["total"] * 60, color="tab:red", label="as submitted")
    right.set_xlabel("--jobs")
    right.set_ylabel("notebooks per minute")
    right.set_title(f"Scaling (load average {results['load'][0]:.1f} at start)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("paths", nargs="*", default=[str(ROOT / "tests" / "samples" / "mnist_nn")])
    parser.add_argument("--jobs", default="1,2", help="grader workers to compare, e.g. 1,2")
    parser.add_argument("--timeout", type=int, default=1800, help="per cell, as submitted")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--skip-as-submitted", action="store_true")
    parser.add_argument("--skip-floor", action="store_true", help="a scaling run only")
    parser.add_argument(
        "--as-submitted", type=int, default=0, metavar="N",
        help="execute only the first N notebooks as submitted (a busy machine); the class "
        "total is then estimated from their mean and labelled so",
    )
    parser.add_argument("--cache-dir", help="reuse a reference cache (default: a cold one)")
    parser.add_argument(
        "--without-fork-server", action="store_true",
        help="also run each --jobs value with a clean process started per check (the "
        "grader before the fork server), side by side: the before/after per stage",
    )
    args = parser.parse_args(argv)
    spec = load_spec(ROOT / "solutions" / "mnist_nn")
    assert spec.dataset is not None and spec.dataset.stage_as
    data = resolve_dataset(spec.dataset)
    subs = [s for s in discover([Path(p) for p in args.paths]) if s.member is None]
    jobs_list = [int(j) for j in args.jobs.split(",")]
    results: dict[str, Any] = {
        "notebooks": len(subs),
        "cpus": os.cpu_count(),
        "load": list(os.getloadavg()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    plain: dict[str, float] = {}
    if not args.skip_as_submitted:
        for sub in subs[: args.as_submitted or None]:
            plain[sub.student] = round(as_submitted(sub.path, data, spec.dataset.stage_as, args.timeout), 3)
            print(f"as submitted  {sub.student:<16} {plain[sub.student]:7.1f} s", flush=True)
    measured = round(sum(plain.values()), 3)
    estimated = bool(plain) and len(plain) < len(subs)
    total = measured / len(plain) * len(subs) if estimated else measured
    results["as_submitted"] = {
        "per_notebook": plain,
        "total": round(total, 3),
        "estimated_from": len(plain) if estimated else None,
    }

    template = make_template(spec, load_source(spec))
    floors = {}
    for sub in [] if args.skip_floor else subs:
        floors[sub.student] = round(floor(spec, template, sub.path, data, args.timeout), 3)
        print(f"floor         {sub.student:<16} {floors[sub.student]:7.1f} s", flush=True)
    results["floor"] = {"per_notebook": floors, **_stats(list(floors.values()))}

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        cache = Path(args.cache_dir) if args.cache_dir else tmp / "cache"
        paths = [sub.path for sub in subs]
        runs = [(j, True) for j in jobs_list]  # a given cache is warm: no cold run
        if not args.cache_dir:
            runs.insert(0, (jobs_list[0], False))
        results["grader"] = []
        for jobs, force in runs:
            for fork in (True, False) if force and args.without_fork_server else (True,):
                run = grader_run(spec, paths, cache, jobs, force, tmp, fork)
                results["grader"].append(run)
                print(f"grader --jobs {jobs} ({_label(run)}): {run['seconds']:7.1f} s", flush=True)
    results["load_end"] = list(os.getloadavg())
    summarise(results, jobs_list)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch_vs_as_submitted.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "batch_vs_as_submitted.png")
    print(f"\nwrote {out / 'batch_vs_as_submitted.json'} and .png")
    return 0


def _label(run: dict[str, Any]) -> str:
    return f"{run['cache']} cache" + ("" if run.get("fork_server", True) else ", no fork server")


def summarise(results: dict[str, Any], jobs_list: list[int]) -> None:
    warm = {
        g["jobs"]: g
        for g in results["grader"]
        if g["cache"] == "warm" and g.get("fork_server", True)
    }
    before = {
        g["jobs"]: g
        for g in results["grader"]
        if g["cache"] == "warm" and not g.get("fork_server", True)
    }
    cold = next((g for g in results["grader"] if g["cache"] == "cold"), None)
    first = warm[jobs_list[0]]
    ratios = {}
    print(f"\n{results['notebooks']} notebooks; load average {results['load'][0]:.1f} at start, "
          f"{results['load_end'][0]:.1f} at end ({results['cpus']} CPUs)")
    old = before.get(first["jobs"])
    print(f"{'stage':<34}{'median':>9}{'max':>9}   (grader --jobs {first['jobs']}, warm cache)"
          + ("   without the fork server: median, max" if old else ""))
    for stage, s in sorted(first["stages"].items()):
        was = old["stages"].get(stage) if old else None
        print(f"  {stage:<32}{s['median']:9.2f}{s['max']:9.2f}"
              + (f"   {was['median']:9.2f}{was['max']:9.2f}" if was else ""))
    print(f"  {'outputs after the last result':<32}{first.get('outputs_after_last', 0):9.2f}")
    print(f"  {'floor (fresh kernel, same cells)':<32}{results['floor']['median']:9.2f}"
          f"{results['floor']['max']:9.2f}")
    per = [
        t["total"] / results["floor"]["per_notebook"][name]
        for name, t in first["per_notebook"].items()
        if name in results["floor"]["per_notebook"] and "total" in t
    ]
    ratios["per_notebook_vs_floor_median"] = round(statistics.median(per), 3) if per else None
    ratios["per_notebook_vs_floor_max"] = round(max(per), 3) if per else None
    plain = results["as_submitted"]["total"]
    for jobs, g in sorted(warm.items()):
        if plain:
            ratios[f"as_submitted_vs_jobs{jobs}"] = round(plain / g["seconds"], 2)
    if plain and cold is not None:
        ratios["as_submitted_vs_cold_first_jobs"] = round(plain / cold["seconds"], 2)
    if len(warm) > 1:
        ratios["throughput_jobs_last_vs_first"] = round(
            warm[jobs_list[0]]["seconds"] / warm[jobs_list[-1]]["seconds"], 2
        )
    for jobs, g in sorted(before.items()):
        if jobs in warm:
            ratios[f"fork_server_speedup_jobs{jobs}"] = round(g["seconds"] / warm[jobs]["seconds"], 2)
    # The ceiling: a grader must run every student's cells under the grading parameters.
    # Those alone (as the --jobs 1 run timed them, in a kernel already started), spread over
    # every CPU with no overhead at all, bound what any grader can reach.
    cells = sum(t.get("cells", 0.0) for t in first["per_notebook"].values())
    checks = sum(
        v for t in first["per_notebook"].values() for k, v in t.items() if k.startswith("check:")
    )
    cpus = results["cpus"] or 1
    if plain and cells:
        ratios["ceiling_as_submitted_vs_cells_alone"] = round(plain / (cells / cpus), 2)
        ratios["ceiling_as_submitted_vs_cells_and_checks"] = round(plain / ((cells + checks) / cpus), 2)
        print(f"the students' cells alone: {cells:.1f} s, the checks {checks:.1f} s (--jobs "
              f"{first['jobs']}); on {cpus} CPUs with nothing else, no grader beats "
              f"{cells / cpus:.1f} s ({plain / (cells / cpus):.1f}x of as submitted), "
              f"{(cells + checks) / cpus:.1f} s with the checks")
    results["ratios"] = ratios
    how = results["as_submitted"].get("estimated_from")
    label = f" (estimated from {how} of {results['notebooks']})" if how else ""
    print(f"as submitted, one after another: {plain:8.1f} s{label}")
    for g in results["grader"]:
        print(f"grader --jobs {g['jobs']} ({_label(g)}): {g['seconds']:8.1f} s")
    for name, value in ratios.items():
        print(f"  {name}: {value}")


if __name__ == "__main__":
    sys.exit(main())
