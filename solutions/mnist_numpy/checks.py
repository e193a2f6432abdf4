"""Hidden checks of the numpy network assignment. Never released to students.

Each function question is judged the same way: the check builds its inputs here (fixed cases
and seeded random ones, the same for every submission), `ctx.call_function` runs the student's
function on them in a clean sandboxed process that only returns what the function returned
and the arguments as they were after the call, and the comparison with the reference happens
here, in the grader's process. The student's function never sees an expected value.

`backward` is compared with the gradients torch's autograd computes for the same weights and
inputs, and with central finite differences of the cost on one coordinate of every array.
Messages say what was expected and where it went wrong (which layer, which case), never the
expected numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from grader.checking import Answer, CheckContext
from grader.functions import CallResult, Case, compare
from grader.results import CheckResult
from grader.values import ValueProblem, as_scalar

NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")
WEIGHTS = ("W1", "W2", "W3")
BIASES = ("b1", "b2", "b3")


# --------------------------------------------------------------------------------- helpers


def _failed(names: Sequence[str], message: str) -> list[CheckResult]:
    return [CheckResult(name, False, message) for name in names]


def _problem(result: CallResult, expected: Any, params: dict[str, Any]) -> str | None:
    """None when the call returned `expected` (within the question's tolerance), else why not."""
    if not result.ok:
        return f"for {result.case.describe()} it raised {result.error}"
    if result.value is None:
        return f"for {result.case.describe()} it returned None: did you forget `return`?"
    problem = compare(
        result.value,
        expected,
        rtol=float(params.get("rtol", 1e-6)),
        atol=float(params.get("atol", 1e-9)),
    )
    return f"for {result.case.describe()}: {problem}" if problem else None


def _all_match(
    name: str,
    results: Sequence[CallResult],
    expected: Sequence[Any],
    params: dict[str, Any],
    right: str,
    hint: str = "",
) -> CheckResult:
    for result, want in zip(results, expected, strict=True):
        problem = _problem(result, want, params)
        if problem:
            return CheckResult(name, False, _sentence(problem) + (" " + hint if hint else ""))
    return CheckResult(name, True, right)


def _sentence(text: str) -> str:
    """`text` as a sentence: capitalised, ending with one full stop (or its own ? or .)."""
    text = text[0].upper() + text[1:] if text else text
    return text if text.endswith((".", "?")) else text + "."


def _unchanged(name: str, results: Sequence[CallResult], returned: bool, what: str) -> CheckResult:
    """Passed only by a function that did its job (`returned`) without changing its inputs."""
    if not returned:
        return CheckResult(name, False, f"Not checked: the function does not return {what} yet.")
    for result in results:
        changed = result.changed_arguments()
        if changed:
            return CheckResult(
                name,
                False,
                f"For {result.case.describe()} it changed its {', '.join(changed)} in place. "
                "Compute new arrays (`a - b`, not `a -= b`) and leave the arguments as they were.",
            )
    return CheckResult(name, True, "Leaves its arguments unchanged.")


def _is_param_dict(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == set(NAMES)


def _random_params(ref: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Weights as the lesson draws them, from a seed the student cannot guess."""
    return dict(ref.init_params(int(rng.integers(1_000, 1_000_000))))


def _batch(ref: Any, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n random 'images' (pixels in [0, 1)) and their one-hot targets, float64."""
    return rng.random((n, 784)), ref.one_hot(rng.integers(0, 10, size=n))


# --------------------------------------------------------------------------------- sigmoid

EXTREME = np.array([-1000.0, -745.0, -710.0, -50.0, 0.0, 50.0, 710.0, 745.0, 1000.0])


def sigmoid(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    ref = ctx.reference
    rng = np.random.default_rng(params["seed"])
    values = [
        Case((rng.normal(0.0, 4.0, size=shape),), label=f"an array of shape {shape}")
        for shape in [(7,), (4, 10), (3, 2, 5)]
    ]
    shapes = [
        Case((np.array(0.7),), label="a single number (an array of shape ())"),
        Case((rng.normal(size=(1, 16)),), label="one row, shape (1, 16)"),
        Case((np.zeros((0, 16)),), label="an empty batch, shape (0, 16)"),
    ]
    extreme = [Case((EXTREME.copy(),), label="very large and very small numbers (±50 to ±1000)")]
    results = ctx.call_function(answer, values + shapes + extreme)
    got_values, got_shapes, got_extreme = results[:3], results[3:6], results[6:]
    expect = [ref.sigmoid(c.args[0]) for c in values + shapes + extreme]
    return [
        _all_match(
            "values",
            got_values,
            expect[:3],
            params,
            "Right values on random arrays.",
            "The sigmoid is 1 / (1 + e^(-z)), for every element of z.",
        ),
        _all_match(
            "shape",
            got_shapes,
            expect[3:6],
            params,
            "Keeps the shape of its input, also for a single number and an empty batch.",
            "Work on the whole array with numpy (np.exp), without a loop or reshaping.",
        ),
        _all_match(
            "extreme_values",
            got_extreme,
            expect[6:],
            params,
            "Right for very large and very small numbers too.",
            "For a large |z| the answer is 0 or 1; a form like e^z / (1 + e^z) gives inf / inf "
            "= nan there. Use 1 / (1 + np.exp(-z)).",
        ),
    ]


# --------------------------------------------------------------------------------- one_hot


def one_hot(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    ref = ctx.reference
    rng = np.random.default_rng(params["seed"])
    values = [
        Case((rng.integers(0, 10, size=7),), label="7 random digits"),
        Case((rng.permutation(10),), label="the digits 0-9 in random order"),
        Case((rng.integers(0, 10, size=50),), label="50 random digits"),
    ]
    single = [Case((np.array([7]),), label="a single digit, np.array([7])")]
    empty = [Case((np.zeros(0, dtype=np.int64),), label="an empty array of labels")]
    results = ctx.call_function(answer, values + single + empty)
    expect = [ref.one_hot(c.args[0]) for c in values + single + empty]
    return [
        _all_match(
            "values",
            results[:3],
            expect[:3],
            {"rtol": 0, "atol": 0},
            "Right targets for random digits.",
            "Row i should be all zeros except a 1 in column labels[i]; columns are numbered "
            "from 0.",
        ),
        _all_match(
            "shape",
            results[3:4],
            expect[3:4],
            {"rtol": 0, "atol": 0},
            "One row of 10 for a single digit.",
            "The result always has one row per label and 10 columns, shape (n, 10).",
        ),
        _all_match(
            "empty_batch",
            results[4:5],
            expect[4:5],
            {"rtol": 0, "atol": 0},
            "An empty batch gives shape (0, 10).",
            "For no labels the result is an array of shape (0, 10): build it from len(labels).",
        ),
    ]


# --------------------------------------------------------------------------------- forward


def _forward_shapes(value: Any, n: int) -> str | None:
    expected = [(n, 784), (n, 16), (n, 16), (n, 10)]
    if not isinstance(value, list | tuple):
        return f"it returned {type(value).__name__}, not a list of the activations [x, a1, a2, a3]"
    if len(value) != 4:
        hint = " (the list starts with the input x itself)" if len(value) == 3 else ""
        return f"it returned {len(value)} activations, expected 4: [x, a1, a2, a3]{hint}"
    for k, (item, shape) in enumerate(zip(value, expected, strict=True)):
        got = tuple(np.shape(item)) if isinstance(item, np.ndarray | list) else None
        if got != shape:
            name = "x" if k == 0 else f"a{k}"
            return f"{name} has shape {got}, expected {shape}: one row per image"
    return None


def forward(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    ref = ctx.reference
    rng = np.random.default_rng(params["seed"])
    n = int(params.get("batch", 32))
    batch = Case((_random_params(ref, rng), rng.random((n, 784))), label=f"a batch of {n} images")
    single = Case((_random_params(ref, rng), rng.random((1, 784))), label="a single image (1, 784)")
    results = ctx.call_function(answer, [batch, single])
    checks = []
    first = results[0]
    if not first.ok or first.value is None:
        why = _problem(first, None, params) or "it returned nothing"
        return _failed(["shapes", "values", "single_sample", "inputs_unchanged"], _sentence(why))
    shape_problem = _forward_shapes(first.value, n)
    checks.append(
        CheckResult(
            "shapes",
            shape_problem is None,
            _sentence(shape_problem) if shape_problem else "Four activations of the right shapes.",
        )
    )
    expected = ref.forward(*batch.args)
    problem = _problem(first, expected, params)
    if problem and shape_problem is None:
        wrong = [
            f"a{k}"
            for k in range(1, 4)
            if compare(first.value[k], expected[k], rtol=params["rtol"], atol=params["atol"])
        ]
        problem = (
            f"With the same weights, {', '.join(wrong)} differ from σ(a W^T + b) computed layer "
            f"after layer (the first wrong one is {wrong[0]})"
            if wrong
            else problem
        )
    checks.append(
        CheckResult(
            "values",
            problem is None,
            "Right activations for a batch." if problem is None else _sentence(problem),
        )
    )
    checks.append(
        _all_match(
            "single_sample",
            results[1:],
            [ref.forward(*single.args)],
            params,
            "Works for a batch of one image.",
            "A single image is a batch of shape (1, 784): index with the batch axis, not a fixed 0.",
        )
    )
    checks.append(
        _unchanged("inputs_unchanged", results, shape_problem is None, "the four activations")
    )
    return checks


# ------------------------------------------------------------------------------------ cost


def _cost_hint(value: Any, expected: float, n: int) -> str:
    try:
        got = float(np.asarray(value, dtype=float).reshape(-1).sum())
    except (TypeError, ValueError):
        return ""
    if np.isclose(got, expected / (n * 10)):
        return "That is the mean of the squared differences; the cost adds them up."
    if np.isclose(got, expected / n):
        return "That is the mean over the images; the cost adds up every image too."
    if np.isclose(got, expected / 2):
        return "That is half of the sum: the lesson's cost has no factor 1/2 in front."
    if np.isclose(got, np.sqrt(expected)):
        return "No square root: the cost is the sum of the squared differences itself."
    return "Square every difference, then add up all of them, over every image and output."


def cost(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    ref = ctx.reference
    rng = np.random.default_rng(params["seed"])
    cases = []
    for n in (16, 1):
        target = ref.one_hot(rng.integers(0, 10, size=n))
        cases.append(Case((rng.random((n, 10)), target), label=f"a batch of {n}"))
    empty = Case((np.zeros((0, 10)), np.zeros((0, 10))), label="an empty batch, shape (0, 10)")
    results = ctx.call_function(answer, [*cases, empty])
    expected = [ref.cost(*c.args) for c in [*cases, empty]]
    checks = []
    problem = None
    for result, want, case in zip(results[:2], expected[:2], cases, strict=True):
        problem = _problem(result, want, params)
        if problem:
            if result.ok and result.value is not None:
                hint = _cost_hint(result.value, want, len(case.args[0]))
                problem = _sentence(problem) + (" " + hint if hint else "")
            break
    checks.append(
        CheckResult(
            "values", problem is None, _sentence(problem) if problem else "Right cost for a batch."
        )
    )
    first = results[0]
    returned = first.ok and first.value is not None
    number = isinstance(first.value, int | float | np.ndarray | np.generic) and not isinstance(
        first.value, bool
    )
    scalar = returned and number and np.ndim(first.value) == 0
    checks.append(
        CheckResult(
            "number",
            bool(scalar),
            "Returns one number for the whole batch."
            if scalar
            else (
                f"It returned something of shape {np.shape(first.value)}; the cost of a batch is "
                "one number (add up over every axis)."
                if returned and number
                else "It did not return a number."
                if returned
                else "Not checked: it returns nothing yet."
            ),
        )
    )
    checks.append(
        _all_match(
            "empty_batch",
            results[2:],
            expected[2:],
            params,
            "An empty batch costs 0.",
            "A sum over no images is 0.",
        )
    )
    return checks


# -------------------------------------------------------------------------------- backward


def _layers(names: Sequence[str]) -> str:
    layers = sorted({int(name[1:]) for name in names})
    return "layer" + ("s " if len(layers) > 1 else " ") + ", ".join(map(str, layers))


def _numbers(value: Any) -> bool:
    """An array (or nested list) of numbers, not of strings or objects."""
    try:
        return np.asarray(value).dtype.kind in "biuf"
    except (TypeError, ValueError):  # ragged lists
        return False


def _gradient_shapes(value: Any, p: dict[str, np.ndarray]) -> str | None:
    if not isinstance(value, dict):
        return f"it returned {type(value).__name__}, not a dict of gradients"
    missing = [name for name in NAMES if name not in value]
    if missing:
        return f"the keys {', '.join(missing)} are missing: return a gradient for every parameter"
    for name in NAMES:
        if not _numbers(value[name]):
            return f"grads[{name!r}] is not an array of numbers"
        got, want = np.shape(value[name]), p[name].shape
        if got != want:
            if got == want[::-1]:
                why = "it is transposed (W has one row per neuron of the layer above)"
            elif name.startswith("b") and len(got) == 2:
                why = "the cost adds up the images of the batch, so the bias gradient does too"
            else:
                why = "every gradient has the shape of its parameter"
            return f"grads[{name!r}] has shape {got}, expected {want}: {why}"
    return None


def _gradient_check(
    kind: str,
    results: Sequence[CallResult],
    expected: Sequence[dict[str, np.ndarray]],
    params: dict[str, Any],
) -> CheckResult:
    """The weight (kind "weights") or bias ("biases") gradients against autograd's."""
    names = WEIGHTS if kind == "weights" else BIASES
    word = "weight" if kind == "weights" else "bias"
    rtol, atol = float(params["rtol"]), float(params["atol"])
    for result, want in zip(results, expected, strict=True):
        got = result.value
        problems = {
            name: problem
            for name in names
            if (problem := compare(got.get(name), want[name], rtol=rtol, atol=atol))
        }
        if not problems:
            continue
        wrong = list(problems)
        weights_right = all(
            compare(got.get(name), want[name], rtol=rtol, atol=atol) is None for name in WEIGHTS
        )
        n = len(result.case.args[2])
        if not all(_numbers(got.get(k)) for k in wrong):
            hint = "Return numpy arrays of numbers."
        elif all(compare(got.get(k), want[k] / 2, rtol=rtol, atol=atol) is None for k in wrong):
            hint = "They are half the right ones: the derivative of (a - y)² is 2 (a - y)."
        elif any("shape" in problem for problem in problems.values()):
            hint = "Every gradient must have the shape of its parameter."
        elif kind == "biases" and weights_right:
            mean = all(
                compare(got.get(k), want[k] / n, rtol=rtol, atol=atol) is None for k in wrong
            )
            hint = (
                "The weight gradients are right, so your δ are: "
                + ("you took the mean over the batch, but " if mean else "")
                + "the gradient of b_k is the sum of the rows of δ_k, one row per image."
            )
        elif len(wrong) < len(names):
            right = [name for name in names if name not in wrong]
            hint = (
                f"Those of {_layers(right)} are right, those of {_layers(wrong)} are not: check "
                "how δ goes one layer down, δ_(k-1) = (δ_k W_k) a_(k-1) (1 - a_(k-1))."
            )
        else:
            hint = (
                "Check δ at the output, 2 (a3 - y) a3 (1 - a3): every layer multiplies by the "
                "sigmoid's derivative a (1 - a)."
            )
        first = wrong[0]
        return CheckResult(
            kind,
            False,
            f"For {result.case.describe()}, the {word} gradients {', '.join(wrong)} differ from "
            f"those autograd computes ({first}: {problems[first]}). {hint}",
        )
    return CheckResult(kind, True, f"The {word} gradients match torch autograd.")


def _finite_differences(
    ref: Any,
    cases: Sequence[Case],
    results: Sequence[CallResult],
    rng: np.random.Generator,
    params: dict[str, Any],
) -> CheckResult:
    eps, rtol, atol = float(params["fd_eps"]), float(params["fd_rtol"]), float(params["fd_atol"])
    for case, result in zip(cases, results, strict=True):
        p, activations, target = case.args
        for name in NAMES:
            index = tuple(int(rng.integers(0, size)) for size in p[name].shape)
            slope = ref.finite_difference(p, activations[0], target, name, index, eps)
            try:
                got = float(np.asarray(result.value[name], dtype=float)[index])
            except (TypeError, ValueError):  # not numbers, whatever their shape
                got = float("nan")
            if not abs(got - slope) <= atol + rtol * abs(slope):
                return CheckResult(
                    "finite_differences",
                    False,
                    f"For {case.describe()}, grads[{name!r}]{list(index)} is not the slope of "
                    "the cost along that parameter, (C(w + ε) - C(w - ε)) / 2ε: run the "
                    "notebook's numerical check.",
                )
    return CheckResult("finite_differences", True, "Agrees with finite differences of the cost.")


def backward(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    ref = ctx.reference
    rng = np.random.default_rng(params["seed"])
    cases = []
    for n in params.get("batches", [1, 8]):
        p = _random_params(ref, rng)
        x, target = _batch(ref, rng, int(n))
        label = "a single image" if n == 1 else f"a batch of {n} images"
        cases.append(Case((p, ref.forward(p, x), target), label=label))
    results = ctx.call_function(answer, cases)
    names = ["shapes", "weights", "biases", "finite_differences", "inputs_unchanged"]
    for result in results:
        if not result.ok or result.value is None:
            why = _problem(result, None, params) or "it returned nothing"
            return _failed(names, _sentence(why))
    shape_problem = next(
        (
            f"For {r.case.describe()}, {problem}."
            for r, c in zip(results, cases, strict=True)
            if (problem := _gradient_shapes(r.value, c.args[0]))
        ),
        None,
    )
    returned = all(isinstance(r.value, dict) for r in results)
    checks = [
        CheckResult(
            "shapes",
            shape_problem is None,
            shape_problem or "Every gradient has the shape of its parameter.",
        )
    ]
    if not returned:
        return checks + _failed(names[1:], "Not checked: backward does not return a dict.")
    expected = [ref.autograd_gradients(c.args[0], c.args[1][0], c.args[2]) for c in cases]
    checks.append(_gradient_check("weights", results, expected, params))
    checks.append(_gradient_check("biases", results, expected, params))
    if shape_problem is None:
        checks.append(_finite_differences(ref, cases, results, rng, params))
    else:
        checks.append(
            CheckResult(
                "finite_differences", False, "Not checked: some gradients have the wrong shape."
            )
        )
    checks.append(_unchanged("inputs_unchanged", results, returned, "a dict of gradients"))
    return checks


# -------------------------------------------------------------------------------- sgd_step


def sgd_step(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    ref = ctx.reference
    rng = np.random.default_rng(params["seed"])
    cases = []
    for lr in params.get("learning_rates", [0.05, 0.3]):
        p = _random_params(ref, rng)
        grads = {name: rng.normal(size=value.shape) for name, value in p.items()}
        cases.append(Case((p, grads, float(lr)), label=f"learning_rate={lr}"))
    results = ctx.call_function(answer, cases)
    expected = [ref.sgd_step(*c.args) for c in cases]
    values = _all_match(
        "values",
        results,
        expected,
        params,
        "Moves every parameter one step against its gradient.",
        "Every parameter becomes parameter - learning_rate * gradient.",
    )
    returned = all(r.ok and _is_param_dict(r.value) for r in results)
    return [values, _unchanged("inputs_unchanged", results, returned, "a dict of parameters")]


# -------------------------------------------------------------------------------- training


def _band(ctx: CheckContext) -> tuple[float, float]:
    band = ctx.calibration["valid_accuracy"]["band"]
    return float(band["low"]), float(band["high"])


def valid_accuracy(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    try:
        value = as_scalar(answer.value, "valid_accuracy")
    except ValueProblem as exc:
        return [CheckResult("value", False, str(exc))]
    low, high = _band(ctx)
    epochs = ctx.spec.grading.parameters.get("num_epochs")
    if low <= value <= high:
        return [CheckResult("value", True, f"{value:.4f}: a network that has learned.")]
    if 1.0 < value <= 100.0:
        message = "Give the accuracy as a fraction between 0 and 1, not a percentage."
    else:
        message = (
            f"In the grading run ({epochs} epochs) your notebook computed {value:.4f}; a working "
            f"network reaches at least {low:.3f}. If training went well, check how you count the "
            "right guesses (np.argmax over axis 1 of the output, compared with label_valid)."
        )
    return [CheckResult("value", False, message)]


def trained_params(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    value = answer.value
    expected_shapes = {name: a.shape for name, a in ctx.reference.init_params(0).items()}
    if not isinstance(value, dict) or set(value) != set(NAMES):
        return [
            CheckResult(
                "accuracy",
                False,
                "`params` is not a dict of the six arrays W1 ... b3 at the end of your notebook.",
            )
        ]
    if any(
        not isinstance(value[k], np.ndarray)
        or value[k].shape != s
        or value[k].dtype.kind not in "iuf"
        for k, s in expected_shapes.items()
    ):
        return [
            CheckResult(
                "accuracy",
                False,
                "The arrays in `params` do not have the shapes of the lesson's network.",
            )
        ]
    _, (x_valid, y_valid), _ = ctx.data()
    accuracy = float(ctx.reference.accuracy(value, x_valid, y_valid))
    low, _ = _band(ctx)
    epochs = ctx.spec.grading.parameters.get("num_epochs")
    if accuracy >= low:
        return [
            CheckResult(
                "accuracy",
                True,
                f"Your trained network reaches {accuracy:.4f} on the validation set.",
            )
        ]
    return [
        CheckResult(
            "accuracy",
            False,
            f"Trained by your notebook for {epochs} epochs (the grading setting), the network "
            f"reaches {accuracy:.4f} on the validation set; a working one reaches at least "
            f"{low:.3f}. Check your functions above and learning_rate and batch_size in the "
            "parameters cell.",
        )
    ]
