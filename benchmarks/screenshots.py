"""Screenshots of a graded class for the README, taken by headless Chromium.

    python benchmarks/screenshots.py OUT [--into docs] [--student NAME]

OUT is the output folder of `grader grade` (the README's first command writes
grading-out/). Takes the review page (served by `grader review`'s server on 127.0.0.1),
one feedback page (at its training curve and at a result box) and the class report.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    from grader.report import safe_filename
    from grader.review_server import start
    from grader.spec import find_assignment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--into", type=Path, default=Path("docs"))
    parser.add_argument("--assignment", default="mnist_nn")
    parser.add_argument("--student", default="brownjames")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    spec = find_assignment(args.assignment)
    args.into.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="grader-shots-")) / "out"
    shutil.copytree(args.out, work)  # the review page saves a score: never into the original
    feedback = work / "feedback" / f"{safe_filename(args.student)}.html"
    server = start(spec, work / "gradebook.sqlite", work)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 820})
            page.goto(server.url)
            page.wait_for_selector("#card:not([hidden])")
            page.click("#questions button:nth-child(3)")
            page.fill("#points", "0.5")
            page.fill("#comment", "Right direction; say why the cost flattens out.")
            page.click("#qtitle")
            page.wait_for_selector("#status.ok")
            page.screenshot(path=str(args.into / "review-page.png"))
            page.click("#export")
            page.locator("#status", has_text="exported").wait_for(timeout=300_000)
            page.goto(feedback.as_uri())
            page.screenshot(path=str(args.into / "feedback-summary.png"))
            page.locator("#result-experiments").scroll_into_view_if_needed()
            time.sleep(0.2)
            page.screenshot(path=str(args.into / "feedback-answer.png"))
            page.goto((work / "report.html").as_uri())
            page.screenshot(path=str(args.into / "class-report.png"), full_page=True)
            browser.close()
    finally:
        server.close()
        shutil.rmtree(work.parent, ignore_errors=True)
    for name in ("review-page", "feedback-summary", "feedback-answer", "class-report"):
        print(args.into / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
