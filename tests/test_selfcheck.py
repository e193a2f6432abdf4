"""The kernel-side encoding and public checks: plain data only, subclasses reduced."""

import math

import numpy as np
import pytest
import torch

from grader import selfcheck
from grader.checking import Unsupported, decode


class AlwaysEqual:
    def __eq__(self, other):
        return True


class EvilFloat(float):
    def __eq__(self, other):
        return True

    def __float__(self):
        return 1.25


class EvilTensor(torch.Tensor):
    pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4, 4),
        (4.5, 4.5),
        ("text", "text"),
        (None, None),
        (True, True),
        ([1, 2], [1, 2]),
        ((1, 2), [1, 2]),
        ({"a": 1}, {"a": 1}),
        (np.int64(4), 4),
        (np.float32(0.5), 0.5),
    ],
)
def test_encode_plain(value, expected):
    assert selfcheck.encode(value) == expected


def test_tensors_and_arrays_roundtrip_exactly():
    for value in (torch.tensor([0.1, 0.2]), np.arange(6, dtype=np.int32).reshape(2, 3), torch.tensor(1.25)):
        back = decode(selfcheck.encode(value))
        assert isinstance(back, np.ndarray)
        assert np.array_equal(back, np.asarray(value))


def test_hostile_values_are_reduced_to_data():
    assert decode(selfcheck.encode(AlwaysEqual())) == Unsupported("AlwaysEqual")
    evil = selfcheck.encode(EvilFloat(3.0))
    assert evil == 3.0 and type(evil) is float
    sub = torch.tensor(2.0).as_subclass(EvilTensor)
    assert float(decode(selfcheck.encode(sub))) == 2.0
    assert decode(selfcheck.encode(...)) is Ellipsis
    assert selfcheck.encode(math.nan) == {selfcheck.UNSUPPORTED_KEY: "nan"}


def test_refuses_object_arrays_and_bad_payloads():
    assert selfcheck.UNSUPPORTED_KEY in selfcheck.encode(np.array([object()]))
    bad = {selfcheck.ARRAY_KEY: {"dtype": "|O", "shape": [1], "b64": ""}}
    assert isinstance(decode(bad), Unsupported)
    short = {selfcheck.ARRAY_KEY: {"dtype": "<f4", "shape": [4], "b64": "AAAA"}}
    assert isinstance(decode(short), Unsupported)


@pytest.mark.parametrize(
    "value", [4, 4.0, np.int64(4), torch.tensor(4), torch.tensor([4.0]), [4], np.array([4.0000001])]
)
def test_canonical_forms_agree(value):
    assert selfcheck.canonical(selfcheck.encode(value)) == "4.0"


def test_public_checks_hash_and_form():
    salt = "s"
    public = {
        "salt": salt,
        "questions": {
            "q": {"variable": "q", "form": {"type": "number"}, "hash": selfcheck.salted_hash(salt, "q", "4.0"), "hint": "h"},
            "v": {"variable": "v", "form": {"type": "sequence", "length": 3}},
            "d": {"variable": "d", "form": {"type": "dict", "keys": ["a"], "item_keys": ["x"]}},
        },
    }
    ok = selfcheck.run_public_checks(selfcheck.extract({"q": 4, "v": [1, 2, 3], "d": {"a": {"x": 1}}}, ["q", "v", "d"], []), public)
    assert [r["status"] for r in ok] == ["pass", "form ok", "form ok"]
    bad = selfcheck.run_public_checks(selfcheck.extract({"q": 5, "v": [1], "d": {"b": 1}}, ["q", "v", "d"], []), public)
    assert [r["status"] for r in bad] == ["fail", "fail", "fail"]
    blank = selfcheck.run_public_checks(selfcheck.extract({"q": ...}, ["q", "v", "d"], []), public)
    assert [r["status"] for r in blank] == ["missing", "missing", "missing"]


def test_canonical_form_is_as_strict_as_the_hidden_tolerance():
    """1.25004 fails the hidden check (tolerance 1e-6): the self-check must not pass it."""
    assert selfcheck.canonical(selfcheck.encode(1.25004)) != selfcheck.canonical(selfcheck.encode(1.25))
    assert selfcheck.canonical(selfcheck.encode(np.float32(1.25))) == selfcheck.canonical(selfcheck.encode(1.25))


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (4, 20),  # an index: 2 * 10 candidates
        (49999, 2 * 10**5),
        (True, 2),
        ([0, 0, 0, 1, 0, 0, 0, 0, 0, 0], 2**10),  # a one-hot vector
        (1.25, 2 * 10**7),  # a cost at 6 decimals
        (12345.5, 2 * 10**11),
        ([1.5, 2.5], (2 * 10**7) ** 2),
        ([], 1),
        ("text", None),
        ([1, "a"], None),
    ],
)
def test_answer_space(value, size):
    from grader.release import answer_space

    assert answer_space(value) == size


def test_validate_names_small_hashed_answers(spec):
    from grader.release import small_answer_spaces

    found = small_answer_spaces(spec)
    assert [f.split(" ")[0] for f in found] == ["first_nine_index", "target_for_3", "expected_cost"]


def test_function_form(tmp_path):
    rule = {"type": "function", "name": "f", "arguments": ["z"]}
    ok = {"f": lambda z: z}
    assert selfcheck._check_form(rule, None, ok) is None
    assert "no function named f" in selfcheck._check_form(rule, None, {})
    assert "no function named f" in selfcheck._check_form(rule, None, {"f": int})
    assert "arguments (z)" in selfcheck._check_form(rule, None, {"f": lambda a, b: a})
    public = {"questions": {"f": {"variable": "f", "form": rule}}}
    (result,) = selfcheck.run_public_checks({"values": {}}, public, ok)
    assert result["status"] == "form ok"
