"""The review page end to end in a real headless Chromium (Playwright driving Debian's
chromium): grade two answers by keyboard and mouse, add a comment with quotes and a newline,
try a bad points value, reload and find everything persisted, export, and read the
student's feedback page. A hostile answer must not run in the instructor's browser.

Screenshots of the review page, a feedback page and the class report go to
$GRADER_SCREENSHOTS when set (docs/ holds the committed ones), else to the test's tmp dir.
"""

import os
import shutil
from pathlib import Path

import pytest
from review_helpers import SAMPLES, sample_gradebook, sample_result

from grader.gradebook import Gradebook
from grader.report import safe_filename
from grader.review_server import start

pytestmark = pytest.mark.slow

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = "It goes down. <script>alert('answer')</script><img src=x onerror=alert('img')>"


def _chromium() -> str:
    for candidate in (os.environ.get("GRADER_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.skip("no Chromium found (apt-get install chromium, or set GRADER_CHROMIUM)")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = _chromium()
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, args=ARGS)
        except Exception as exc:  # a browser that cannot start here is a skip, with its reason
            pytest.skip(f"Chromium at {executable} did not start: {exc}")
        sync_api.expect.set_options(timeout=300_000)  # a loaded machine is slow, not wrong
        yield b, sync_api.expect
        b.close()


def test_grade_two_answers_in_the_browser(browser, spec, tmp_path):
    browser, expect = browser
    book = tmp_path / "gradebook.sqlite"
    students = sample_gradebook(spec, book, count=3)
    hostile, executed = sample_result(spec, sorted(SAMPLES.glob("*.ipynb"))[2], students[2])
    hostile.manual_answers["cost_makes_sense"] = HOSTILE
    with Gradebook(book) as gb:
        gb.save(hostile, "test:hostile", executed)
    shots = Path(os.environ.get("GRADER_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    server = start(spec, book, out)
    dialogs: list[str] = []
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(300_000)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(server.url)
        page.wait_for_selector("#card:not([hidden])")
        assert page.text_content("#qtitle").startswith("cost_makes_sense")
        assert page.text_content("#sname") == students[0]
        assert "0 of 3 graded" in page.text_content("#progress")
        # first student: 1 point, Enter saves and moves on
        page.fill("#points", "1")
        page.press("#points", "Enter")
        expect(page.locator("#sname")).to_have_text(students[1])
        # second student: a bad value first (refused, nothing saved), then half a point
        page.fill("#points", "7")
        page.press("#points", "Tab")
        page.wait_for_selector("#status.bad")
        assert "between 0 and 1" in page.text_content("#status")
        page.fill("#points", "0.5")
        page.press("#points", "Tab")
        page.wait_for_selector("#status.ok")
        comment = 'Close: "why" does it go down?\nSee the second plot.'
        page.fill("#comment", comment)
        page.click("#qtitle")  # leaving the field saves it
        page.wait_for_selector("#status.ok")
        assert "2 of 3 graded" in page.text_content("#progress")
        # Alt+U: the next ungraded answer is the hostile one; nothing of it runs
        page.keyboard.press("Alt+U")
        expect(page.locator("#sname")).to_have_text(students[2])
        assert "<script>alert('answer')</script>" in page.text_content("#answer")
        assert page.locator("#answer img, #answer script").count() == 0
        page.screenshot(path=str(shots / "review.png"))
        # reload: both scores and the comment come back from the gradebook
        page.reload()
        page.wait_for_selector("#card:not([hidden])")
        assert "2 of 3 graded" in page.text_content("#progress")
        page.keyboard.press("j")
        expect(page.locator("#sname")).to_have_text(students[1])
        assert page.input_value("#points") == "0.5"
        assert page.input_value("#comment") == comment
        page.keyboard.press("Alt+ArrowLeft")
        expect(page.locator("#points")).to_have_value("1")
        page.click("#export")
        expect(page.locator("#status")).to_contain_text("exported 3 students", timeout=600_000)
        assert dialogs == []
        feedback = out / "feedback" / f"{safe_filename(students[1])}.html"
        text = feedback.read_text()
        assert 'Close: "why" does it go down?' in text and "0.5 / 1" in text
        view = browser.new_page(viewport={"width": 1100, "height": 1300})
        view.set_default_timeout(300_000)
        view.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        view.goto(feedback.as_uri())
        assert view.locator("#result-cost_makes_sense").is_visible()
        view.locator("#result-cost_makes_sense").scroll_into_view_if_needed()
        view.screenshot(path=str(shots / "feedback-answer.png"))
        view.goto((out / "feedback" / f"{safe_filename(students[2])}.html").as_uri())
        view.goto((out / "report.html").as_uri())
        view.screenshot(path=str(shots / "report.png"))
        view.close()
        assert dialogs == []
    finally:
        page.close()
        server.close()
