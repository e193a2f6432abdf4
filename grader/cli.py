"""The command line: it only adapts arguments to the library. Exit codes live in errors.py.

    grader assign SOURCE_DIR              write the student template from the source notebook
    grader release ASSIGNMENT --out DIR   write the student bundle (template + selfcheck.py)
    grader grade SUBMISSIONS... --assignment ID --out DIR [--jobs N] [--manual CSV]
    grader export --assignment ID --out DIR [--canvas CSV]   rebuild grades.csv and feedback
                                          from the gradebook; fill a Canvas gradebook export
    grader gradescope ASSIGNMENT --out ZIP    build Gradescope's autograder zip
    grader gradescope-run --root DIR      (inside Gradescope) grade DIR/submission
    grader review --assignment ID --out DIR   score free-response answers in the browser
    grader check NOTEBOOK                 a student's self-check (public checks only)
    grader validate ASSIGNMENT            CI: solution full marks, template zero, no leaks
    grader calibrate ASSIGNMENT           measure thresholds from reference runs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import GraderError, UsageError
from .gradebook import FILE_NAME as GRADEBOOK_FILE

if TYPE_CHECKING:
    from .course import CourseFiles
    from .spec import AssignmentSpec, SandboxLimits


def _assignment(value: str) -> AssignmentSpec:
    from .spec import find_assignment

    return find_assignment(value)


def cmd_assign(args: argparse.Namespace) -> int:
    from .authoring import write_template

    spec = _assignment(args.source)
    path = write_template(spec, Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from .release import leak_check, release

    spec = _assignment(args.assignment)
    files = release(spec, Path(args.out))
    report = leak_check(spec, Path(args.out) / spec.id)
    for path in files:
        print(f"wrote {path}")
    if report.leaks:
        raise GraderError("the bundle leaks: " + "; ".join(report.leaks))
    print(f"leak check: {report.files} files, {report.probes} secrets probed, none found")
    return 0


def _limits(args: argparse.Namespace, spec: AssignmentSpec) -> SandboxLimits:
    limits = spec.sandbox
    overrides = {
        name: getattr(args, name)
        for name in (
            "memory_mb", "cpu_seconds", "max_processes", "max_output_mb", "max_disk_mb", "cpus"
        )
        if getattr(args, name, None) is not None
    }
    if not overrides:
        return limits
    from .spec import check_ranges

    limits = replace(limits, **overrides)
    check_ranges(limits, "the sandbox limits given on the command line")
    return limits


def cmd_grade(args: argparse.Namespace) -> int:
    from .batch import BatchOptions, grade_batch, import_manual, rebuild_outputs, summary
    from .classreport import class_summary

    spec = _assignment(args.assignment)
    out = Path(args.out)
    gradebook = Path(args.gradebook) if args.gradebook else out / GRADEBOOK_FILE
    if args.manual:
        count = import_manual(spec, Path(args.manual), gradebook)
        print(f"merged {count} manual scores from {args.manual}")
        if not args.submissions:
            rebuild_outputs(spec, gradebook, out, _course_files(args))
            print(f"rebuilt {out / 'grades.csv'}")
            return 0
    if not args.submissions:
        raise UsageError("no submissions given", hint="grader grade SUBMISSIONS... --out DIR")
    options = BatchOptions(
        jobs=args.jobs,
        force=args.force,
        sandbox=not args.no_sandbox,
        limits=_limits(args, spec),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        dataset=Path(args.dataset) if args.dataset else None,
        cell_timeout=args.cell_timeout,
        notebook_timeout=args.notebook_timeout,
        gradebook=gradebook,
        progress=not args.quiet,
        submission_times=Path(args.submissions_csv) if args.submissions_csv else None,
        course=_course_files(args),
        scheduler=args.scheduler,
        fork_server=not args.no_fork_server,
    )
    batch = grade_batch(spec, [Path(p) for p in args.submissions], out, options)
    print(summary(spec, batch))
    print(
        f"\n{len(batch.results)} students: {batch.graded} graded, {batch.cached} unchanged "
        f"(cached), {batch.failed} unreadable; {batch.seconds:.1f}s. Outputs in {out}/"
    )
    print(class_summary(spec, batch.results, out, args.assignment))
    from .report import one_line

    for warning in batch.warnings:  # they quote file and student names: escaped
        print(f"warning: {one_line(warning)}", file=sys.stderr)
    return 0


def _course_files(args: argparse.Namespace) -> CourseFiles:
    from .course import CourseFiles

    return CourseFiles(
        roster=Path(args.roster) if args.roster else None,
        extensions=Path(args.extensions) if args.extensions else None,
    )


def cmd_export(args: argparse.Namespace) -> int:
    from .batch import rebuild_outputs
    from .report import one_line

    spec = _assignment(args.assignment)
    out = Path(args.out)
    gradebook = Path(args.gradebook) if args.gradebook else out / GRADEBOOK_FILE
    warnings: list[str] = []
    results = rebuild_outputs(spec, gradebook, out, _course_files(args), warnings)
    print(f"rebuilt {out / 'grades.csv'} for {len(results)} students from {gradebook}")
    for warning in warnings:
        print(f"warning: {one_line(warning)}", file=sys.stderr)
    if args.canvas:
        from .canvas import export_canvas

        source = Path(args.canvas)
        target = Path(args.canvas_out) if args.canvas_out else out / f"canvas-{source.name}"
        # an explicit column is the only one tried: a typo must not fall back to the title's
        wanted = [args.canvas_column] if args.canvas_column else [spec.title, spec.id]
        report = export_canvas(source, results, target, wanted)
        print(f"wrote {target}: column {report.column!r} filled for {len(report.filled)} students")
        for warning in report.warnings:
            print(f"warning: {one_line(warning)}", file=sys.stderr)
        for label, names in (
            ("in Canvas, no result (left as it was)", report.unmatched_rows),
            ("graded, not in Canvas", report.unmatched_results),
            ("matching several (left as it was)", report.ambiguous),
            ("not graded (left as it was)", report.not_graded),
            ("manual grading not finished (filled with the points so far)", report.pending),
        ):
            if names:
                print(f"{label}: " + "; ".join(one_line(n) for n in names))
    return 0


def cmd_gradescope(args: argparse.Namespace) -> int:
    from .gradescope import build_autograder

    spec = _assignment(args.assignment)
    out = Path(args.out)
    names = build_autograder(
        spec, out, dataset=Path(args.dataset) if args.dataset else None, with_data=not args.no_data
    )
    print(f"wrote {out}: {len(names)} files, {out.stat().st_size / 2**20:.1f} MB")
    return 0


def cmd_gradescope_run(args: argparse.Namespace) -> int:
    import os

    from .gradescope import ROOT_ENV, run_autograder

    root = Path(args.root or os.environ.get(ROOT_ENV) or "/autograder")
    data = run_autograder(
        root,
        submission=Path(args.submission) if args.submission else None,
        results=Path(args.results) if args.results else None,
    )
    print(data["output"])
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    import time
    import webbrowser

    from .review_server import start

    spec = _assignment(args.assignment)
    out = Path(args.out)
    gradebook = Path(args.gradebook) if args.gradebook else out / GRADEBOOK_FILE
    server = start(spec, gradebook, out, port=args.port)
    print(f"review page: {server.url}")
    print("every score is saved at once; press Ctrl+C to stop (outputs are rebuilt on exit)")
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        count = server.exporter.now()
        print(f"rebuilt the outputs of {count} students in {out}/")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .report import one_line, terminal_safe
    from .selfcheck import format_results
    from .studentcheck import check_notebook

    results, notes = check_notebook(
        Path(args.notebook),
        assignment=args.assignment,
        dataset=Path(args.dataset) if args.dataset else None,
        sandbox=not args.no_sandbox,
    )
    for note in notes:
        print(f"note: {one_line(note)}")
    print(terminal_safe(format_results(results)))
    passed = sum(r["status"] in ("pass", "form ok") for r in results)
    print(f"\n{passed}/{len(results)} public checks pass. These are not your grade: hidden checks run at grading.")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .errors import ValidationFailed
    from .release import validate

    spec = _assignment(args.assignment)
    report = validate(
        spec,
        sandbox=not args.no_sandbox,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )
    for item in report.passed:
        print(f"ok    {item}")
    for item in report.problems:
        print(f"FAIL  {item}")
    for item in report.notes:
        print(f"note  {item}")
    if report.problems:
        raise ValidationFailed(f"{len(report.problems)} validation check(s) failed")
    print(f"\n{len(report.passed)} checks passed")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate, warm_cache

    spec = _assignment(args.assignment)
    dataset = Path(args.dataset) if args.dataset else None
    if not args.cache_only:
        print(f"wrote {calibrate(spec, dataset=dataset)}")
    warm_cache(
        spec,
        notebooks=[Path(p) for p in args.warm],
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        dataset=dataset,
        sandbox=not args.no_sandbox,
        progress=lambda message: print(message, flush=True),
        cell_times=True,
    )
    return 0


def _course_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--roster", help="roster CSV (id, name, email) or a Canvas export")
    p.add_argument("--extensions", help="extensions CSV: student, due or days")


def build_parser() -> argparse.ArgumentParser:
    from .batch import BatchOptions

    parser = argparse.ArgumentParser(
        prog="grader", description="Grade Jupyter notebook assignments."
    )
    parser.add_argument("--version", action="version", version=f"grader {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("assign", help="write the student template from the source notebook")
    p.add_argument("source", help="the assignment folder, e.g. solutions/<id>")
    p.add_argument("--out", help="template path (default: assignments/<id>/<template>)")
    p.set_defaults(func=cmd_assign)

    p = sub.add_parser("release", help="write the student bundle")
    p.add_argument("assignment")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("grade", help="batch-grade submissions")
    p.add_argument("submissions", nargs="*", help="notebooks, folders or .zip downloads")
    p.add_argument("--assignment", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--jobs", type=int, default=BatchOptions.jobs, help="worker processes")
    p.add_argument("--force", action="store_true", help="re-grade unchanged submissions")
    p.add_argument("--manual", help="merge a filled-in manual.csv into the gradebook")
    p.add_argument("--gradebook", help="SQLite gradebook (default: OUT/gradebook.sqlite)")
    p.add_argument("--cache-dir", help="reference-run cache (default: ~/.cache/grader)")
    p.add_argument("--dataset", help="the data file, instead of looking it up")
    p.add_argument("--cell-timeout", type=float, help="seconds per cell (default: the spec's)")
    p.add_argument(
        "--notebook-timeout", type=float, help="seconds per submission: run, grader cells, checks"
    )
    p.add_argument(
        "--scheduler", help="grade on Dask: tcp://HOST:8786 (a running scheduler) or local:N"
    )
    p.add_argument("--memory-mb", type=int, help="memory limit per sandboxed process")
    p.add_argument("--cpu-seconds", type=int, help="CPU time limit per sandboxed process")
    p.add_argument("--max-processes", type=int, help="process limit inside the sandbox")
    p.add_argument("--max-output-mb", type=int, help="output limit per notebook")
    p.add_argument("--max-disk-mb", type=int, help="size of each private file system")
    p.add_argument("--cpus", type=float, help="CPU quota per submission (with cgroups)")
    p.add_argument("--no-sandbox", action="store_true", help="run student code unprotected")
    p.add_argument(
        "--no-fork-server", action="store_true",
        help="start a clean process for each class or function check (slower)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--submissions-csv", help="submission times: student, file, submitted_at")
    _course_arguments(p)
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("export", help="rebuild grades.csv and feedback from the gradebook")
    p.add_argument("--assignment", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--gradebook")
    _course_arguments(p)
    p.add_argument("--canvas", help="a gradebook CSV exported from Canvas, to fill in")
    p.add_argument("--canvas-column", help="its column for this assignment (default: by title)")
    p.add_argument("--canvas-out", help="where to write it (default: OUT/canvas-<name>)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("gradescope", help="build Gradescope's autograder zip")
    p.add_argument("assignment")
    p.add_argument("--out", required=True, help="the zip to write, e.g. autograder.zip")
    p.add_argument("--dataset", help="the data file, instead of looking it up")
    p.add_argument("--no-data", action="store_true", help="leave the data file out of the zip")
    p.set_defaults(func=cmd_gradescope)

    p = sub.add_parser("gradescope-run", help="inside Gradescope: grade the submission")
    p.add_argument("--root", help="the autograder folder (default: $GRADER_AUTOGRADER_ROOT or /autograder)")
    p.add_argument("--submission", help="default: ROOT/submission")
    p.add_argument("--results", help="default: ROOT/results")
    p.set_defaults(func=cmd_gradescope_run)

    p = sub.add_parser("review", help="score free-response answers in the browser")
    p.add_argument("--assignment", required=True)
    p.add_argument("--out", required=True, help="the output folder of grader grade")
    p.add_argument("--gradebook", help="SQLite gradebook (default: OUT/gradebook.sqlite)")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="print the address only")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("check", help="self-check a notebook before submitting")
    p.add_argument("notebook")
    p.add_argument("--assignment", help="use the assignment's spec instead of selfcheck.py")
    p.add_argument("--dataset", help="the data file, instead of looking it up")
    p.add_argument("--no-sandbox", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("validate", help="CI checks of an assignment")
    p.add_argument("assignment")
    p.add_argument("--cache-dir")
    p.add_argument("--no-sandbox", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "calibrate", help="measure thresholds from reference runs; build the reference cache"
    )
    p.add_argument("assignment")
    p.add_argument("--dataset")
    p.add_argument("--cache-dir", help="reference-run cache (default: ~/.cache/grader)")
    p.add_argument("--cache-only", action="store_true", help="build the cache, keep thresholds")
    p.add_argument("--warm", nargs="*", default=[], help="notebooks whose answers to cache too")
    p.add_argument("--no-sandbox", action="store_true")
    p.set_defaults(func=cmd_calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; callable from tests. Returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        code: int = args.func(args)
        return code
    except GraderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished results are kept in the gradebook", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
