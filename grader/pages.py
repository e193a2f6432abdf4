"""Feedback pages drawn where the submission was graded, and reused when nothing drawn on
them changed.

Drawing a student's page (their executed notebook through nbconvert, the cost curve) takes
about as long as a check. Done at the end of a batch, in the instructor's process, it is a
serial tail that grows with the class (about 0.7 s a student here: 12 minutes for 1,000
students after the last one is graded, whatever the number of workers). So the worker that
graded a submission draws those parts right away, in parallel with the others, and sends
them back with the result; the gradebook keeps them beside the result. The summary on top
(score, notes, lateness, roster) is cheap and always made afresh from the final result.

Drawn parts are used only for exactly what they were drawn from: their key covers the
question results (after manual scores), the executed notebook, the batch's fingerprint (the
assignment's files and the instructor's grader code), and the code that draws (the grader's
own files where they were drawn, the drawing libraries' versions). When anything differs (a
manual score merged, a new hint, another grader on a Dask worker), the parts are drawn again
and kept in their place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from dataclasses import asdict
from functools import cache
from typing import Any

from .results import QuestionResult
from .spec import AssignmentSpec

log = logging.getLogger(__name__)

DRAWING_LIBRARIES = ("nbconvert", "matplotlib", "pygments", "mistune", "bleach", "jinja2", "nbformat")


@cache
def _drawing_code() -> bytes:
    """The libraries' versions and this grader's own source: what draws the parts here."""
    from .batch import grader_source_digest
    from .checking import installed_versions

    versions = json.dumps(installed_versions(DRAWING_LIBRARIES), sort_keys=True)
    return hashlib.sha256(versions.encode() + grader_source_digest()).digest()


def parts_key(fingerprint: str, questions: list[QuestionResult], executed: bytes | None) -> str:
    """What the drawn parts depend on: `fingerprint` (the batch's), the question results as
    shown, the executed notebook as stored (compressed bytes) and the drawing code."""
    digest = hashlib.sha256()
    for part in (
        fingerprint.encode(),
        _drawing_code(),
        json.dumps([asdict(q) for q in questions], sort_keys=True).encode(),
        hashlib.sha256(executed).digest() if executed is not None else b"none",
    ):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def predraw(
    spec: AssignmentSpec,
    fingerprint: str,
    questions: list[QuestionResult],
    executed: bytes | None,
) -> tuple[str, bytes] | None:
    """(key, compressed parts) for the question results and the executed notebook as the
    instructor's process will read them back; None when they cannot be drawn here: that
    process then draws them and says why if it cannot either."""
    from .executed import unpack
    from .feedback import draw_parts

    try:
        parts = draw_parts(spec, questions, unpack(executed) if executed is not None else None)
        return parts_key(fingerprint, questions, executed), pack_parts(parts)
    except Exception as exc:
        log.debug("feedback not drawn by the worker: %s: %s", type(exc).__name__, exc)
        return None


def pack_parts(parts: dict[str, str]) -> bytes:
    return zlib.compress(json.dumps(parts).encode("utf-8"), 6)


def unpack_parts(blob: bytes) -> dict[str, str] | None:
    """The kept parts, or None when they cannot be read (then they are drawn again)."""
    try:
        parts: Any = json.loads(zlib.decompress(blob).decode("utf-8"))
    except (zlib.error, ValueError, RecursionError):
        return None
    if not isinstance(parts, dict) or not all(
        isinstance(parts.get(k), str) for k in ("curve", "body")
    ):
        return None
    return {"curve": parts["curve"], "body": parts["body"]}
