"""The graded corpus: submissions generated from the solution by programmatic edits.

Each case is one common student mistake or one known exploit, with its exact expected points
per auto-graded question in `expected.json` (decided by hand, from what the case does, not by
running the grader). The notebooks are committed; `python tests/corpus/build.py --update`
regenerates them after the source notebook changes, and a test checks they are current.
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

from grader.authoring import (  # noqa: E402
    load_source,
    make_template,
    notebook_text,
)
from grader.cells import ANSWER, MANUAL, PARAMETERS, cell_role  # noqa: E402
from grader.spec import load_spec  # noqa: E402

SPEC = load_spec(ROOT / "solutions" / "mnist_nn")
FULL = {
    "first_nine_index": 1,
    "target_for_3": 1,
    "expected_cost": 1,
    "NN_Model3": 3,
    "experiments": 4,
    "max_stable_learning_rate": 1,
    "random_model_accuracy": 1,
    "claimed_accuracy": 1,
    "pipeline_accuracy": 2,
}


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


def set_answer(nb: NotebookNode, qid: str, body: str) -> None:
    answer_cell(nb, qid).source = f"# ANSWER: {qid}\n{body}"


def replace_in(nb: NotebookNode, qid: str, old: str, new: str) -> None:
    cell = answer_cell(nb, qid)
    assert old in cell.source, (qid, old)
    cell.source = cell.source.replace(old, new)


def given_cell(nb: NotebookNode, needle: str) -> NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "code" and needle in cell.source and cell_role(cell).locked:
            return cell
    raise KeyError(needle)


def parameters_cell(nb: NotebookNode) -> NotebookNode:
    return next(c for c in nb.cells if cell_role(c).role == PARAMETERS)


def new_cell(source: str) -> NotebookNode:
    """A student's new code cell, with an id derived from its text (the build is deterministic)."""
    cell = nbformat.v4.new_code_cell(source)
    cell["id"] = "s" + hashlib.sha256(source.encode()).hexdigest()[:11]
    return cell


def insert_after(nb: NotebookNode, needle: str, source: str) -> None:
    index = nb.cells.index(given_cell(nb, needle))
    nb.cells.insert(index + 1, new_cell(source))


def add_cell(nb: NotebookNode, source: str) -> None:
    nb.cells.insert(len(nb.cells) - 1, new_cell(source))


MODEL3_WIDE = """class NN_Model3(nn.Module):
  def __init__(self):
    super().__init__()
    self.hidden1 = nn.Linear(784, 16)
    self.hidden2 = nn.Linear(16, 16)
    self.hidden3 = nn.Linear(16, 32)
    self.output = nn.Linear(32, 10)

  def forward(self, xb):
    xb = activation_func(self.hidden1(xb))
    xb = activation_func(self.hidden2(xb))
    xb = activation_func(self.hidden3(xb))
    return activation_func(self.output(xb))"""

MODEL3_WIDER = """WIDTH = 32


class NN_Model3(nn.Module):
  def __init__(self):
    super().__init__()
    self.hidden1 = nn.Linear(784, WIDTH)
    self.hidden2 = nn.Linear(WIDTH, WIDTH)
    self.hidden3 = nn.Linear(WIDTH, WIDTH)
    self.output = nn.Linear(WIDTH, 10)

  def forward(self, xb):
    xb = activation_func(self.hidden1(xb))
    xb = activation_func(self.hidden2(xb))
    xb = activation_func(self.hidden3(xb))
    return activation_func(self.output(xb))"""

MODEL3_NO_OUTPUT_SIGMOID = """class NN_Model3(nn.Module):
  def __init__(self):
    super().__init__()
    self.hidden1 = nn.Linear(784, 16)
    self.hidden2 = nn.Linear(16, 16)
    self.hidden3 = nn.Linear(16, 16)
    self.output = nn.Linear(16, 10)

  def forward(self, xb):
    xb = activation_func(self.hidden1(xb))
    xb = activation_func(self.hidden2(xb))
    xb = activation_func(self.hidden3(xb))
    return self.output(xb)"""

