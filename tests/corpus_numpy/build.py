"""The graded corpus of `mnist_numpy`: common mistakes in the six functions, with exact points.

Each case is the solution with one mistake a student makes (or a blank template), and its
expected points per auto-graded question in `expected.json`, decided by hand from what the
mistake does: which sub-checks of the function it breaks (their weights in assignment.toml),
and whether the network the notebook trains with it still reaches the calibrated band. For
a mistake that changes training the outcome was measured with the reference's loop and the
mistaken function (five epochs on 10,000 images, as graded): it is far from the band's edge
(0.854) in every case. The samples (tests/samples/mnist_numpy) are whole submissions as
students write them, several mistakes and written answers each.

    python tests/corpus_numpy/build.py --update     # after the source notebook changes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat import NotebookNode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from grader.authoring import load_source, make_template, notebook_text  # noqa: E402
from grader.cells import ANSWER, MANUAL, PARAMETERS, cell_role  # noqa: E402
from grader.spec import load_spec  # noqa: E402

SPEC = load_spec(ROOT / "solutions" / "mnist_numpy")
SAMPLES_DIR = ROOT / "tests" / "samples" / "mnist_numpy"
FULL = {
    "sigmoid": 2,
    "one_hot": 2,
    "forward": 3,
    "cost": 2,
    "backward": 6,
    "sgd_step": 2,
    "valid_accuracy": 1,
    "trained_params": 2,
}
NOT_TRAINED = {"valid_accuracy": 0, "trained_params": 0}


def solved(source: str) -> str:
    """What a student who answered correctly would have typed: the solution, no markers."""
    out, skip = [], False
    for line in source.split("\n"):
        if re.match(r"^\s*#\s*BEGIN STUB\s*$", line):
            skip = True
            continue
        if re.match(r"^\s*#\s*END STUB\s*$", line):
            skip = False
            continue
        if skip or re.match(r"^\s*(#|<!--)\s*(BEGIN|END) SOLUTION\s*(-->)?\s*$", line):
            continue
        out.append(re.sub(r"\s*#\s*SOLUTION\s*$", "", line))
    return "\n".join(out).strip("\n")


def solution_submission() -> NotebookNode:
    """The template with every answer filled in as a student would (correctly)."""
    source = {c["id"]: c for c in load_source(SPEC).cells}
    nb = make_template(SPEC)
    for cell in nb.cells:
        if cell_role(cell).role in (ANSWER, MANUAL, PARAMETERS):
            cell.source = solved(source[cell["id"]].source)
    return nb


def answer_cell(nb: NotebookNode, qid: str) -> NotebookNode:
    for cell in nb.cells:
        if cell_role(cell).question == qid:
            return cell
    raise KeyError(qid)


def replace_in(nb: NotebookNode, qid: str, old: str, new: str) -> None:
    cell = answer_cell(nb, qid)
    assert old in cell.source, (qid, old)
    cell.source = cell.source.replace(old, new)


def new_cell(source: str) -> NotebookNode:
    """A student's new code cell, with an id derived from its text (the build is deterministic)."""
    cell = nbformat.v4.new_code_cell(source)
    cell["id"] = "s" + hashlib.sha256(source.encode()).hexdigest()[:11]
    return cell


Case = Callable[[NotebookNode], None]
CASES: dict[str, tuple[Case, dict[str, float]]] = {}


def case(name: str, **points: float) -> Callable[[Case], Case]:
    def register(func: Case) -> Case:
        CASES[name] = (func, {**FULL, **points})
        return func

    return register


@case("solution")
def _solution(nb: NotebookNode) -> None:
    pass


@case("blank_template", **{qid: 0 for qid in FULL})
def _blank(nb: NotebookNode) -> None:
    nb.cells[:] = make_template(SPEC).cells


# sigmoid: values 2, shape 1, extreme_values 1 (2 points)
@case("sigmoid_nan_for_large_z", sigmoid=1.5)
def _sigmoid_nan(nb: NotebookNode) -> None:
    replace_in(nb, "sigmoid", "return 1 / (1 + np.exp(-z))", "return np.exp(z) / (1 + np.exp(z))")


# one_hot: values 2, shape 1, empty_batch 1 (2 points). Every row gets every label's column
# set: the single-digit and empty cases are still right; training on such targets learns
# nothing (0.0991 measured).
@case("one_hot_whole_columns", one_hot=1, **NOT_TRAINED)
def _one_hot_columns(nb: NotebookNode) -> None:
    replace_in(
        nb, "one_hot", "targets[np.arange(len(labels)), labels] = 1", "targets[:, labels] = 1"
    )


# forward: shapes 1, values 3, single_sample 1, inputs_unchanged 1 (3 points). Without the
# input in the list, the given backward's unpacking fails: training stops at once.
@case("forward_without_input", forward=0, **NOT_TRAINED)
def _forward_no_input(nb: NotebookNode) -> None:
    replace_in(nb, "forward", "return activations", "return activations[1:]")


