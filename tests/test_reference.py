"""Tests of solutions/mnist_nn/reference.py against the lesson's own code and the real data."""

import copy
import gc
import gzip
import hashlib
import io
import json
import os
import pickle
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = ROOT / "solutions" / "mnist_nn"

torch.set_num_threads(1)


# --------------------------------------------------------------------------- the lesson's code


def lesson_code() -> SimpleNamespace:
    """The lesson notebook's code cells, as close to verbatim as possible (prints silenced)."""

    def print(*args: Any, **kwargs: Any) -> None:  # the lesson prints every epoch
        pass

    # Define the cost function that takes in the model prediction (input) and the expected
    # output by the model (target)
    def cost_func(input, target):
        cost = torch.nn.MSELoss(reduction="sum")
        return cost(input, target)

    # Define a function that takes in a digit (0-9) and creates the corresponding model target
    def get_target(digits):
        target = F.one_hot(torch.tensor(digits), 10)
        return target

    activation_func = F.sigmoid

    class NN_Model(nn.Module):
        def __init__(self):
            super().__init__()
            # Our input layer has 784 neurons and our first hidden layer has 16 elements
            self.hidden1 = nn.Linear(784, 16)
            # Our second hidden layer has 16 inputs and 16 outputs
            self.hidden2 = nn.Linear(16, 16)
            # Our output layer has 16 inputs and 10 outputs (because there are 10 digits)
            self.output = nn.Linear(16, 10)

        def forward(self, xb):
            xb = activation_func(self.hidden1(xb))
            xb = activation_func(self.hidden2(xb))
            xb = activation_func(self.output(xb))
            return xb

    def train_model(epochs, batch_size, learning_rate, data_train, label_train, model):
        # Create lists to return
        epoch_data = []
        cost_train = []
        models = []

        for epoch in range(epochs):
            for i in range((len(data_train) - 1) // batch_size + 1):
                # Get the array indices to process this batch
                i_start = i * batch_size
                i_end = i_start + batch_size

                # get the predictions and targets for this batch
                xb = torch.tensor(data_train[i_start:i_end])
                yb = get_target(label_train[i_start:i_end])
                pred = model(xb)
                cost = cost_func(pred, yb.float())

                # Update the model parameters (i.e. train the model) for this batch of data
                cost.backward()  # This calculates the rate of change using backpropogation
                with torch.no_grad():
                    for p in model.parameters():
                        rate = -p.grad  # get the rate of change for this model parameter
                        p += rate * learning_rate  # update this model parameter
                    model.zero_grad()  # Reset the rate of change, ready for the next batch

            xb = torch.tensor(data_train)
            yb = get_target(label_train)
            pred = model(xb)

            # calculate the average cost function
            cost = cost_func(pred, yb) / len(pred)

            print(f"After epoch {epoch} the cost function is {cost}")
            epoch_data.append(epoch)
            cost_train.append(cost.item())
            models.append(copy.deepcopy(model))

        return epoch_data, cost_train, models

    def get_digit(pred):
        return torch.argmax(pred, dim=0)

    def accuracy(model, data, labels):
        xb = torch.tensor(data)
        yb = get_target(labels)  # noqa: F841 - unused in the lesson too
        pred = model(xb)

        num_right = 0
        for i in range(pred.shape[0]):
            guess = get_digit(pred[i])
            if guess == labels[i]:
                num_right = num_right + 1

        return num_right / pred.shape[0]

    return SimpleNamespace(
        cost_func=cost_func,
        get_target=get_target,
        NN_Model=NN_Model,
        train_model=train_model,
        get_digit=get_digit,
        accuracy=accuracy,
    )


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    pa, pb = list(a.named_parameters()), list(b.named_parameters())
    assert [n for n, _ in pa] == [n for n, _ in pb]
    for (name, x), (_, y) in zip(pa, pb, strict=True):
        assert torch.equal(x, y), name


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = (rng.integers(0, 256, size=(n, 784)) / 256).astype(np.float32)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    return images, labels


# --------------------------------------------------------------------------- the lesson, reproduced


@pytest.mark.slow
def test_reproduces_the_lesson_on_real_mnist(reference: ModuleType, mnist_data: Any) -> None:
    lesson = lesson_code()
    (x_train, y_train), (x_valid, y_valid), _ = mnist_data

    torch.manual_seed(0)
    lesson_model = lesson.NN_Model()
    ref_model = reference.make_model(seed=0)
    assert_same_weights(lesson_model, ref_model)  # same initial weights

    _, lesson_costs, lesson_models = lesson.train_model(
        2, 100, 0.05, x_train, y_train, lesson_model
    )
    result = reference.train_model(
        2, 100, 0.05, x_train, y_train, ref_model, data_valid=x_valid, label_valid=y_valid
    )

    assert result.costs == lesson_costs  # bit for bit
    assert_same_weights(lesson_model, ref_model)
    assert result.models == []  # no copies unless asked for
    assert_same_weights(lesson_models[-1], ref_model)

    lesson_acc = lesson.accuracy(lesson_models[-1], x_valid, y_valid)
    assert reference.accuracy(ref_model, x_valid, y_valid) == lesson_acc
    assert result.valid_accuracy[-1] == lesson_acc
    assert result.train_accuracy[-1] == reference.accuracy(ref_model, x_train, y_train)
    assert 0.85 < lesson_acc < 1.0


@pytest.mark.parametrize(
    ("n", "batch_size", "lr"), [(250, 64, 0.05), (200, 1000, 0.3), (97, 7, 0.01)]
)
def test_reproduces_the_lesson_on_synthetic_data(
    reference: ModuleType, n: int, batch_size: int, lr: float
) -> None:
    """Uneven last batches, a batch larger than the data, tiny batches: still bit for bit."""
    lesson = lesson_code()
    images, labels = synthetic(n, seed=n)
    torch.manual_seed(7)
    lesson_model = lesson.NN_Model()
    _, lesson_costs, lesson_models = lesson.train_model(
        3, batch_size, lr, images, labels, lesson_model
    )
    ref_model = reference.make_model(seed=7)
    result = reference.train_model(3, batch_size, lr, images, labels, ref_model, keep_models=True)
    assert result.costs == lesson_costs
    assert result.train_accuracy == [] and result.valid_accuracy == []
    assert len(result.models) == 3
    for ours, theirs in zip(result.models, lesson_models, strict=True):
        assert ours is not ref_model
        assert_same_weights(ours, theirs)


def test_make_model_matches_the_lesson_initialisation(reference: ModuleType) -> None:
    lesson = lesson_code()
    for seed in (0, 1, 123):
        torch.manual_seed(seed)
        assert_same_weights(lesson.NN_Model(), reference.make_model(seed=seed))


def test_mlp_layers(reference: ModuleType) -> None:
    model = reference.MLP(hidden_layers=3, width=16)
    names = [name for name, _ in model.named_children()]
    assert names == ["hidden1", "hidden2", "hidden3", "output"]
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(16, 784), (16,), (16, 16), (16,), (16, 16), (16,), (10, 16), (10,)]
    out = model(torch.zeros(5, 784))
    assert out.shape == (5, 10)
    assert bool(((out > 0) & (out < 1)).all())  # a sigmoid after the output layer too
    wide = reference.make_model(hidden_layers=1, width=32, seed=0)
    assert [n for n, _ in wide.named_children()] == ["hidden1", "output"]
    assert wide.hidden1.out_features == 32