MODEL3_SEQUENTIAL = """class NN_Model3(nn.Module):
  def __init__(self):
    super().__init__()
    self.layers = nn.Sequential(
        nn.Linear(784, 16), nn.Sigmoid(),
        nn.Linear(16, 16), nn.Sigmoid(),
        nn.Linear(16, 16), nn.Sigmoid(),
        nn.Linear(16, 10), nn.Sigmoid(),
    )

  def forward(self, xb):
    return self.layers(xb)"""

MODEL3_WITH_HELPERS = """HIDDEN = 16


def sigmoid_layer(layer, xb):
  return activation_func(layer(xb))


class NN_Model3(nn.Module):
  def __init__(self):
    super().__init__()
    self.hidden1 = nn.Linear(784, HIDDEN)
    self.hidden2 = nn.Linear(HIDDEN, HIDDEN)
    self.hidden3 = nn.Linear(HIDDEN, HIDDEN)
    self.output = nn.Linear(HIDDEN, 10)

  def forward(self, xb):
    for layer in (self.hidden1, self.hidden2, self.hidden3, self.output):
      xb = sigmoid_layer(layer, xb)
    return xb


model3 = NN_Model3()
print(model3(torch.tensor(image_train[0])).shape)"""

MODEL3_SUBCLASS = """class NN_Model3(NN_Model):
  def __init__(self):
    super().__init__()
    self.hidden3 = nn.Linear(16, 16)

  def forward(self, xb):
    xb = activation_func(self.hidden1(xb))
    xb = activation_func(self.hidden2(xb))
    xb = activation_func(self.hidden3(xb))
    return activation_func(self.output(xb))"""

# #12: a wrong two-layer class whose constructor walks the stack with sys._getframe to the
# class harness of the time, takes its secret result marker and its payload (the grader's
# weights and images), computes what a right model would report with a model of its own,
# prints that as the harness's result line and exits. On the old harness it scored 3/3.
MODEL3_FORGES_RESULT = """import sys, json, os


def _forge():
  frame = sys._getframe()
  while frame is not None:
    payload = frame.f_locals.get("payload")
    if isinstance(payload, dict) and "marker" in payload:
      g = frame.f_globals
      def right():
        return nn.Sequential(nn.Linear(784, 16), nn.Sigmoid(), nn.Linear(16, 16), nn.Sigmoid(),
                             nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 10), nn.Sigmoid())
      model = right()
      with torch.no_grad():
        for p, w in zip(model.parameters(), payload["weights"]):
          p.copy_(torch.as_tensor(g["_decode"](w)))
        out = model(torch.as_tensor(g["_decode"](payload["images"])))
      forged = {"shapes": [list(p.shape) for p in model.parameters()],
                "outputs": g["_encode"](out.numpy())}
      torch.manual_seed(payload["seed"])
      fresh = right()
      (x, y), _, _ = g["_load_data"](payload["data_path"])
      t = payload["train"]
      g["_train"](fresh, x, y, t["epochs"], t["batch_size"], t["learning_rate"])
      forged["trained"] = [g["_encode"](p.detach().numpy()) for p in fresh.parameters()]
      sys.stdout.write("\\n" + payload["marker"] + " " + json.dumps(forged) + "\\n")
      sys.stdout.flush()
      os._exit(0)
    frame = frame.f_back


class NN_Model3(nn.Module):
  def __init__(self):
    super().__init__()
    _forge()
    self.hidden1 = nn.Linear(784, 16)
    self.hidden2 = nn.Linear(16, 16)
    self.output = nn.Linear(16, 10)

  def forward(self, xb):
    xb = activation_func(self.hidden1(xb))
    xb = activation_func(self.hidden2(xb))
    return activation_func(self.output(xb))"""

MODEL3_MONKEYPATCH = """import torch as _t
_t.allclose = lambda *a, **k: True
_t.Tensor.__eq__ = lambda self, other: _t.ones_like(self, dtype=_t.bool)
class NN_Model3(nn.Module):
  def __init__(self):
    super().__init__()
    self.hidden1 = nn.Linear(784, 16)
    self.output = nn.Linear(16, 10)

  def forward(self, xb):
    return activation_func(self.output(activation_func(self.hidden1(xb))))"""


def _experiments(nb: NotebookNode, key: str, field: str, value: object) -> None:
    cell = answer_cell(nb, "experiments")
    cell.source += f"\nexperiments[{key!r}][{field!r}] = {value!r}"


