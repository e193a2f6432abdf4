"""Function questions: cases the check chooses, the student's results, comparison rules.

A check builds :class:`Case` objects (fixed ones, and seeded random ones with
:func:`seeded_cases`), calls ``ctx.call_function(answer, cases)`` and gets one
:class:`CallResult` per case: what the student's function returned (as plain data: numbers,
strings, lists, dicts, numpy arrays; tuples come back as lists, tensors as arrays), the error
text if it raised, and the arguments as they were after the call. It compares them with the
reference's results, computed in the grader's process, using :func:`compare`.

The comparison rules are pure functions, tested with tables of cases (tests/test_functions.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .checking import Unsupported


@dataclass(frozen=True)
class Case:
    """The arguments of one call (numbers, strings, lists, dicts, numpy arrays)."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # for messages: "an empty batch", "a single sample", ...

    def describe(self) -> str:
        if self.label:
            return self.label
        parts = [_describe_value(a) for a in self.args]
        parts += [f"{k}={_describe_value(v)}" for k, v in self.kwargs.items()]
        return f"({', '.join(parts)})"


@dataclass(frozen=True)
class CallResult:
    """One call of the student's function in the clean process."""

    case: Case
    value: Any = None
    error: str | None = None  # the exception it raised, or why no result came back
    args: tuple[Any, ...] = ()  # the arguments after the call
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def changed_arguments(self) -> list[str]:
        """Arguments the call changed in place ("argument 1", "y"); [] when it changed none."""
        if not self.ok and not self.args:
            return []
        changed = [
            f"argument {i + 1}"
            for i, (before, after) in enumerate(zip(self.case.args, self.args, strict=False))
            if compare(after, before, rtol=0.0, atol=0.0) is not None
        ]
        changed += [
            k
            for k, before in self.case.kwargs.items()
            if k in self.kwargs and compare(self.kwargs[k], before, rtol=0.0, atol=0.0) is not None
        ]
        return changed


def _describe_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {tuple(value.shape)}"
    if isinstance(value, list | tuple):
        return f"list of {len(value)}"
    if isinstance(value, dict):
        return "dict"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def seeded_cases(seed: int, count: int, make: Callable[[np.random.Generator], Case]) -> list[Case]:
    """`count` random cases, the same for every submission: `make(rng)` builds one case from a
    numpy Generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    return [make(rng) for _ in range(count)]


# ------------------------------------------------------------------------- comparison


def _as_array(value: Any) -> np.ndarray | None:
    """Numbers, nested lists of numbers and arrays as a float array; None for anything else."""
    if isinstance(value, bool | int | float | np.ndarray | np.generic):
        array = np.asarray(value)
    elif isinstance(value, list | tuple):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            return None
    else:
        return None
    if array.dtype.kind not in "biuf":
        return None
    return array.astype(np.float64)


def compare(actual: Any, expected: Any, *, rtol: float = 1e-7, atol: float = 1e-9) -> str | None:
    """None when `actual` matches `expected`, else what differs, in words a student reads.

    Numbers and arrays match when they have the same shape and every element satisfies
    ``|actual - expected| <= atol + rtol * |expected|`` (NaN only matches NaN). A list, tuple
    or array of numbers is compared by its values and shape whatever the container. Dicts must
    have the same keys, lists of non-numbers the same length; both are compared item by item.
    Strings, booleans and None must be equal.
    """
    actual = _restore_floats(actual)
    if isinstance(actual, Unsupported):
        return f"it returned {actual.what}, which cannot be compared"
    if expected is None or isinstance(expected, str):
        if actual == expected and type(actual) is type(expected):
            return None
        return f"got {_describe_value(actual)}, which is not the expected value"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"expected a dict, got {_describe_value(actual)}"
        # keys as the codec sends them (JSON keys are text: the reference's 0 is the student's "0")
        want_keys = {_key(k): k for k in expected}
        got_keys = {_key(k): k for k in actual}
        if set(got_keys) != set(want_keys):
            return f"expected the keys {sorted(want_keys)}, got {sorted(got_keys)}"
        for name, key in want_keys.items():
            problem = compare(actual[got_keys[name]], expected[key], rtol=rtol, atol=atol)
            if problem:
                return f"[{key!r}]: {problem}"
        return None
    want = _as_array(expected)
    if want is None:
        if not isinstance(expected, list | tuple):
            return None if actual == expected else "not the expected value"
        if not isinstance(actual, list | tuple):
            return f"expected a list of {len(expected)}, got {_describe_value(actual)}"
        if len(actual) != len(expected):
            return f"expected {len(expected)} items, got {len(actual)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            problem = compare(a, e, rtol=rtol, atol=atol)
            if problem:
                return f"item {i}: {problem}"
        return None
    got = _as_array(actual)
    if got is None:
        return f"expected numbers, got {_describe_value(actual)}"
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    bad = ~close(got, want, rtol=rtol, atol=atol)
    if not bad.any():
        return None
    count = int(bad.sum())
    with np.errstate(invalid="ignore"):
        error = np.abs(got - want)
    worst = float(np.nanmax(np.where(bad, error, np.nan))) if np.isfinite(error[bad]).any() else float("nan")
    where = "" if got.ndim == 0 else f" ({count} of {got.size} values)"
    return f"values differ{where}: the largest difference is {worst:.3g}"


_NON_FINITE = ("nan", "inf", "-inf")  # how the codec sends a float that JSON cannot hold


def _restore_floats(value: Any) -> Any:
    """A non-finite float comes back from the clean process as Unsupported("nan"): a float
    again, so that NaN matches NaN and an infinity the same infinity, in lists too."""
    if isinstance(value, Unsupported) and value.what in _NON_FINITE:
        return float(value.what)
    if isinstance(value, list) and any(isinstance(v, Unsupported | list) for v in value):
        return [_restore_floats(v) for v in value]
    return value


def _key(key: Any) -> str:
    """A dict key as the codec (grader/selfcheck.py `encode`) writes it."""
    return str(key) if isinstance(key, str | int | float) else repr(key)


def close(actual: np.ndarray, expected: np.ndarray, *, rtol: float, atol: float) -> np.ndarray:
    """Elementwise: |actual - expected| <= atol + rtol * |expected|; NaN matches only NaN,
    an infinity only the same infinity."""
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.abs(actual - expected) <= atol + rtol * np.abs(expected)
    both_nan = np.isnan(actual) & np.isnan(expected)
    same_inf = np.isinf(actual) & np.isinf(expected) & (np.sign(actual) == np.sign(expected))
    return np.asarray(ok | both_nan | same_inf)


def first_mismatch(
    results: Sequence[CallResult],
    expected: Sequence[Any],
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
) -> str | None:
    """None when every call returned its expected value, else a message naming the first case
    that did not (its error, or what differs)."""
    for result, want in zip(results, expected, strict=True):
        if not result.ok:
            return f"for {result.case.describe()} it raised {result.error}"
        problem = compare(result.value, want, rtol=rtol, atol=atol)
        if problem:
            return f"for {result.case.describe()}: {problem}"
    return None