# forward reads the global `params` instead of its argument: in the clean process there is
# none (NameError), and in the notebook training never changes what forward computes.
@case("forward_uses_global_params", forward=0, **NOT_TRAINED)
def _forward_global(nb: NotebookNode) -> None:
    replace_in(nb, "forward", "def forward(params, x):", "def forward(weights, x):")


# cost: values 2, number 1, empty_batch 1 (2 points). The mean of an empty batch is nan.
@case("cost_mean", cost=0.5)
def _cost_mean(nb: NotebookNode) -> None:
    replace_in(nb, "cost", "float(np.sum(", "float(np.mean(")


# The textbooks' C = 1/2 sum (a - y)^2: the lesson's cost is the sum itself. Training uses
# backward, not cost, so it is unaffected.
@case("cost_half", cost=1)
def _cost_half(nb: NotebookNode) -> None:
    replace_in(nb, "cost", "return float(np.sum(", "return 0.5 * float(np.sum(")


# backward: shapes 1, weights 2, biases 1, finite_differences 1, inputs_unchanged 1 (6 points).
# Transposed weight gradients: wrong shapes (W2 is square, so its values are wrong too), the
# biases right; sgd_step cannot subtract a (784, 16) array from a (16, 784) one.
@case("backward_transposed_weights", backward=2, **NOT_TRAINED)
def _transposed(nb: NotebookNode) -> None:
    for k, a in ((1, "x"), (2, "a1"), (3, "a2")):
        replace_in(nb, "backward", f"delta{k}.T @ {a}", f"{a}.T @ delta{k}")


# No sigmoid derivative at the output: every gradient is wrong, and training with it ends at
# 0.2026 (measured).
@case("backward_no_sigmoid_derivative", backward=2, **NOT_TRAINED)
def _no_derivative(nb: NotebookNode) -> None:
    replace_in(
        nb, "backward", "delta3 = 2 * (a3 - target) * a3 * (1 - a3)", "delta3 = 2 * (a3 - target)"
    )


# The cost's factor of 2 forgotten in its derivative: every gradient is half the right one
# (the message says so); training at half the step ends at 0.8209 (measured), below 0.854.
@case("backward_missing_factor_2", backward=2, **NOT_TRAINED)
def _half(nb: NotebookNode) -> None:
    replace_in(nb, "backward", "delta3 = 2 * (a3 - target)", "delta3 = (a3 - target)")


# Bias gradients not summed over the batch: shape (n, 16). The weights are right. sgd_step
# broadcasts the biases to (100, 16), so training runs, but the validation batch of 10,000
# rows cannot be added to them: valid_accuracy raises and the trained params have the wrong
# shapes.
@case("backward_bias_not_summed", backward=3, **NOT_TRAINED)
def _bias_not_summed(nb: NotebookNode) -> None:
    for k in (1, 2, 3):
        replace_in(nb, "backward", f"delta{k}.sum(axis=0)", f"delta{k}")


# The mean over the batch instead of the sum: right for one image, wrong for a batch (and on
# the finite differences); trains at 0.8949 (measured), inside the band.
@case("backward_bias_mean", backward=4)
def _bias_mean(nb: NotebookNode) -> None:
    for k in (1, 2, 3):
        replace_in(nb, "backward", f"delta{k}.sum(axis=0)", f"delta{k}.mean(axis=0)")


# sgd_step: values 1, inputs_unchanged 1 (2 points). Updated in place: the returned values
# are right and training works, but the caller's arrays (initial_params!) change.
@case("sgd_step_in_place", sgd_step=1)
def _in_place(nb: NotebookNode) -> None:
    replace_in(
        nb,
        "sgd_step",
        "return {name: params[name] - learning_rate * grads[name] for name in params}",
        "for name in params:\n    params[name] -= learning_rate * grads[name]\n  return params",
    )


# Returns no grader can use: a cost that is NaN, gradients that are arrays of strings of the
# right shapes. Each sub-check fails with a message, nothing crashes; backward keeps only
# inputs_unchanged (1 point). Training stops at the first step.
@case("hostile_returns", cost=0, backward=1, **NOT_TRAINED)
def _hostile(nb: NotebookNode) -> None:
    replace_in(
        nb, "cost", "return float(np.sum((prediction - target) ** 2))", 'return float("nan")'
    )
    cell = answer_cell(nb, "backward")
    cell.source = (
        "# ANSWER: backward\ndef backward(params, activations, target):\n"
        '  return {name: np.full(value.shape, "0.1") for name, value in params.items()}'
    )


# Helpers and constants in the student's own cells travel with the function to the clean
# process: full marks.
@case("helpers_in_other_cells")
def _helpers(nb: NotebookNode) -> None:
    index = nb.cells.index(answer_cell(nb, "sigmoid"))
    nb.cells.insert(
        index,
        new_cell("CLIP = 500.0\n\ndef exp_neg(z):\n    return np.exp(-np.clip(z, -CLIP, CLIP))"),
    )
    replace_in(nb, "sigmoid", "return 1 / (1 + np.exp(-z))", "return 1 / (1 + exp_neg(z))")