COLAB_METADATA = {
    "colab": {"provenance": [], "toc_visible": True},
    "kernelspec": {"display_name": "Python 3", "name": "python3"},
    "language_info": {"name": "python"},
    "accelerator": "GPU",
}


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


@case("blank_template", **dict.fromkeys(FULL, 0))
def _blank(nb: NotebookNode) -> None:
    nb.cells = make_template(SPEC).cells


@case("onehot_digit_value", target_for_3=0)
def _onehot_digit(nb: NotebookNode) -> None:
    set_answer(nb, "target_for_3", "target_for_3 = [0, 0, 0, 3, 0, 0, 0, 0, 0, 0]")


@case("onehot_wrong_position", target_for_3=0)
def _onehot_pos(nb: NotebookNode) -> None:
    set_answer(nb, "target_for_3", "target_for_3 = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]")


@case("cost_mean_0_125", expected_cost=0)
def _cost_mean(nb: NotebookNode) -> None:
    set_answer(nb, "expected_cost", "expected_cost = 0.125")


@case("cost_1_5", expected_cost=0)
def _cost_15(nb: NotebookNode) -> None:
    set_answer(nb, "expected_cost", "expected_cost = 1.5")


@case("cost_0_625", expected_cost=0)
def _cost_0625(nb: NotebookNode) -> None:
    set_answer(nb, "expected_cost", "expected_cost = 0.625")


# Three hidden layers, the last of the wrong width: it computes the lesson's function for its
# own sizes, so its training is judged (here, from the trained weights, in a network of its
# sizes), but it stays below the threshold (measured: 0.860 < 0.863 after 3 epochs).
@case("model3_wrong_width", NN_Model3=0)
def _wide(nb: NotebookNode) -> None:
    set_answer(nb, "NN_Model3", MODEL3_WIDE)


# Three hidden layers of 32 instead of 16: wrong shapes, so no reference outputs, but it
# trains to the threshold: the "trains" point (#12).
@case("model3_wider_trains", NN_Model3=1)
def _wider(nb: NotebookNode) -> None:
    set_answer(nb, "NN_Model3", MODEL3_WIDER)


# Without the output sigmoid the lesson's summed squared error diverges at lr 0.05 (measured:
# NaN costs from the first epoch, 0.099 validation accuracy), so only the shapes earn a point.
@case("model3_no_output_sigmoid", NN_Model3=1)
def _no_sigmoid(nb: NotebookNode) -> None:
    set_answer(nb, "NN_Model3", MODEL3_NO_OUTPUT_SIGMOID)


@case("model3_sequential")
def _sequential(nb: NotebookNode) -> None:
    set_answer(nb, "NN_Model3", MODEL3_SEQUENTIAL)


@case("model3_helpers_and_constants")
def _helpers(nb: NotebookNode) -> None:
    set_answer(nb, "NN_Model3", MODEL3_WITH_HELPERS)


# A subclass of NN_Model registers the third hidden layer after the output layer: the
# parameters are not in the order the question asks for (the feedback says so), and the
# outputs and training checks need that order.
@case("model3_subclass_out_of_order", NN_Model3=0)
def _subclass(nb: NotebookNode) -> None:
    set_answer(nb, "NN_Model3", MODEL3_SUBCLASS)


@case("experiments_wrong_hyperparameter", experiments=3)
def _exp_wrong(nb: NotebookNode) -> None:
    _experiments(nb, "lr_decrease", "learning_rate", 0.05)
    _experiments(nb, "lr_decrease", "batch_size", 50)


@case("experiments_wrong_direction", experiments=3)
def _exp_dir(nb: NotebookNode) -> None:
    _experiments(nb, "batch_increase", "batch_size", 20)


@case("experiments_made_up_cost", experiments=3)
def _exp_cost(nb: NotebookNode) -> None:
    _experiments(nb, "lr_increase", "final_cost", 5.0)


@case("max_learning_rate_5", max_stable_learning_rate=0)
def _lr5(nb: NotebookNode) -> None:
    set_answer(nb, "max_stable_learning_rate", "max_stable_learning_rate = 5")


