"""The function kind's pure parts: comparison rules, changed arguments, result parsing, the
source taken with a function. (Real sandboxed calls: tests/test_functionkind.py.)"""

import json

import numpy as np
import pytest

from grader.checking import Unsupported, find_definition_source
from grader.clean import MAX_DEPTH, RunOutput, parse_lines
from grader.functions import CallResult, Case, compare, first_mismatch, seeded_cases

A = np.array([0.1, 0.2, 0.3])


@pytest.mark.parametrize(
    ("actual", "expected", "rtol", "atol", "ok", "says"),
    [
        (A, A.copy(), 0, 0, True, ""),
        ([0.1, 0.2, 0.3], A, 0, 0, True, ""),  # container does not matter, values do
        ((0.1, 0.2, 0.3), A, 0, 0, True, ""),
        (A + 1e-8, A, 1e-7, 0, True, ""),  # within rtol
        (A + 1e-5, A, 1e-7, 0, False, "largest difference is 1e-05"),
        (A + 1e-5, A, 0, 1e-4, True, ""),  # within atol
        (A.reshape(3, 1), A, 1e-7, 0, False, "shape (3, 1) instead of (3,)"),
        (A[:2], A, 1e-7, 0, False, "shape (2,) instead of (3,)"),
        (np.array([np.nan]), np.array([np.nan]), 0, 0, True, ""),
        (np.array([np.nan]), np.array([1.0]), 1, 1, False, "values differ"),
        (np.array([np.inf]), np.array([np.inf]), 0, 0, True, ""),
        (np.array([-np.inf]), np.array([np.inf]), 0, 0, False, "values differ"),
        (np.zeros((0, 10)), np.zeros((0, 10)), 0, 0, True, ""),  # an empty batch
        (3, 3.0, 0, 0, True, ""),
        (2.5, 3.0, 0.1, 0, False, "largest difference is 0.5"),
        ("abc", "abc", 0, 0, True, ""),
        ("abd", "abc", 0, 0, False, "not the expected value"),
        (None, None, 0, 0, True, ""),
        (0, None, 0, 0, False, "not the expected value"),
        ("x", A, 0, 0, False, "expected numbers"),
        ({"a": 1.0}, {"a": 1}, 0, 0, True, ""),
        ({"b": 1.0}, {"a": 1}, 0, 0, False, "keys"),
        ([A, A], [A, A + 1], 0, 0, False, "values differ"),  # a list of activations
        ([A, np.zeros(2)], [A, np.zeros(2)], 0, 0, True, ""),
        ([A], [A, A], 0, 0, False, "shape (1, 3) instead of (2, 3)"),
        ([A, "x"], [A, "x", "y"], 0, 0, False, "expected 3 items, got 2"),
        (Unsupported("a function"), 1.0, 0, 0, False, "cannot be compared"),
        # what the codec makes of answers JSON cannot hold: int keys become text, NaN a marker
        ({"0": 1.0, "1": 2.0}, {0: 1.0, 1: 2.0}, 0, 0, True, ""),
        ({"0": 1.0, "2": 2.0}, {0: 1.0, 1: 2.0}, 0, 0, False, "keys ['0', '1'], got ['0', '2']"),
        ({"0": 1.0}, {0: 2.0}, 0, 0, False, "[0]: values differ"),
        (Unsupported("nan"), float("nan"), 0, 0, True, ""),
        (Unsupported("-inf"), float("-inf"), 0, 0, True, ""),
        (Unsupported("inf"), float("-inf"), 0, 0, False, "values differ"),
        (Unsupported("nan"), 1.0, 0, 0, False, "values differ"),
        ([1.0, Unsupported("nan")], [1.0, float("nan")], 0, 0, True, ""),
    ],
)
def test_compare(actual, expected, rtol, atol, ok, says):
    problem = compare(actual, expected, rtol=rtol, atol=atol)
    assert (problem is None) == ok, problem
    if not ok:
        assert says in problem


