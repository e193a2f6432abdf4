"""Scoring rules are pure functions: tables of cases."""

from datetime import UTC, datetime

import pytest

from grader.results import CheckResult
from grader.scoring import (
    apply_manual_score,
    choose_newest,
    manual_pending,
    parse_points,
    question_points,
    score_question,
)


def checks(*passed: bool) -> list[CheckResult]:
    return [CheckResult(f"c{i}", p) for i, p in enumerate(passed)]


@pytest.mark.parametrize(
    ("points", "passed", "weights", "expected"),
    [
        (1, (True,), {}, 1),
        (1, (False,), {}, 0),
        (3, (True, True, True), {}, 3),
        (3, (True, False, True), {}, 0),  # all or nothing without weights
        (3, (True, False, True), {"c0": 1, "c1": 1, "c2": 1}, 2),
        (4, (True, False), {"c0": 3, "c1": 1}, 3),
        (2, (True, True), {"c0": 1}, 2),  # an unweighted check earns nothing and gates nothing
        (2, (False, True), {"c0": 1}, 0),
        (3, (True, False, False), {"c0": 1, "c1": 1, "c2": 1}, 1),
        (1, (), {}, 0),
        (1, (True,), {"c0": 0}, 0),
    ],
)
def test_question_points(points, passed, weights, expected):
    assert question_points(points, checks(*passed), weights) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("passed", "weights", "status"),
    [
        ((True, True), {}, "passed"),
        ((True, False), {}, "failed"),
        ((True, False), {"c0": 1, "c1": 1}, "partial"),
        ((), {}, "missing"),
    ],
)
def test_score_question_status(passed, weights, status):
    assert score_question("q", 2, checks(*passed), weights).status == status


@pytest.mark.parametrize(
    ("score", "status", "points"),
    [(None, "manual", 0.0), (0, "failed", 0.0), (0.5, "partial", 0.5), (1, "passed", 1.0)],
)
def test_manual_scores(score, status, points):
    result = apply_manual_score(manual_pending("m", 1), score)
    assert (result.status, result.points) == (status, points)


@pytest.mark.parametrize("score", [-0.5, 1.5])
def test_manual_score_out_of_range(score):
    with pytest.raises(ValueError, match="outside"):
        apply_manual_score(manual_pending("m", 1), score)


@pytest.mark.parametrize(
    ("text", "expected"), [("", None), ("  ", None), ("1", 1.0), ("0,5", 0.5), (" 2.25 ", 2.25)]
)
def test_parse_points(text, expected):
    assert parse_points(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.1, (0.1, False)), (10, (0.1, True)), (95.3, (0.953, True)), (1.0, (1.0, False)), (0, (0, False))],
)
def test_mnist_nn_reads_percentages(spec, value, expected):
    """An assignment's own rule now (solutions/mnist_nn/checks.py), no longer grader's."""
    from grader.checking import load_module

    checks = load_module(spec.checks_path, f"_grader_checks_{spec.id}")
    got = checks.normalise_fraction(value)
    assert got[1] == expected[1] and got[0] == pytest.approx(expected[0])


def test_choose_newest():
    t = [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3)]
    assert choose_newest([("a", t[0]), ("c", t[2]), ("b", t[1])]) == ("c", ["a", "b"])
    assert choose_newest([("x", t[0])]) == ("x", [])
    with pytest.raises(ValueError):
        choose_newest([])


def test_a_check_that_could_not_complete_marks_the_result_as_the_graders_failure():
    from grader.results import GRADER_CHECK, CheckResult, QuestionResult, SubmissionResult

    def result(*checks: CheckResult) -> SubmissionResult:
        question = QuestionResult("q", "failed", 0.0, 1.0, list(checks))
        return SubmissionResult(student="s", file="f", content_hash="", status="graded", questions=[question])

    assert result(CheckResult(GRADER_CHECK, False, "the check could not be completed")).grader_failed
    assert not result(CheckResult("value", False, "wrong")).grader_failed
    assert not result(CheckResult(GRADER_CHECK, True, "")).grader_failed