@case("parameters_left_at_lr_5", pipeline_accuracy=0)
def _params_lr5(nb: NotebookNode) -> None:
    cell = parameters_cell(nb)
    cell.source = re.sub(r"learning_rate = [0-9.]+", "learning_rate = 5", cell.source)


@case("parameters_left_at_100_epochs")
def _epochs100(nb: NotebookNode) -> None:
    cell = parameters_cell(nb)
    cell.source = re.sub(r"num_epochs = [0-9]+", "num_epochs = 100", cell.source)


@case("claims_training_accuracy", claimed_accuracy=0)
def _train_claim(nb: NotebookNode) -> None:
    set_answer(nb, "claimed_accuracy", "claimed_accuracy = 0.972")


@case("claims_percent")
def _percent_claim(nb: NotebookNode) -> None:
    cell = answer_cell(nb, "claimed_accuracy")
    match = re.search(r"claimed_accuracy = ([0-9.]+)", cell.source)
    assert match
    set_answer(nb, "claimed_accuracy", f"claimed_accuracy = {float(match.group(1)) * 100:.1f}")


@case("random_accuracy_0_5", random_model_accuracy=0)
def _random05(nb: NotebookNode) -> None:
    set_answer(nb, "random_model_accuracy", "random_model_accuracy = 0.5")


@case("random_accuracy_percent")
def _random10(nb: NotebookNode) -> None:
    set_answer(nb, "random_model_accuracy", "random_model_accuracy = 10")


@case("answers_as_tensors")
def _tensors(nb: NotebookNode) -> None:
    set_answer(nb, "first_nine_index", "first_nine_index = torch.tensor(4)")
    set_answer(nb, "target_for_3", "target_for_3 = get_target(3)")
    set_answer(nb, "expected_cost", "expected_cost = cost_func(torch.tensor([0, 0.5, 1, 0, 0, 0, 0, 0, 0, 0]), torch.tensor([0., 1, 0, 0, 0, 0, 0, 0, 0, 0]))")


@case("answers_as_numpy")
def _numpy(nb: NotebookNode) -> None:
    set_answer(nb, "first_nine_index", "first_nine_index = np.argmax(label_train == 9)")
    set_answer(nb, "target_for_3", "target_for_3 = np.arange(10) == 3")
    set_answer(nb, "expected_cost", "expected_cost = np.float32(1.25)")


@case("first_nine_off_by_one", first_nine_index=0)
def _off_by_one(nb: NotebookNode) -> None:
    set_answer(nb, "first_nine_index", "first_nine_index = 5")


@case("exception_in_unrelated_cell")
def _exception(nb: NotebookNode) -> None:
    insert_after(nb, "import torch", "print('exploring')\nundefined_name + 1")


@case("locked_cost_func_returns_zero")
def _locked_cost(nb: NotebookNode) -> None:
    cell = given_cell(nb, "def cost_func")
    cell.source = "def cost_func(input, target):\n  return torch.tensor(0.0, requires_grad=True)\n\ndef get_target(digits):\n  return F.one_hot(torch.tensor(digits), 10)"


@case("locked_accuracy_returns_one_metadata_stripped")
def _locked_acc(nb: NotebookNode) -> None:
    cell = given_cell(nb, "def accuracy")
    cell.metadata = {}
    cell.source = cell.source.replace("return ", "return 1.0 + 0 * ", 1)


# The clean process holds no secret and no verdict: nothing for the forger to find; its class
# is a two-layer model, so no sub-check passes.
@case("model3_forges_result_via_getframe", NN_Model3=0)
def _forges(nb: NotebookNode) -> None:
    set_answer(nb, "NN_Model3", MODEL3_FORGES_RESULT)


@case("monkeypatched_torch_and_wrong_model", NN_Model3=0)
def _monkeypatch(nb: NotebookNode) -> None:
    set_answer(nb, "NN_Model3", MODEL3_MONKEYPATCH)


@case("monkeypatched_numpy_and_builtins", first_nine_index=0)
def _monkeypatch_builtins(nb: NotebookNode) -> None:
    set_answer(nb, "first_nine_index", "first_nine_index = 0")
    add_cell(
        nb,
        "import builtins, numpy, json\n"
        "numpy.allclose = lambda *a, **k: True\n"
        "numpy.isclose = lambda *a, **k: numpy.ones(1, dtype=bool)\n"
        "numpy.array_equal = lambda *a, **k: True\n"
        "builtins.abs = lambda x: 0\n"
        "builtins.round = lambda x, n=0: 4\n"
        "builtins.float = lambda *a: 4.0\n"
        "json.dumps = lambda *a, **k: '{\"first_nine_index\": 4}'",
    )