def test_compare_after_the_codec_round_trip():
    """What a right answer looks like after the clean process sent it back still matches."""
    from grader.checking import decode
    from grader.selfcheck import encode

    for value in ({0: 1.5, 1: [1, 2]}, float("nan"), float("inf"), [0.5, float("nan")], {"a": float("-inf")}):
        assert compare(decode(json.loads(json.dumps(encode(value)))), value) is None, value


def test_compare_does_not_give_the_expected_value_away():
    assert "0.731" not in compare(0.5, 0.7310585786, rtol=1e-7, atol=0)
    assert "secret" not in compare("guess", "secret")


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        ((A,), (A.copy(),), []),
        ((A,), (A * 2,), ["argument 1"]),
        ((A, 3), (A, 4), ["argument 2"]),
        ((np.zeros((0, 3)),), (np.zeros((0, 3)),), []),
    ],
)
def test_changed_arguments(before, after, changed):
    assert CallResult(Case(before), value=1, args=after).changed_arguments() == changed


def test_first_mismatch_names_the_case():
    cases = [Case((A,), label="a batch of 3"), Case((A[:1],), label="a single sample")]
    results = [CallResult(cases[0], A), CallResult(cases[1], error="ValueError: boom")]
    assert first_mismatch(results, [A, A[:1]]) == "for a single sample it raised ValueError: boom"
    results = [CallResult(cases[0], A + 1), results[1]]
    assert first_mismatch(results, [A, A[:1]]).startswith("for a batch of 3: values differ")
    assert first_mismatch([CallResult(cases[0], A)], [A]) is None


def test_seeded_cases_are_the_same_every_time():
    make = lambda rng: Case((rng.normal(size=(2, 3)),))  # noqa: E731
    one, two = seeded_cases(7, 3, make), seeded_cases(7, 3, make)
    assert all(np.array_equal(a.args[0], b.args[0]) for a, b in zip(one, two, strict=True))
    assert not np.array_equal(one[0].args[0], one[1].args[0])


def _line(data):
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (_line({"case": 0, "value": 1}) + b"\n" + _line({"case": 1, "value": 2}), [1, 2]),
        (_line({"case": 1, "value": 2}), [None, 2]),
        (b"garbage\n" + _line({"case": 0, "value": 1}), [1, None]),
        (_line({"case": 0, "value": 1}) + b"\n" + _line({"case": 0, "value": 9}), [1, None]),
        (_line({"case": 5, "value": 1}), [None, None]),  # out of range
        (_line({"case": "0", "value": 1}), [None, None]),
        (_line({"case": 0, "value": {"__ndarray__": {"dtype": "<f8", "shape": [9], "b64": "AA=="}}}), ["bad"]),
        (_line({"case": 0, "value": json.loads("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5))}), [None]),
        (b"[" * 100_000 + b"]" * 100_000, [None, None]),  # deeper than json can parse
    ],
)
def test_parse_lines(stdout, expected):
    lines, module_error = parse_lines(RunOutput(stdout), len(expected))
    assert module_error is None
    for line, want in zip(lines, expected, strict=True):
        if want is None:
            assert line is None
        elif want == "bad":
            assert isinstance(line.value, Unsupported)
        else:
            assert line.value == want


def test_parse_lines_module_error():
    lines, module_error = parse_lines(RunOutput(_line({"case": -1, "error": "NameError: x"})), 2)
    assert lines == [None, None] and module_error == "NameError: x"


def test_function_source_takes_its_helpers_only():
    cells = [
        "import numpy as np\nSCALE = 2",
        "def helper(x):\n    return x * SCALE",
        "data = np.load('train.npy')\nprint(data)",
        "def sigmoid(z):\n    return 1 / (1 + np.exp(-helper(z) / SCALE))",
        "sigmoid(data)",
    ]
    module = find_definition_source(cells, "sigmoid", "function")
    assert module is not None
    assert "def helper" in module and "SCALE = 2" in module and "import numpy as np" in module
    assert "np.load" not in module and "print" not in module and "sigmoid(data)" not in module
    assert find_definition_source(cells, "sigmoid", "class") is None
    assert find_definition_source(["class sigmoid:\n    pass"], "sigmoid", "function") is None
