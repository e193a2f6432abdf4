"""Scoring rules: small pure functions, tested with tables of cases."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from .results import (
    Q_FAILED,
    Q_MANUAL,
    Q_MISSING,
    Q_PARTIAL,
    Q_PASSED,
    Q_UNGRADABLE,
    CheckResult,
    QuestionResult,
)

PRECISION = 4


def round_points(value: float) -> float:
    return round(value + 0.0, PRECISION)


def question_points(
    points: float, checks: Sequence[CheckResult], weights: Mapping[str, float]
) -> float:
    """Points earned for a question.

    Without weights the question is all or nothing: every check must pass. With weights
    (the spec's `subchecks`), each passed check earns its share; checks without a weight
    gate nothing and earn nothing.
    """
    if not checks:
        return 0.0
    if not weights:
        return round_points(points) if all(c.passed for c in checks) else 0.0
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    earned = sum(weights.get(c.name, 0.0) for c in checks if c.passed)
    return round_points(points * earned / total)


def question_status(points: float, max_points: float, checks: Sequence[CheckResult]) -> str:
    if not checks:
        return Q_MISSING
    if max_points > 0 and points >= max_points:
        return Q_PASSED
    if max_points == 0 and all(c.passed for c in checks):
        return Q_PASSED
    return Q_PARTIAL if points > 0 else Q_FAILED


def score_question(
    qid: str,
    max_points: float,
    checks: Sequence[CheckResult],
    weights: Mapping[str, float] | None = None,
    *,
    missing_message: str = "",
) -> QuestionResult:
    """A question's result from its checks."""
    if not checks:
        return QuestionResult(qid, Q_MISSING, 0.0, max_points, [], missing_message)
    points = question_points(max_points, checks, weights or {})
    return QuestionResult(
        qid, question_status(points, max_points, checks), points, max_points, list(checks)
    )


def ungradable(qid: str, max_points: float, reason: str) -> QuestionResult:
    return QuestionResult(qid, Q_UNGRADABLE, 0.0, max_points, [], reason)


def manual_pending(qid: str, max_points: float) -> QuestionResult:
    return QuestionResult(qid, Q_MANUAL, 0.0, max_points, [], "waits for a manual score")


def apply_manual_score(result: QuestionResult, score: float | None) -> QuestionResult:
    """A manual question with a human's score; None keeps it pending."""
    if score is None:
        return result
    if not 0 <= score <= result.max_points:
        raise ValueError(
            f"manual score {score} for {result.id!r} is outside 0..{result.max_points}"
        )
    status = Q_PASSED if score >= result.max_points else (Q_PARTIAL if score > 0 else Q_FAILED)
    return QuestionResult(
        result.id, status, round_points(score), result.max_points, [], "scored by hand"
    )


def parse_points(text: str) -> float | None:
    """A points cell from a spreadsheet: blank means not scored yet."""
    text = text.strip()
    if not text:
        return None
    return float(text.replace(",", "."))


def choose_newest(candidates: Iterable[tuple[str, datetime]]) -> tuple[str, list[str]]:
    """Of one student's submissions (name, time), the newest counts; the others are listed."""
    ordered = sorted(candidates, key=lambda item: (item[1], item[0]))
    if not ordered:
        raise ValueError("no submissions to choose from")
    newest = ordered[-1][0]
    return newest, [name for name, _ in ordered[:-1]]