@case("custom_eq_objects", first_nine_index=0, target_for_3=0, expected_cost=0)
def _custom_eq(nb: NotebookNode) -> None:
    add_cell(
        nb,
        "class Anything(float):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def __float__(self):\n        return 1.25\n"
        "class Liar(list):\n    def __eq__(self, other):\n        return True\n"
        "first_nine_index = Anything(-1)\n"
        "target_for_3 = Liar([7])\n"
        "class T(torch.Tensor):\n"
        "    def __eq__(self, other):\n        return torch.tensor(True)\n"
        "    def item(self):\n        return 1.25\n"
        "expected_cost = torch.tensor(0.0).as_subclass(T)",
    )


@case("fake_grader_output_and_results_file", first_nine_index=0)
def _fake_output(nb: NotebookNode) -> None:
    set_answer(nb, "first_nine_index", "first_nine_index = 0")
    add_cell(
        nb,
        "from IPython.display import display\n"
        "fake = {'nonce': 'guess', 'answers': {'values': {'first_nine_index': 4}, 'models': {}}}\n"
        "display({'application/vnd.grader.answers+json': fake, 'text/plain': 'x'}, raw=True)\n"
        "print('first_nine_index: passed 1/1')\n"
        "open('grades.csv', 'w').write('student,total\\nme,100\\n')",
    )


@case("reads_solutions_and_redefines_grader", first_nine_index=0)
def _reads_solutions(nb: NotebookNode) -> None:
    set_answer(nb, "first_nine_index", "first_nine_index = 0")
    add_cell(
        nb,
        "import glob, os\n"
        "found = []\n"
        "for pattern in ['/work/**/solutions/**/*.py', '../**/solutions/**/*', os.path.expanduser('~/**/checks.py')]:\n"
        "    try:\n        found += glob.glob(pattern, recursive=True)\n    except Exception:\n        pass\n"
        "for path in found:\n"
        "    try:\n        text = open(path).read()\n        first_nine_index = 4 if 'first_nine_index' in text else first_nine_index\n"
        "    except Exception:\n        pass\n"
        "_grader_selfcheck = None\n"
        "def extract(*a, **k):\n    return {'values': {'first_nine_index': 4}}",
    )


@case("exits_early_after_answers")
def _exits(nb: NotebookNode) -> None:
    insert_after(nb, "def accuracy", "import os\nos._exit(0)")


# ---- Answers found by content (issue #12, 1): editors that rewrite cell metadata, students
# who replace a whole answer cell (marker line included), move it, or paste the answer beside
# a given cell. The answer is the student's cell that binds the answer's name.


def unmarked(nb: NotebookNode, qid: str) -> NotebookNode:
    """The answer cell rewritten by the student: no marker line, no grader metadata."""
    cell = answer_cell(nb, qid)
    cell.source = "\n".join(
        line for line in cell.source.split("\n") if not line.startswith("# ANSWER:")
    ).strip("\n")
    cell.metadata = {}
    return cell


@case("colab_rewritten_answer_cells")
def _colab_rewritten(nb: NotebookNode) -> None:
    cells = [unmarked(nb, "first_nine_index"), unmarked(nb, "NN_Model3")]
    nb.metadata = dict(COLAB_METADATA)
    for cell in nb.cells:  # Colab re-creates cell metadata: only its own id survives
        cell.metadata = {"id": cell["id"]}
    for cell in cells:
        cell["id"] = "colab" + cell["id"][:20]


@case("answers_unmarked_metadata_stripped")
def _all_unmarked(nb: NotebookNode) -> None:
    for qid in ("first_nine_index", "target_for_3", "expected_cost", "NN_Model3", "experiments"):
        unmarked(nb, qid)
    for cell in nb.cells:
        cell.metadata = {}


