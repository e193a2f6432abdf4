"""Hidden checks of the MNIST assignment. Never released to students.

One function per auto-graded question, called by the grader outside the student's kernel with
the answer as plain data. Every message says what was expected in words a student
understands, without giving the answer away.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from grader.checking import Answer, CheckContext
from grader.results import CheckResult
from grader.values import ValueProblem, as_integer, as_scalar, as_vector

HERE = Path(__file__).resolve().parent
EXPERIMENTS = {
    "lr_decrease": ("learning_rate", -1),
    "lr_increase": ("learning_rate", +1),
    "batch_decrease": ("batch_size", -1),
    "batch_increase": ("batch_size", +1),
}


def normalise_fraction(value: float) -> tuple[float, bool]:
    """An accuracy given as a fraction, or as a percentage (returned as a fraction, True):
    this assignment's rule, since every accuracy it asks for is at most 1."""
    if 1.0 < value <= 100.0:
        return value / 100.0, True
    return value, False


def _problem(name: str, exc: ValueProblem) -> list[CheckResult]:
    return [CheckResult(name, False, str(exc))]


# ------------------------------------------------------------------------------- values


def first_nine_index(
    answer: Answer, ctx: CheckContext, params: dict[str, Any]
) -> list[CheckResult]:
    try:
        value = as_integer(answer.value, "first_nine_index")
    except ValueProblem as exc:
        return _problem("value", exc)
    (_, labels), _, _ = ctx.data()
    expected = ctx.reference.first_nine_index(labels)
    if value == expected:
        return [CheckResult("value", True, "Right: that is the first 9 in the training set.")]
    if 0 <= value < len(labels) and int(labels[value]) == 9:
        message = "label_train holds a 9 there, but there is an earlier one."
    elif 0 <= value < len(labels):
        message = (
            f"label_train[{value}] is a {int(labels[value])}, not a 9. Indices start at 0; "
            "print label_train[elem] for a few values of elem."
        )
    else:
        message = "That is not an index of label_train (0 to 49999)."
    return [CheckResult("value", False, message)]


