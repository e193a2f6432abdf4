"""Feedback pages rendered where the submission was graded, and reused when nothing on them
changed.

Rendering a student's page (their executed notebook through nbconvert, the plots) takes
about as long as a check. Done at the end of a batch, in the instructor's process, it is a
serial tail that grows with the class (about 0.7 s a student here: 12 minutes for 1,000
students after the last one is graded, whatever the number of workers). So the worker that
graded a submission renders its page right away, in parallel with the others, and sends it
back with the result; the gradebook keeps it beside the result.

A page is used only for exactly what it was rendered from: its key covers the result as the
page shows it (after manual scores and late penalties), the executed notebook, the batch's
fingerprint (the assignment's files and the grader's code) and the versions of the
libraries that draw it. When anything differs (a manual score merged, a penalty, a new
hint), the page is rendered again and that one kept in its place.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from nbformat import NotebookNode

from .results import SubmissionResult
from .spec import AssignmentSpec

RENDERING_LIBRARIES = (
    "nbconvert",
    "matplotlib",
    "pygments",
    "mistune",
    "bleach",
    "jinja2",
    "nbformat",
)


@cache
def _libraries() -> str:
    found = []
    for name in RENDERING_LIBRARIES:
        try:
            found.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name}=none")
    return ";".join(found)


def page_key(fingerprint: str, r: SubmissionResult, executed: bytes | None) -> str:
    """What a page is rendered from: `fingerprint` (the batch's: the assignment's files and
    the grader's code), the result `r` as it will be shown, the executed notebook as stored
    (compressed bytes), and the drawing libraries' versions."""
    digest = hashlib.sha256()
    for part in (
        fingerprint.encode(),
        _libraries().encode(),
        json.dumps(r.to_dict(), sort_keys=True).encode(),
        hashlib.sha256(executed).digest() if executed is not None else b"none",
    ):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def prerender(
    spec: AssignmentSpec,
    fingerprint: str,
    r: SubmissionResult,
    executed: NotebookNode | None,
    packed: bytes | None,
) -> dict[str, str] | None:
    """{"key", "html"}: the page for `r` as graded (`packed` is `executed` as stored). None
    when it cannot be drawn here: the instructor's process then draws it and says why."""
    from .feedback import render_feedback

    try:
        html = render_feedback(spec, r, executed)
    except Exception:  # drawn again at the end, where a failure is reported per student
        return None
    return {"key": page_key(fingerprint, r, packed), "html": html}


def compress(html: str) -> bytes:
    return zlib.compress(html.encode("utf-8"), 6)


def decompress(blob: bytes) -> str:
    return zlib.decompress(blob).decode("utf-8")