@case("answer_cells_reordered")
def _reordered(nb: NotebookNode) -> None:
    for qid in ("first_nine_index", "NN_Model3"):
        cell = unmarked(nb, qid)
        index = nb.cells.index(cell)
        nb.cells.insert(index + 2, nb.cells.pop(index))  # after the given cell that follows


@case("answer_pasted_beside_given_cell")
def _pasted_beside(nb: NotebookNode) -> None:
    stubs = {c["id"]: c.source for c in make_template(SPEC).cells}
    for qid in ("first_nine_index", "NN_Model3"):
        cell = answer_cell(nb, qid)
        body = "\n".join(ln for ln in cell.source.split("\n") if not ln.startswith("# ANSWER:"))
        cell.source = stubs[cell["id"]]  # the stub left as it was
        nb.cells.insert(nb.cells.index(cell), new_cell(body.strip("\n")))  # under the given cell


# Two unmarked cells assign the answer before the next given cell: the last one is graded
# (a wrong first try, then the right value), and the feedback says which and why.
@case("answer_assigned_twice_unmarked")
def _twice_unmarked(nb: NotebookNode) -> None:
    cell = unmarked(nb, "first_nine_index")
    nb.cells.insert(nb.cells.index(cell), new_cell("first_nine_index = 5  # first try"))


# The sample class the README's main command grades: realistic submissions, each a student who
# made a few of the corpus's mistakes, saved by the editors students use.
# Most of them left num_epochs at 100, as the lesson's last section tells students to.
SAMPLES: dict[str, tuple[str, ...]] = {
    "alvarezsofia_10231_884102_mnist_nn": ("solution", "parameters_left_at_100_epochs"),
    "brownjames_10244_884177_mnist_nn": ("cost_mean_0_125", "claims_training_accuracy", "parameters_left_at_100_epochs"),
    "chenwei_10251_884190_mnist_nn": ("answers_as_numpy", "random_accuracy_percent", "experiments_made_up_cost", "parameters_left_at_100_epochs"),
    "dialloaminata_10260_884211_mnist_nn": ("model3_no_output_sigmoid", "parameters_left_at_100_epochs"),
    "eriksenlars_LATE_10277_884302_mnist_nn": ("experiments_wrong_direction", "max_learning_rate_5", "parameters_left_at_100_epochs"),
    "fitzgeraldkate_10281_884315_mnist_nn": ("blank_template",),
    "gonzalezluis_10290_884330_mnist_nn": ("locked_cost_func_returns_zero", "model3_sequential", "exception_in_unrelated_cell", "parameters_left_at_100_epochs"),
    "haddadomar_10302_884351_mnist_nn": ("parameters_left_at_lr_5", "answers_as_tensors", "random_accuracy_0_5"),
}


def build_samples(out: Path) -> dict[str, dict[str, float]]:
    out.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i, (name, cases) in enumerate(SAMPLES.items()):
        nb = solution_submission()
        points = dict(FULL)
        edited_by: dict[str, str] = {}
        for case_name in cases:
            edit, case_points = CASES[case_name]
            before = {c["id"]: c.source for c in nb.cells}
            edit(nb)
            for cell in nb.cells:
                if before.get(cell["id"]) != cell.source:
                    if cell["id"] in edited_by:  # the later edit would hide the earlier mistake
                        raise ValueError(f"{name}: {case_name} and {edited_by[cell['id']]} edit one cell")
                    edited_by[cell["id"]] = case_name
            points.update({k: v for k, v in case_points.items() if v != FULL[k]})
        if i % 2:
            nb.metadata = dict(COLAB_METADATA)
            for cell in nb.cells:
                cell.metadata.setdefault("id", cell["id"])
        else:
            nb.metadata["vscode"] = {"interpreter": {"hash": "0" * 40}}
        (out / f"{name}.ipynb").write_text(notebook_text(nb), encoding="utf-8")
        expected[name.split("_")[0]] = points
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
        parser.error("pass --update to rewrite tests/corpus/notebooks and expected.json")
    expected = build(HERE / "notebooks")
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    samples_dir = ROOT / "tests" / "samples" / "mnist_nn"
    samples = build_samples(samples_dir)
    (samples_dir.parent / "expected_mnist_nn.json").write_text(
        json.dumps(samples, indent=1, sort_keys=True) + "\n"
    )
    print(f"wrote {len(expected)} cases and {len(samples)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