# --------------------------------------------------------------------------- small exact answers


def test_get_target(reference: ModuleType) -> None:
    target = reference.get_target(3)
    assert target.dtype == torch.int64
    assert target.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    many = reference.get_target(np.array([5, 0, 9]))
    assert many.shape == (3, 10)
    assert torch.equal(many, lesson_code().get_target(np.array([5, 0, 9])))
    int32 = reference.get_target(np.array([1, 2], dtype=np.int32))  # the lesson's fails here
    assert int32.tolist() == [[0, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]]
    assert reference.one_hot(3) == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    for bad in (-1, 10, 2.5, True):
        with pytest.raises(ValueError):
            reference.one_hot(bad)


def test_cost_func(reference: ModuleType) -> None:
    x = torch.tensor([0, 0.5, 1, 0, 0, 0, 0, 0, 0, 0])
    t = torch.tensor([0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert reference.cost_func(x, t).item() == 1.25
    assert reference.cost_func(x, t.float()).item() == 1.25
    assert (
        reference.expected_cost([0, 0.5, 1, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
        == 1.25
    )
    # integer targets give what the lesson's MSELoss gives on them
    pred = torch.rand(50, 10, generator=torch.Generator().manual_seed(0))
    target = reference.get_target(np.arange(50) % 10)
    assert torch.equal(reference.cost_func(pred, target), lesson_code().cost_func(pred, target))


def test_vectorised_accuracy_equals_the_loop(reference: ModuleType) -> None:
    lesson = lesson_code()
    images, labels = synthetic(600, seed=3)
    model = reference.make_model(seed=3)
    reference.train_model(2, 50, 0.1, images, labels, model)
    assert reference.accuracy(model, images, labels) == lesson.accuracy(model, images, labels)
    # a saturated model where every output ties: both pick the first maximum
    saturated = reference.make_model(seed=0)
    with torch.no_grad():
        saturated.output.bias.fill_(1000.0)
    assert reference.accuracy(saturated, images, labels) == lesson.accuracy(
        saturated, images, labels
    )
    assert reference.accuracy(saturated, images, labels) == float(np.mean(labels == 0))


def test_first_nine_index(reference: ModuleType) -> None:
    assert reference.first_nine_index(np.array([5, 0, 4, 1, 9, 2, 9])) == 4
    with pytest.raises(ValueError):
        reference.first_nine_index(np.array([1, 2, 3]))


@pytest.mark.slow
def test_real_data_answers(reference: ModuleType, mnist_path: Path, mnist_data: Any) -> None:
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = mnist_data
    assert x_train.shape == (50000, 784) and x_valid.shape == (10000, 784)
    assert x_test.shape == (10000, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert y_valid[:5].tolist() == [3, 8, 6, 9, 6] and y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert reference.first_nine_index(y_train) == 4
    assert reference.validate_dataset(mnist_path) is None


# --------------------------------------------------------------------------- determinism


@pytest.mark.slow
def test_run_experiment_is_deterministic(reference: ModuleType, mnist_data: Any) -> None:
    (x_train, y_train), (x_valid, y_valid), test = mnist_data
    small = ((x_train[:5000], y_train[:5000]), (x_valid[:2000], y_valid[:2000]), test)
    before = torch.get_num_threads()
    first = reference.run_experiment(0.05, 100, 2, 11, small)
    second = reference.run_experiment(0.05, 100, 2, 11, small)
    assert torch.get_num_threads() == before
    assert first == second
    assert set(first) == {"costs", "train_accuracy", "valid_accuracy"}
    assert all(len(v) == 2 for v in first.values())
    assert json.loads(json.dumps(first)) == first
    other = reference.run_experiment(0.05, 100, 2, 12, small)
    assert other["costs"] != first["costs"]


def test_run_experiment_restores_threads(reference: ModuleType) -> None:
    images, labels = synthetic(100)
    data = ((images, labels), (images[:20], labels[:20]), (images[:20], labels[:20]))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = reference.run_experiment(0.05, 10, 1, 0, data, hidden_layers=3, width=8)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert len(out["costs"]) == 1


# --------------------------------------------------------------------------- calibration


def calibration() -> dict[str, Any]:
    return json.loads((ASSIGNMENT / "calibration.json").read_text(encoding="utf-8"))


def test_calibration_file_is_consistent() -> None:
    cal = calibration()
    toml = tomllib.loads((ASSIGNMENT / "assignment.toml").read_text(encoding="utf-8"))
    assert cal["data_sha256"] == toml["dataset"]["sha256"]
    assert cal["threads"] == 1 and cal["seeds"] == [0, 1, 2]
    band = cal["random_accuracy"]["band"]
    assert 0 <= band["low"] < cal["random_accuracy"]["min"] <= cal["random_accuracy"]["max"]
    assert cal["random_accuracy"]["max"] < band["high"] < 0.5
    assert len(cal["random_accuracy"]["values"]) == 20
    assert 0.5 < cal["grading"]["pipeline_threshold"] < 1
    assert 0.5 < cal["grading"]["model3_threshold"] < 1
    assert 0.5 < cal["baseline"]["valid_accuracy_threshold"] < 1
    assert cal["baseline"]["equals_long_run_prefix"] is True
    stable = cal["lr_sweep"]["max_stable_learning_rate"]
    assert stable["last_learning"] < stable["first_broken"]
    assert stable["band"]["low"] < stable["last_learning"] < stable["band"]["high"]
    assert stable["band"]["low"] < stable["first_broken"] < stable["band"]["high"]
    claim = cal["long_run"]["claimed_accuracy"]
    assert claim["valid_low"] <= claim["valid_high"] < claim["train_high"]
    assert len(cal["long_run"]["valid_accuracy"][0]) == cal["long_run"]["epochs"]
    text = (ASSIGNMENT / "calibration.json").read_text(encoding="utf-8")
    assert text == json.dumps(cal, indent=2, sort_keys=True) + "\n"


@pytest.mark.slow
def test_reference_meets_calibrated_thresholds(reference: ModuleType, mnist_data: Any) -> None:
    cal = calibration()
    grading = reference.run_experiment(0.05, 100, cal["grading"]["epochs"], 0, mnist_data)
    assert grading["valid_accuracy"][-1] >= cal["grading"]["pipeline_threshold"]
    model3 = reference.run_experiment(
        0.05, 100, cal["grading"]["epochs"], 0, mnist_data, hidden_layers=3
    )
    assert model3["valid_accuracy"][-1] >= cal["grading"]["model3_threshold"]
    baseline = reference.run_experiment(0.05, 100, 10, 0, mnist_data)
    assert baseline["valid_accuracy"][-1] >= cal["baseline"]["valid_accuracy_threshold"]
    # the 3-epoch grading run is the start of the 10-epoch run
    assert baseline["costs"][:3] == grading["costs"]


@pytest.mark.slow
def test_verify_calibration(reference: ModuleType, mnist_path: Path) -> None:
    assert reference.verify_calibration(mnist_path, calibration()) == []


def test_lr_band_rule(reference: ModuleType) -> None:
    band = reference._stable_lr_band([0.1, 0.05, 0.15, 0.2], [True, True, False, False])
    assert band["last_learning"] == 0.1 and band["first_broken"] == 0.15
    assert band["band"] == {"low": 0.05, "high": 0.225}
    assert band["monotonic"] is True
    irregular = reference._stable_lr_band([0.1, 0.2, 0.3], [True, False, True])
    assert irregular["monotonic"] is False


def test_write_calibration_is_atomic(reference: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    reference.write_calibration({"b": 1, "a": [0.5]}, out)
    assert out.read_text() == '{\n  "a": [\n    0.5\n  ],\n  "b": 1\n}\n'
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(ValueError):
        reference.write_calibration({"a": float("nan")}, out)
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.json"]
    assert json.loads(out.read_text()) == {"a": [0.5], "b": 1}


# --------------------------------------------------------------------------- load_mnist errors


def _gz(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:
        stream.write(payload)
    return buffer.getvalue()


def _mnist_like(
    rows: tuple[int, int, int] = (5, 5, 5),
    columns: int = 784,
    dtype: Any = np.float32,
    scale: float = 1.0,
    labels: list[int] | None = None,
) -> bytes:
    splits = []
    for n in rows:
        images = (np.linspace(0, 1, n * columns).reshape(n, columns) * scale).astype(dtype)
        y = np.array(labels if labels is not None else [i % 10 for i in range(n)], dtype=np.int64)
        splits.append((images, y))
    # Protocol 3: bytes are BINBYTES. (Python 3's protocol 2 pickles bytes through
    # _codecs.encode, a global the restricted unpickler refuses; the real file is a Python 2
    # protocol-2 pickle whose strings need no global.)
    return _gz(pickle.dumps(tuple(splits), protocol=3))


# protocol 2: GLOBAL 'os system', the argument tuple ('echo',), REDUCE, STOP. Never executed:
# the restricted unpickler refuses the global before any REDUCE could run.
FORBIDDEN_GLOBAL = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03."


def _truncated_real(mnist_path: Path) -> bytes:
    with open(mnist_path, "rb") as stream:
        return stream.read(1 << 20)


ERROR_CASES: list[tuple[str, Callable[[Path], bytes], str]] = [
    ("not_gzip", lambda _: b"this is not a gzip file\n" * 50, "not a gzip file"),
    ("empty", lambda _: b"", "empty"),
    ("truncated", _truncated_real, "truncated"),
    ("forbidden_global", lambda _: _gz(FORBIDDEN_GLOBAL), "forbidden global os.system"),
    ("not_a_pickle", lambda _: _gz(b"hello, world"), "pickle"),
    ("wrong_columns", lambda _: _mnist_like(columns=783), "783 columns, expected 784"),
    ("labels_out_of_range", lambda _: _mnist_like(labels=[0, 1, 2, 3, 12]), "labels span 0..12"),
    ("negative_label", lambda _: _mnist_like(labels=[0, 1, -1, 3, 4]), "labels span -1..4"),
    ("pixels_over_one", lambda _: _mnist_like(scale=255.0), "pixel values span"),
    ("float64_images", lambda _: _mnist_like(dtype=np.float64), "float64, expected float32"),
    ("wrong_rows", lambda _: _mnist_like(), "train has 5 rows, expected 50000"),
    ("two_splits", lambda _: _gz(pickle.dumps((1, 2), protocol=2)), "tuple of 3 splits"),
]


@pytest.mark.parametrize(
    ("name", "make", "fragment"), ERROR_CASES, ids=[case[0] for case in ERROR_CASES]
)
def test_load_mnist_rejects(
    reference: ModuleType,
    mnist_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    make: Callable[[Path], bytes],
    fragment: str,
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args) or 0)
    bad = tmp_path / f"{name}.pkl.gz"
    bad.write_bytes(make(mnist_path))
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()

    for load in (reference.load_mnist, reference.validate_dataset):
        with pytest.raises(ValueError) as caught:
            load(bad)
        message = str(caught.value)
        assert str(bad) in message, message
        assert fragment in message, message

    gc.collect()  # an unclosed file would surface here as a ResourceWarning (an error)
    assert calls == []
    assert [p.name for p in tmp_path.iterdir()] == [bad.name]  # nothing left behind
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == digest  # nor changed


def test_load_mnist_missing_file(reference: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        reference.load_mnist(tmp_path / "absent.pkl.gz")
    with pytest.raises(ValueError, match="not a regular file"):
        reference.load_mnist(tmp_path)


def test_restricted_unpickler_accepts_numpy_arrays(reference: ModuleType) -> None:
    """The globals numpy pickles arrays with (protocols 3 and 4) are the ones allowed."""
    images = np.arange(3 * 784, dtype=np.float32).reshape(3, 784)
    for protocol in (3, 4):
        stream = io.BytesIO(pickle.dumps(images, protocol=protocol))
        loaded = reference._RestrictedUnpickler(stream, encoding="latin-1").load()
        assert np.array_equal(loaded, images) and loaded.dtype == np.float32
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        unpickler = reference._RestrictedUnpickler(io.BytesIO(b""))
        assert unpickler.find_class(module, "_reconstruct") is np.empty(0).__reduce__()[0]
    for module, name in (("builtins", "eval"), ("_codecs", "encode"), ("numpy", "load")):
        with pytest.raises(pickle.UnpicklingError, match=f"forbidden global {module}.{name}"):
            reference._RestrictedUnpickler(io.BytesIO(b"")).find_class(module, name)
