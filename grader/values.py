"""Reading students' answer values, whatever form they came in (pure functions).

Answers arrive decoded from plain data: Python numbers, lists, dicts, numpy arrays (tensors
become numpy arrays on the way out of the kernel). These helpers accept the forms a student
may reasonably use and refuse the rest with a reason.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class ValueProblem(ValueError):
    """The answer has the wrong form; the message is written for the student."""


def as_scalar(value: Any, what: str = "the answer") -> float:
    """A single finite number from an int, float, numpy scalar or one-element array/tensor."""
    if value is Ellipsis or value is None:
        raise ValueProblem(f"{what} is not answered yet (it is still `...`)")
    if isinstance(value, bool):
        raise ValueProblem(f"{what} should be a number, not True/False")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, np.ndarray) and value.size == 1 and value.ndim <= 1:
        if value.dtype.kind not in "iuf":
            raise ValueProblem(f"{what} should be a number")
        number = float(value.reshape(-1)[0])
    elif isinstance(value, list) and len(value) == 1 and not isinstance(value[0], (list, dict)):
        return as_scalar(value[0], what)
    else:
        raise ValueProblem(f"{what} should be a single number, not {describe(value)}")
    if not math.isfinite(number):
        raise ValueProblem(f"{what} should be a finite number, not {number}")
    return number


def as_vector(value: Any, what: str = "the answer") -> np.ndarray:
    """A 1-D float vector from a list/tuple/array/tensor of ints, floats or bools."""
    if value is Ellipsis or value is None:
        raise ValueProblem(f"{what} is not answered yet (it is still `...`)")
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueProblem(f"{what} should hold numbers")
        array = value.astype(float)
    elif isinstance(value, list):
        try:
            array = np.array(
                [float(as_scalar(v, what)) if not isinstance(v, bool) else float(v) for v in value]
            )
        except ValueProblem:
            raise ValueProblem(f"{what} should be a flat list of numbers") from None
    else:
        raise ValueProblem(f"{what} should be a list, array or tensor, not {describe(value)}")
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ValueProblem(f"{what} should be one row of numbers, not shape {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueProblem(f"{what} holds a value that is not a finite number")
    return array


def as_integer(value: Any, what: str = "the answer") -> int:
    number = as_scalar(value, what)
    if number != int(number):
        raise ValueProblem(f"{what} should be a whole number, not {number}")
    return int(number)


def describe(value: Any) -> str:
    """A short, safe description of a value's form (never its content)."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {list(value.shape)}"
    if isinstance(value, dict):
        return "a dict"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, str):
        return "a string"
    name = type(value).__name__
    if name == "Unsupported":
        return f"a {getattr(value, 'what', 'value')} (which cannot be graded)"
    return f"a {name}"