# ------------------------------------------------------------------------------ samples

COLAB_METADATA = {
    "colab": {"provenance": [], "name": "mnist_numpy.ipynb"},
    "kernelspec": {"display_name": "Python 3", "name": "python3"},
    "language_info": {"name": "python"},
}

LOOPED_ONE_HOT = """def one_hot(labels):
  out = np.zeros((len(labels), 10))
  for i in range(len(labels)):
    out[i][labels[i]] = 1
  return out"""

EYE_ONE_HOT = """def one_hot(labels):
    return np.eye(10)[labels]"""

WRITTEN_OUT_FORWARD = """def forward(params, x):
    a1 = sigmoid(x @ params["W1"].T + params["b1"])
    a2 = sigmoid(a1 @ params["W2"].T + params["b2"])
    a3 = sigmoid(a2 @ params["W3"].T + params["b3"])
    return [x, a1, a2, a3]"""

LOOPED_SGD = """def sgd_step(params, grads, learning_rate):
    new_params = {}
    for key in params:
        new_params[key] = params[key] - learning_rate * grads[key]
    return new_params"""


def _replace_function(nb: NotebookNode, qid: str, body: str) -> None:
    cell = answer_cell(nb, qid)
    cell.source = f"# ANSWER: {qid}\n{body}"


def _manual(nb: NotebookNode, qid: str, text: str) -> None:
    cell = answer_cell(nb, qid)
    head = cell.source.split("\n")[0]
    cell.source = f"{head}\n**Your answer:** {text}"


def _sample_a(nb: NotebookNode) -> None:
    """Everything right, in a student's own style."""
    _replace_function(nb, "one_hot", LOOPED_ONE_HOT)
    _replace_function(nb, "forward", WRITTEN_OUT_FORWARD)
    _replace_function(nb, "sgd_step", LOOPED_SGD)
    _manual(
        nb,
        "numerical_gradients",
        "about 7 digits. numerical needs 2 forward passes per weight, 13002 weights, way too slow",
    )
    _manual(
        nb,
        "before_after_training",
        "0.098, random guessing is 1 in 10. in place: initial_params would be trained too and both lines print the same",
    )


def _sample_b(nb: NotebookNode) -> None:
    """Bias gradients averaged, an in-place sgd_step, a cost that is the mean."""
    _bias_mean(nb)
    _in_place(nb)
    _cost_mean(nb)
    _replace_function(nb, "one_hot", EYE_ONE_HOT)
    _manual(nb, "compare_with_pytorch", "It is lower (about 90%) because we only use 10000 images.")


def _sample_c(nb: NotebookNode) -> None:
    """Gave up on backward (the stub is left), so nothing trains; sigmoid that overflows to nan."""
    template = {c["id"]: c for c in make_template(SPEC).cells}
    cell = answer_cell(nb, "backward")
    cell.source = template[cell["id"]].source
    _sigmoid_nan(nb)
    _manual(nb, "before_after_training", "I could not get training to work.")


SAMPLES: dict[str, tuple[Case, dict[str, float]]] = {
    "nakamurayuki_20114_991032_mnist_numpy": (_sample_a, {}),
    "okaforchidi_20127_991077_mnist_numpy": (
        _sample_b,
        {"backward": 4, "sgd_step": 1, "cost": 0.5},
    ),
    "petrovaanna_LATE_20131_991105_mnist_numpy": (
        _sample_c,
        {"backward": 0, "sigmoid": 1.5, **NOT_TRAINED},
    ),
}


def build_samples(out: Path) -> dict[str, dict[str, float]]:
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i, (name, (edit, points)) in enumerate(SAMPLES.items()):
        nb = solution_submission()
        edit(nb)
        if i % 2:
            nb.metadata = dict(COLAB_METADATA)
            for cell in nb.cells:
                cell.metadata.setdefault("id", cell["id"])
        (out / f"{name}.ipynb").write_text(notebook_text(nb), encoding="utf-8")
        expected[name.split("_")[0]] = {**FULL, **points}
    return expected


def build(out: Path) -> dict[str, dict[str, float]]:
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (edit, points) in CASES.items():
        nb = solution_submission()
        edit(nb)
        (out / f"{name}.ipynb").write_text(notebook_text(nb), encoding="utf-8")
        expected[name] = points
    return expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update", action="store_true", help="rewrite the committed corpus")
    args = parser.parse_args(argv)
    if not args.update:
        parser.error("pass --update to rewrite tests/corpus_numpy and tests/samples/mnist_numpy")
    expected = build(HERE / "notebooks")
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    samples = build_samples(SAMPLES_DIR)
    (SAMPLES_DIR.parent / "expected_mnist_numpy.json").write_text(
        json.dumps(samples, indent=1, sort_keys=True) + "\n"
    )
    print(f"wrote {len(expected)} cases and {len(samples)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