def target_for_3(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    try:
        vector = as_vector(answer.value, "target_for_3")
    except ValueProblem as exc:
        return _problem("value", exc)
    expected = np.array(ctx.reference.one_hot(3), dtype=float)
    if vector.shape != expected.shape:
        return [
            CheckResult(
                "value", False, f"A target has one entry per digit: 10 numbers, not {vector.size}."
            )
        ]
    if np.array_equal(vector, expected):
        return [CheckResult("value", True, "Right: a one-hot target for 3.")]
    if np.count_nonzero(vector) == 1 and vector[3] not in (0, 1):
        message = (
            "The entry for the digit holds the digit itself; in a one-hot target every entry is "
            "0 except a single 1."
        )
    elif np.count_nonzero(vector) == 1 and vector[3] == 0:
        message = "The 1 is in the wrong place: entries are numbered from 0, one per digit 0-9."
    else:
        message = "A one-hot target is all zeros except a single 1, at the position of the digit."
    return [CheckResult("value", False, message)]


def expected_cost(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    try:
        value = as_scalar(answer.value, "expected_cost")
    except ValueProblem as exc:
        return _problem("value", exc)
    x = [0, 0.5, 1, 0, 0, 0, 0, 0, 0, 0]
    t = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    expected = ctx.reference.expected_cost(x, t)
    if abs(value - expected) <= params.get("tolerance", 1e-6):
        return [CheckResult("value", True, "Right.")]
    if abs(value - expected / len(x)) <= 1e-6:
        message = "That is the mean of the squared differences; cost_func adds them up (sum)."
    elif abs(value - sum(abs(a - b) for a, b in zip(x, t, strict=True))) <= 1e-6:
        message = "The differences must be squared before they are added."
    else:
        message = (
            "Square the difference of every one of the 10 entries, then add the squares up "
            "(reduction='sum')."
        )
    return [CheckResult("value", False, message)]


def _in_band(value: float, band: dict[str, float]) -> bool:
    return float(band["low"]) <= value <= float(band["high"])


def max_stable_learning_rate(
    answer: Answer, ctx: CheckContext, params: dict[str, Any]
) -> list[CheckResult]:
    try:
        value = as_scalar(answer.value, "max_stable_learning_rate")
    except ValueProblem as exc:
        return _problem("value", exc)
    band = ctx.calibration["lr_sweep"]["max_stable_learning_rate"]["band"]
    if _in_band(value, band):
        return [CheckResult("value", True, "Consistent with where training stops learning.")]
    if value < float(band["low"]):
        message = (
            "Training still works well at clearly larger learning rates; keep increasing it "
            "(batch size 100, 10 epochs) until the cost stops going down."
        )
    else:
        message = (
            "At that learning rate the training no longer learns: the cost stays high and the "
            "accuracy stays near chance. Look for the largest rate that still lowers the cost."
        )
    return [CheckResult("value", False, message)]


def random_model_accuracy(
    answer: Answer, ctx: CheckContext, params: dict[str, Any]
) -> list[CheckResult]:
    try:
        value, percent = normalise_fraction(as_scalar(answer.value, "random_model_accuracy"))
    except ValueProblem as exc:
        return _problem("value", exc)
    note = "Read as a percentage; give accuracies as fractions between 0 and 1." if percent else ""
    band = ctx.calibration["random_accuracy"]["band"]
    if _in_band(value, band):
        return [CheckResult("value", True, "Right: about chance level.", note)]
    return [
        CheckResult(
            "value",
            False,
            "An untrained model is no better than guessing: think about how often a guess among "
            "the possible digits is right.",
            note,
        )
    ]


def claimed_accuracy(
    answer: Answer, ctx: CheckContext, params: dict[str, Any]
) -> list[CheckResult]:
    try:
        value, percent = normalise_fraction(as_scalar(answer.value, "claimed_accuracy"))
    except ValueProblem as exc:
        return _problem("value", exc)
    note = "Read as a percentage; give accuracies as fractions between 0 and 1." if percent else ""
    claim = ctx.calibration["long_run"]["claimed_accuracy"]
    tolerance = float(params.get("tolerance", 0.005))
    low, high = float(claim["valid_low"]) - tolerance, float(claim["valid_high"]) + tolerance
    if low <= value <= high:
        return [CheckResult("value", True, "A validation accuracy the model really reaches.", note)]
    if value > high and value <= float(claim["train_high"]) + tolerance:
        message = (
            "That is higher than the model reaches on the validation set: it looks like the "
            "accuracy on the training set, which the model has already seen. Claim the accuracy "
            "on data it did not train on."
        )
    elif value > high:
        message = "The model does not reach that accuracy on data it has not seen."
    else:
        message = (
            "That is lower than the validation accuracy the model reaches after training; use "
            "the validation accuracy at the end of your run."
        )
    return [CheckResult("value", False, message, note)]


# ----------------------------------------------------------------------- experiments


def _experiment(key: str, entry: Any, ctx: CheckContext, params: dict[str, Any]) -> CheckResult:
    field, direction = EXPERIMENTS[key]
    base = {"learning_rate": params["base_learning_rate"], "batch_size": params["base_batch_size"]}
    if not isinstance(entry, dict):
        return CheckResult(key, False, f"experiments[{key!r}] should be a dict.")
    try:
        lr = as_scalar(entry.get("learning_rate"), f"experiments[{key!r}]['learning_rate']")
        batch = as_integer(entry.get("batch_size"), f"experiments[{key!r}]['batch_size']")
        cost = as_scalar(entry.get("final_cost"), f"experiments[{key!r}]['final_cost']")
    except ValueProblem as exc:
        return CheckResult(key, False, str(exc))
    values = {"learning_rate": lr, "batch_size": batch}
    other = "batch_size" if field == "learning_rate" else "learning_rate"
    if values[other] != base[other]:
        return CheckResult(
            key, False, f"Change only {field} in this experiment; keep {other} at {base[other]}."
        )
    moved = values[field] - base[field]
    if moved * direction <= 0:
        word = "decrease" if direction < 0 else "increase"
        return CheckResult(key, False, f"This experiment should {word} {field} from {base[field]}.")
    if lr <= 0 or batch < 1:
        return CheckResult(key, False, "Learning rates and batch sizes must be positive.")
    if not str(entry.get("observation", "")).strip():
        observation_note = "Add an observation in words, too."
    else:
        observation_note = ""
    batch = min(batch, int(params["max_reference_batch"]))  # one batch per epoch from here on
    if batch < params["min_reference_batch"]:
        # Too slow to reproduce: only a cost an MNIST run can end at is accepted.
        if 0 < cost <= float(params.get("max_plausible_cost", 1.0)):
            return CheckResult(
                key,
                True,
                "Moved the right way.",
                "The final cost was not reproduced for this small batch size.",
            )
        return CheckResult(
            key, False, f"A final cost of {cost:g} is not one this training can end at."
        )
    epochs = int(params["epochs"])
    finals = []
    for seed in params["seeds"]:
        run = ctx.cached(
            "experiment",
            {"learning_rate": lr, "batch_size": batch, "epochs": epochs, "seed": seed},
            lambda seed=seed: ctx.reference.run_experiment(lr, batch, epochs, seed, ctx.data()),
        )
        finals.append(float(run["costs"][-1]))
    rel, absolute = float(params["cost_rel_tolerance"]), float(params["cost_abs_tolerance"])
    low, high = min(finals) * (1 - rel) - absolute, max(finals) * (1 + rel) + absolute
    if low <= cost <= high:
        return CheckResult(
            key, True, "Moved the right way, with a plausible final cost.", observation_note
        )
    return CheckResult(
        key,
        False,
        f"Moved the right way, but a final cost of {cost:g} after {epochs} epochs does not match "
        "what this setting produces; report the cost printed after the last epoch of your run.",
        observation_note,
    )


def experiments(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    value = answer.value
    if value is Ellipsis or value is None:
        return [CheckResult(k, False, "experiments is not answered yet.") for k in EXPERIMENTS]
    if not isinstance(value, dict):
        return [
            CheckResult(k, False, "experiments should be a dict of four entries.")
            for k in EXPERIMENTS
        ]
    results = []
    for key in EXPERIMENTS:
        if key not in value:
            results.append(CheckResult(key, False, f"experiments has no entry {key!r}."))
        else:
            results.append(_experiment(key, value[key], ctx, params))
    return results


# ------------------------------------------------------------------------------ models


def _reference_accuracy(ctx: CheckContext, hidden_layers: int, weights: list[np.ndarray]) -> float:
    import torch

    model = ctx.reference.MLP(hidden_layers=hidden_layers)
    params = list(model.parameters())
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(torch.as_tensor(np.asarray(w, dtype=np.float32)))
    _, (x_valid, y_valid), _ = ctx.data()
    return float(ctx.reference.accuracy(model, x_valid, y_valid))


def _shapes(hidden_layers: int, width: int) -> list[list[int]]:
    return _shapes_of([784] + [width] * hidden_layers + [10])


def _chain(shapes: list[list[int]]) -> list[int] | None:
    """The layer sizes [784, ..., 10] when the parameters are, in order, the weights and
    biases of a chain of fully connected layers from the input to the output; else None."""
    if len(shapes) < 2 or len(shapes) % 2:
        return None
    sizes = [784]
    for weight, bias in zip(shapes[::2], shapes[1::2], strict=True):
        if len(weight) != 2 or weight[1] != sizes[-1] or bias != [weight[0]]:
            return None
        sizes.append(weight[0])
    return sizes if sizes[-1] == 10 else None


def _network(sizes: list[int], weights: list[np.ndarray]) -> Any:
    """The lesson's network for any layer sizes: a sigmoid after every layer."""
    import torch

    layers: list[torch.nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.Sigmoid()]
    model = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights, strict=True):
            p.copy_(torch.as_tensor(np.asarray(w, dtype=np.float32)))
    return model


def _arrays(value: Any, shapes: list[list[int]]) -> list[np.ndarray] | None:
    """The student's reported weights, if they are arrays of the reported shapes."""
    if not isinstance(value, list) or len(value) != len(shapes):
        return None
    if not all(isinstance(v, np.ndarray) and list(v.shape) == s for v, s in zip(value, shapes, strict=True)):
        return None
    return value


def _model3_run(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> dict[str, Any]:
    """Build, run and train the student's class in the clean process: plain data back."""
    from grader.errors import ExecutionError

    hidden, width = int(params["hidden_layers"]), int(params["width"])
    reference = ctx.reference.make_model(hidden_layers=hidden, width=width, seed=1234)
    _, (x_valid, _), _ = ctx.data()
    grading = ctx.spec.grading.parameters
    payload = {
        "class_name": answer.question.variable,
        "seed": ctx.spec.grading.seed,
        "weights": [p.detach().numpy().copy() for p in reference.parameters()],
        "images": np.ascontiguousarray(x_valid[: int(params["images"])]),
        "data_path": ctx.spec.dataset.stage_as if ctx.spec.dataset else "",
        "train": {
            "epochs": int(grading.get("num_epochs", 3)),
            "batch_size": int(params.get("batch_size", 100)),
            "learning_rate": float(params.get("learning_rate", 0.05)),
        },
    }
    try:
        result = ctx.run_task(answer, HERE / "class_task.py", payload, timeout=params.get("timeout"))
    except ExecutionError as exc:
        return {"error": exc.message}
    return result if isinstance(result, dict) else {"error": "the class produced no result"}


def _valid_shapes(value: Any) -> list[list[int]] | None:
    if isinstance(value, list) and all(
        isinstance(s, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in s)
        for s in value
    ):
        return value
    return None


def NN_Model3(answer: Answer, ctx: CheckContext, params: dict[str, Any]) -> list[CheckResult]:
    """Three sub-checks, each judged in this process from the data the clean process
    returned: the layer shapes; the same outputs as the reference network with the same
    weights; and "trains": a network of three hidden layers (of any width) that computes the
    lesson's function, trained by the lesson's loop, reaches the calibrated accuracy when its
    trained weights are evaluated here."""
    if not answer.source:
        return [
            CheckResult(name, False, "No class NN_Model3 was found in your notebook.")
            for name in ("shapes", "same_outputs", "trains")
        ]
    hidden, width = int(params["hidden_layers"]), int(params["width"])
    expected_shapes = _shapes(hidden, width)
    result = _model3_run(answer, ctx, params)
    error = result.get("error")
    shapes = _valid_shapes(result.get("shapes"))
    if shapes is None:
        reason = error or "it could not be built"
        return [
            CheckResult("shapes", False, f"Building NN_Model3() failed: {reason}"),
            CheckResult("same_outputs", False, "Not checked: the model could not be built."),
            CheckResult("trains", False, "Not checked: the model could not be built."),
        ]
    sizes = _chain(shapes)
    initial = _arrays(result.get("initial"), shapes)
    outputs = result.get("outputs")
    computes = False  # the lesson's function of its own layer sizes, on its reported weights
    if sizes is not None and initial is not None and isinstance(outputs, np.ndarray):
        images = np.ascontiguousarray(ctx.data()[1][0][: int(params["images"])])
        import torch

        with torch.no_grad():
            expected = _network(sizes, initial)(torch.as_tensor(images)).numpy()
        if outputs.shape == expected.shape:
            diff = float(np.max(np.abs(outputs.astype(np.float64) - expected), initial=0.0))
            computes = diff <= float(params["output_tolerance"])
    return [
        _shapes_check(shapes, expected_shapes, width),
        _outputs_check(shapes, expected_shapes, computes, error, outputs),
        _trains_check(ctx, hidden, sizes, computes, result, error),
    ]


def _shapes_check(shapes: list[list[int]], expected: list[list[int]], width: int) -> CheckResult:
    n_params = sum(int(np.prod(s)) for s in shapes)
    n_expected = sum(int(np.prod(s)) for s in expected)
    if shapes == expected:
        return CheckResult("shapes", True, f"Layer shapes are right ({n_params:,} parameters).")
    if sorted(shapes) == sorted(expected):
        return CheckResult(
            "shapes",
            False,
            f"The layers have the right sizes ({n_params:,} parameters) but are created in "
            "another order (a subclass of NN_Model adds its new layer after the output "
            "layer). Create them in the order data flows: hidden1, hidden2, hidden3, output.",
        )
    return CheckResult(
        "shapes",
        False,
        f"The model's parameters have the shapes {shapes} ({n_params:,} numbers); 784 "
        f"inputs, three hidden layers of {width} and 10 outputs need {n_expected:,}. "
        "Check every nn.Linear's sizes, in order.",
    )


def _outputs_check(
    shapes: list[list[int]], expected: list[list[int]], computes: bool, error: Any, outputs: Any
) -> CheckResult:
    if shapes == expected and computes:
        return CheckResult(
            "same_outputs", True, "Computes the same function as the lesson's model."
        )
    if shapes != expected:
        reorder = sorted(shapes) == sorted(expected)
        why = "the layers are in another order" if reorder else "the layer shapes differ"
        return CheckResult("same_outputs", False, f"Not checked: {why}.")
    detail = f" (it failed: {error})" if error and outputs is None else ""
    return CheckResult(
        "same_outputs",
        False,
        "With the same weights, your model's outputs differ from a 784-16-16-16-10 network "
        "with the activation after every layer, as in NN_Model" + detail + ".",
    )


def _trains_check(
    ctx: CheckContext,
    hidden: int,
    sizes: list[int] | None,
    computes: bool,
    result: dict[str, Any],
    error: Any,
) -> CheckResult:
    if sizes is None:
        return CheckResult("trains", False, "Not checked: the layers are not a chain from input to output.")
    if len(sizes) - 2 != hidden:
        layers = len(sizes) - 2
        word = "layer" if layers == 1 else "layers"
        return CheckResult(
            "trains", False, f"Not checked: the model has {layers} hidden {word}, not {hidden}."
        )
    if not computes:
        # The trained weights are judged in the lesson's network, outside the student's
        # process; that is only sound for a model that computes the same function.
        return CheckResult("trains", False, "Not checked: the model computes another function.")
    trained = _arrays(result.get("trained"), [list(s) for s in _shapes_of(sizes)])
    if trained is None:
        return CheckResult("trains", False, f"Training it failed: {error or 'no result'}")
    _, (x_valid, y_valid), _ = ctx.data()
    accuracy = float(ctx.reference.accuracy(_network(sizes, trained), x_valid, y_valid))
    threshold = float(ctx.calibration["grading"]["model3_threshold"])
    epochs = int(ctx.spec.grading.parameters.get("num_epochs", 3))
    if accuracy >= threshold:
        return CheckResult(
            "trains", True, f"Trains: {accuracy:.3f} validation accuracy after {epochs} epochs."
        )
    return CheckResult(
        "trains",
        False,
        f"After {epochs} epochs of training it reaches {accuracy:.3f} validation accuracy; "
        f"a correct three-hidden-layer model reaches at least {threshold:.3f}.",
    )


def _shapes_of(sizes: list[int]) -> list[list[int]]:
    shapes: list[list[int]] = []
    for n_in, n_out in itertools.pairwise(sizes):
        shapes += [[n_out, n_in], [n_out]]
    return shapes


def pipeline_accuracy(
    answer: Answer, ctx: CheckContext, params: dict[str, Any]
) -> list[CheckResult]:
    value = answer.value
    if not isinstance(value, dict) or not isinstance(value.get("state"), dict):
        return [
            CheckResult(
                "accuracy",
                False,
                "No trained model named `model` was found after your notebook ran.",
            )
        ]
    state = value["state"]
    arrays = list(state.values())
    expected = _shapes(2, 16)
    if (
        not all(isinstance(a, np.ndarray) for a in arrays)
        or [list(a.shape) for a in arrays] != expected
    ):
        return [
            CheckResult(
                "accuracy",
                False,
                "`model` is not the lesson's NN_Model at the end of the notebook.",
            )
        ]
    accuracy = _reference_accuracy(ctx, 2, arrays)
    threshold = float(ctx.calibration["grading"]["pipeline_threshold"])
    epochs = ctx.spec.grading.parameters.get("num_epochs")
    if accuracy >= threshold:
        return [
            CheckResult(
                "accuracy", True, f"Your trained model reaches {accuracy:.3f} validation accuracy."
            )
        ]
    return [
        CheckResult(
            "accuracy",
            False,
            f"Trained by your notebook for {epochs} epochs (the grading setting), the model reaches "
            f"{accuracy:.3f} validation accuracy; a working setup reaches at least {threshold:.3f}. "
            "Check your learning_rate and batch_size in the parameters cell.",
        )
    ]


# ------------------------------------------------------------------ feedback


def training_curve(ctx: CheckContext, parameters: dict[str, Any]) -> list[float] | None:
    """The reference's cost per epoch at the student's hyperparameters ([feedback.curve]).

    None when the hyperparameters are not something the reference can be trained with
    in reasonable time (the plot then shows the student's curve alone)."""
    try:
        lr = as_scalar(parameters.get("learning_rate"), "learning_rate")
        batch = as_integer(parameters.get("batch_size"), "batch_size")
        epochs = as_integer(parameters.get("num_epochs"), "num_epochs")
    except ValueProblem:
        return None
    if not (0 < lr <= 100 and 10 <= batch <= 50_000 and 1 <= epochs <= 20):
        return None
    seed = ctx.spec.grading.seed
    params = {"learning_rate": lr, "batch_size": batch, "epochs": epochs, "seed": seed}
    run = ctx.cached(
        "training_curve",
        params,
        lambda: ctx.reference.run_experiment(lr, batch, epochs, seed, ctx.data()),
    )
    return [float(c) for c in run["costs"]]
