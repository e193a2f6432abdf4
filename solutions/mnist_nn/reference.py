"""Reference implementation of the MNIST neural-network assignment.

This module is the instructor's side of the lesson "Building and training a simple
neural network": the same cost function, target, model and training loop as the
notebook, written so that

* for the same torch seed it reproduces the notebook's costs and weights bit for bit,
* it never keeps more than it needs (no deep copy per epoch unless asked for),
* the data set is read with a restricted unpickler and validated before use,
* :func:`calibrate` produces the thresholds the grader uses (``calibration.json``).

Importing it has no side effects: no data is loaded and no torch setting is changed.
Run it as a script to regenerate the calibration file::

    OMP_NUM_THREADS=1 python solutions/mnist_nn/reference.py calibrate [--data PATH] [--out PATH]
"""

import argparse
import copy
import gzip
import hashlib
import json
import math
import os
import pickle
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MLP",
    "TrainResult",
    "accuracy",
    "calibrate",
    "cost_func",
    "expected_cost",
    "first_nine_index",
    "get_target",
    "load_mnist",
    "make_model",
    "one_hot",
    "run_experiment",
    "train_model",
    "validate_dataset",
    "verify_calibration",
    "write_calibration",
]

Split = tuple[np.ndarray, np.ndarray]
MnistData = tuple[Split, Split, Split]

N_INPUTS = 784
N_CLASSES = 10
SPLIT_NAMES = ("train", "valid", "test")
SPLIT_ROWS = {"train": 50000, "valid": 10000, "test": 10000}

# --------------------------------------------------------------------------- data loading

# The function numpy pickles arrays with. Taken from numpy itself so that no deprecated
# module (numpy.core in numpy 2) has to be imported to find it.
_RECONSTRUCT = np.empty(0).__reduce__()[0]

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a pickled numpy array needs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name} in pickle "
                "(only numpy arrays are allowed in an MNIST file)"
            ) from None


def _check_split(name: str, split: object, where: str) -> Split:
    if not isinstance(split, tuple | list) or len(split) != 2:
        raise ValueError(f"{where}: the {name} split is not a pair (images, labels)")
    images, labels = split
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{where}: {name} images are a {type(images).__name__}, not a numpy array")
    if images.ndim != 2:
        raise ValueError(
            f"{where}: {name} images have shape {images.shape}; expected 2-D (n, {N_INPUTS})"
        )
    if images.dtype != np.float32:
        raise ValueError(f"{where}: {name} images are {images.dtype}, expected float32")
    if images.shape[1] != N_INPUTS:
        raise ValueError(
            f"{where}: {name} images have {images.shape[1]} columns, expected {N_INPUTS} "
            "(28x28 pixels)"
        )
    if images.size:
        low, high = float(images.min()), float(images.max())
        if not (low >= 0.0 and high <= 1.0):  # also catches NaN
            raise ValueError(
                f"{where}: {name} pixel values span [{low}, {high}], expected within [0, 1]"
            )
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"{where}: {name} labels are a {type(labels).__name__}, not a numpy array")
    if labels.ndim != 1:
        raise ValueError(f"{where}: {name} labels have shape {labels.shape}; expected 1-D")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: {name} labels are {labels.dtype}, expected integers")
    if len(labels) != len(images):
        raise ValueError(f"{where}: {name} has {len(images)} images but {len(labels)} labels")
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > 9:
            raise ValueError(f"{where}: {name} labels span {low}..{high}, expected digits 0..9")
    expected = SPLIT_ROWS[name]
    if len(images) != expected:
        raise ValueError(f"{where}: {name} has {len(images)} rows, expected {expected}")
    return images, labels


def load_mnist(path: str | os.PathLike[str]) -> MnistData:
    """Load and validate ``mnist.pkl.gz``: ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))``.

    The file is unpickled with a restricted unpickler that only resolves the numpy
    globals an array needs, so a tampered file cannot run code. Any problem with the
    content (not gzip, truncated, not the expected pickle, wrong shapes, dtypes or value
    ranges) raises :class:`ValueError` naming the file and what is wrong. A missing file
    raises :class:`FileNotFoundError`.
    """
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise FileNotFoundError(f"MNIST file {where} does not exist")
    if not path.is_file():
        raise ValueError(f"{where}: not a regular file")
    if path.stat().st_size == 0:
        raise ValueError(f"{where}: the file is empty")
    try:
        with gzip.open(path, "rb") as stream:
            data = _RestrictedUnpickler(stream, encoding="latin-1").load()
    except gzip.BadGzipFile as exc:
        raise ValueError(f"{where}: not a gzip file ({exc})") from exc
    except (EOFError, zlib.error) as exc:
        raise ValueError(
            f"{where}: the gzip stream is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{where}: not a valid MNIST pickle: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:  # unpickling malformed data can raise almost anything
        raise ValueError(
            f"{where}: could not be read as a gzip'd pickle ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(data, tuple | list) or len(data) != 3:
        raise ValueError(
            f"{where}: expected a tuple of 3 splits (train, valid, test), got "
            f"{type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, tuple | list) else "")
        )
    train, valid, test = (
        _check_split(name, split, where) for name, split in zip(SPLIT_NAMES, data, strict=True)
    )
    return train, valid, test


def validate_dataset(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ValueError` (or :class:`FileNotFoundError`) unless ``path`` is a valid MNIST file."""
    load_mnist(path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the lesson's pieces


def get_target(digits: Any) -> torch.Tensor:
    """One-hot target(s) for a digit or an array of digits, as the lesson's ``get_target``.

    Returns an int64 tensor of shape ``(10,)`` for one digit, ``(n, 10)`` for n digits.
    """
    return F.one_hot(torch.as_tensor(digits).long(), N_CLASSES)


def cost_func(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The lesson's cost: ``MSELoss(reduction='sum')``; the target is cast to the input's dtype."""
    target = torch.as_tensor(target)
    return nn.MSELoss(reduction="sum")(input, target.to(input.dtype))


class MLP(nn.Module):
    """A fully connected network with a sigmoid after every layer (the lesson's ``NN_Model``).

    Layers are attributes ``hidden1`` .. ``hiddenN`` and ``output``, created in that order,
    so that for ``hidden_layers=2, width=16`` and the same torch seed the initial weights
    are those of the lesson's ``NN_Model``.
    """

    def __init__(
        self,
        hidden_layers: int = 2,
        width: int = 16,
        n_inputs: int = N_INPUTS,
        n_outputs: int = N_CLASSES,
    ) -> None:
        super().__init__()
        if hidden_layers < 0 or width < 1 or n_inputs < 1 or n_outputs < 1:
            raise ValueError("hidden_layers must be >= 0 and width, n_inputs, n_outputs >= 1")
        self.hidden_layers = hidden_layers
        self.width = width
        size = n_inputs
        for k in range(1, hidden_layers + 1):
            setattr(self, f"hidden{k}", nn.Linear(size, width))
            size = width
        self.output = nn.Linear(size, n_outputs)

    def hidden(self) -> list[nn.Linear]:
        return [getattr(self, f"hidden{k}") for k in range(1, self.hidden_layers + 1)]

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden():
            xb = torch.sigmoid(layer(xb))
        return torch.sigmoid(self.output(xb))


def make_model(hidden_layers: int = 2, width: int = 16, seed: int | None = None) -> MLP:
    """Build an :class:`MLP`; with ``seed``, ``torch.manual_seed(seed)`` is called right before."""
    if seed is not None:
        torch.manual_seed(seed)
    return MLP(hidden_layers=hidden_layers, width=width)


@dataclass
class TrainResult:
    """Per-epoch history of :func:`train_model`."""

    costs: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    valid_accuracy: list[float] = field(default_factory=list)
    models: list[nn.Module] = field(default_factory=list)

    @property
    def epochs(self) -> list[int]:
        return list(range(len(self.costs)))


def _images(data: Any) -> torch.Tensor:
    """A float tensor of images. numpy input is copied, as the lesson's ``torch.tensor`` does."""
    if isinstance(data, torch.Tensor):
        return data
    return torch.tensor(np.asarray(data))


def _labels(labels: Any) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        return labels.long()
    return torch.as_tensor(np.asarray(labels)).long()


def _count_correct(pred: torch.Tensor, labels: torch.Tensor) -> int:
    return int((pred.argmax(dim=1) == labels).sum().item())


def train_model(
    epochs: int,
    batch_size: int,
    learning_rate: float,
    data_train: Any,
    label_train: Any,
    model: nn.Module,
    *,
    data_valid: Any = None,
    label_valid: Any = None,
    keep_models: bool = False,
) -> TrainResult:
    """Train ``model`` exactly as the lesson's ``train_model`` does.

    Batches are taken in order (``batch_size`` rows at a time, the last one possibly
    shorter); for each, the summed squared error against the one-hot target is
    back-propagated and every parameter is updated with ``p += -p.grad * learning_rate``
    under ``no_grad``, then the gradients are reset with ``model.zero_grad()``. After each
    epoch the average cost over the whole training set, ``cost_func(pred, yb) / len(pred)``,
    is recorded (evaluated under ``no_grad``; the values are the lesson's bit for bit).

    With ``data_valid``/``label_valid``, the training and validation accuracy are
    recorded after every epoch too. With ``keep_models``, a deep copy of the model is kept
    after every epoch (as the lesson does); otherwise ``models`` stays empty.
    """
    if epochs < 0:
        raise ValueError("epochs must be >= 0")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if (data_valid is None) != (label_valid is None):
        raise ValueError("give both data_valid and label_valid, or neither")
    x_train = _images(data_train)
    y_train = _labels(label_train)
    n = len(x_train)
    if n == 0 or len(y_train) != n:
        raise ValueError(f"{n} training images but {len(y_train)} labels")
    # The whole training target, as the lesson's per-epoch ``get_target(label_train)``
    # (int64) and per-batch ``yb.float()`` (sliced from the same one-hot rows).
    target_train = get_target(y_train)
    target_train_float = target_train.float()
    if data_valid is not None:
        x_valid = _images(data_valid)
        y_valid = _labels(label_valid)
        if len(x_valid) != len(y_valid) or len(x_valid) == 0:
            raise ValueError(f"{len(x_valid)} validation images but {len(y_valid)} labels")
    mse_sum = nn.MSELoss(reduction="sum")

    result = TrainResult()
    n_batches = (n - 1) // batch_size + 1
    for _epoch in range(epochs):
        for i in range(n_batches):
            i_start = i * batch_size
            i_end = i_start + batch_size
            xb = x_train[i_start:i_end]
            yb = target_train_float[i_start:i_end]
            pred = model(xb)
            cost = mse_sum(pred, yb)
            cost.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p += -p.grad * learning_rate
                model.zero_grad()

        with torch.no_grad():
            pred = model(x_train)
            # Same call as the lesson: the target stays int64 here, as it does there.
            cost = mse_sum(pred, target_train) / len(pred)
            result.costs.append(cost.item())
            if data_valid is not None:
                result.train_accuracy.append(_count_correct(pred, y_train) / n)
                result.valid_accuracy.append(_count_correct(model(x_valid), y_valid) / len(x_valid))
        if keep_models:
            result.models.append(copy.deepcopy(model))
    return result


def accuracy(model: nn.Module, data: Any, labels: Any) -> float:
    """Fraction of ``data`` whose argmax prediction equals the label (the lesson's loop, vectorised)."""
    x = _images(data)
    y = _labels(labels)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    with torch.no_grad():
        pred = model(x)
    return _count_correct(pred, y) / len(x)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_experiment(
    learning_rate: float,
    batch_size: int,
    epochs: int,
    seed: int,
    data: MnistData,
    *,
    hidden_layers: int = 2,
    width: int = 16,
) -> dict[str, list[float]]:
    """Seed torch, build a model, train it on the training split; per-epoch history as JSON data.

    Returns ``{"costs": [...], "train_accuracy": [...], "valid_accuracy": [...]}``.
    Runs single-threaded (the previous torch thread count is restored afterwards), so the
    result is deterministic for a given seed.
    """
    (x_train, y_train), (x_valid, y_valid), _ = data
    with _torch_threads(1):
        model = make_model(hidden_layers=hidden_layers, width=width, seed=seed)
        result = train_model(
            epochs,
            batch_size,
            learning_rate,
            x_train,
            y_train,
            model,
            data_valid=x_valid,
            label_valid=y_valid,
        )
    return {
        "costs": [float(c) for c in result.costs],
        "train_accuracy": [float(a) for a in result.train_accuracy],
        "valid_accuracy": [float(a) for a in result.valid_accuracy],
    }


# --------------------------------------------------------------------------- small answers


def first_nine_index(labels: Any) -> int:
    """Index of the first label equal to 9."""
    hits = np.flatnonzero(np.asarray(labels) == 9)
    if hits.size == 0:
        raise ValueError("there is no 9 in the labels")
    return int(hits[0])


def one_hot(digit: int) -> list[float]:
    """The target for one digit as a list of floats, e.g. 3 -> [0, 0, 0, 1, 0, ...]."""
    if isinstance(digit, bool) or int(digit) != digit or not 0 <= int(digit) <= 9:
        raise ValueError(f"not a digit: {digit!r}")
    return [float(v) for v in get_target(int(digit)).tolist()]


def expected_cost(input: Sequence[float], target: Sequence[float]) -> float:
    """The lesson's cost of ``input`` against ``target`` as a float (``[0, .5, 1, 0..]`` vs ``[0, 1, 0..]`` -> 1.25)."""
    x = torch.tensor(list(input), dtype=torch.float32)
    return float(cost_func(x, torch.tensor(list(target))).item())


# --------------------------------------------------------------------------- calibration

SWEEP_LEARNING_RATES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
LEARNS_THRESHOLD = 0.5


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _stable_lr_band(learning_rates: Sequence[float], learns: Sequence[bool]) -> dict[str, Any]:
    """The accepted answers for "how large can the learning rate be before training breaks".

    Rule (learning rates taken in the sweep's increasing order):

    * ``last_learning`` is the largest learning rate that learns (final validation
      accuracy >= 0.5 on every seed), ``first_broken`` the smallest one that does not.
    * The accepted band is ``low = last_learning * 0.5`` and
      ``high = first_broken * 1.5``: a student who names a value around where the
      training stops working (either the last rate that still worked or the first that
      broke, give or take half a step on the sweep's grid) is right.
    * If no learning rate learns, ``last_learning`` is None and low is the smallest swept
      rate * 0.5; if every one learns, ``first_broken`` is None and high is the largest
      swept rate * 1.5.
    * ``monotonic`` tells whether every rate below ``first_broken`` learns (if not, the
      sweep is irregular and the band should be reviewed by hand).
    """
    pairs = sorted(zip(learning_rates, learns, strict=True))
    learning = [lr for lr, ok in pairs if ok]
    broken = [lr for lr, ok in pairs if not ok]
    last_learning = max(learning) if learning else None
    first_broken = min(broken) if broken else None
    low = round((last_learning if last_learning is not None else pairs[0][0]) * 0.5, 6)
    high = round((first_broken if first_broken is not None else pairs[-1][0]) * 1.5, 6)
    monotonic = first_broken is None or all(ok for lr, ok in pairs if lr < first_broken)
    monotonic = monotonic and (
        first_broken is None or not any(ok for lr, ok in pairs if lr > first_broken)
    )
    return {
        "last_learning": last_learning,
        "first_broken": first_broken,
        "band": {"low": low, "high": high},
        "monotonic": monotonic,
        "rule": (
            "learns = final validation accuracy >= 0.5 on every seed; "
            "low = last_learning * 0.5, high = first_broken * 1.5"
        ),
    }


def calibrate(
    dataset_path: str | os.PathLike[str],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    progress: Callable[[str], None] | None = None,
    grading_epochs: int = 3,
    baseline_epochs: int = 10,
    long_run_epochs: int = 100,
    sweep_epochs: int = 10,
    sweep_learning_rates: Sequence[float] = SWEEP_LEARNING_RATES,
    random_seeds: int = 20,
    learning_rate: float = 0.05,
    batch_size: int = 100,
) -> dict[str, Any]:
    """Reference runs that produce the grader's thresholds (JSON-able).

    Sections:

    * ``random_accuracy``: training-set accuracy of untrained 2-hidden-layer models for
      torch seeds ``0..random_seeds-1``; ``band`` = [min - 0.03, max + 0.03], clipped to
      [0, 0.49].
    * ``baseline``: ``baseline_epochs`` at ``learning_rate``/``batch_size`` per seed;
      ``valid_accuracy_threshold`` = min final validation accuracy - 0.01.
      ``equals_long_run_prefix`` records that they equal the long run's first epochs.
    * ``grading``: the grading run (``grading_epochs``), 2 and 3 hidden layers;
      ``pipeline_threshold`` / ``model3_threshold`` = min over seeds - 0.03.
    * ``lr_sweep``: final validation accuracy per learning rate and seed after
      ``sweep_epochs``; ``max_stable_learning_rate`` per :func:`_stable_lr_band`.
    * ``long_run``: ``long_run_epochs`` per seed, per-epoch accuracies (5 decimals) and
      ``claimed_accuracy``; ``separation`` tells whether the final training and
      validation accuracies overlap across seeds.
    """
    say = progress or (lambda _message: None)
    seeds = [int(s) for s in seeds]
    timings: dict[str, float] = {}
    started = time.perf_counter()

    with _torch_threads(1):
        t0 = time.perf_counter()
        data = load_mnist(dataset_path)
        sha256 = file_sha256(dataset_path)
        timings["load_data"] = time.perf_counter() - t0
        (x_train, y_train), _, _ = data
        x_train_t, y_train_t = _images(x_train), _labels(y_train)

        # ---- random (untrained) model accuracy on the training set
        t0 = time.perf_counter()
        random_values = [
            accuracy(make_model(seed=s), x_train_t, y_train_t) for s in range(random_seeds)
        ]
        timings["random_accuracy"] = time.perf_counter() - t0
        rmin, rmax = min(random_values), max(random_values)
        random_section = {
            "seeds": list(range(random_seeds)),
            "values": random_values,
            "min": rmin,
            "max": rmax,
            "mean": sum(random_values) / len(random_values),
            "band": {
                "low": round(max(0.0, rmin - 0.03), 6),
                "high": round(min(0.49, rmax + 0.03), 6),
            },
            "margin": 0.03,
        }
        say(f"random accuracy: {rmin:.4f}..{rmax:.4f} ({timings['random_accuracy']:.1f}s)")

        def run(lr: float, epochs: int, seed: int, hidden_layers: int = 2) -> dict[str, Any]:
            t = time.perf_counter()
            out = run_experiment(lr, batch_size, epochs, seed, data, hidden_layers=hidden_layers)
            out["seconds"] = time.perf_counter() - t
            return out

        # ---- long run
        t0 = time.perf_counter()
        long_runs = []
        for s in seeds:
            r = run(learning_rate, max(long_run_epochs, baseline_epochs), s)
            long_runs.append(r)
            say(
                f"long run seed {s}: valid {r['valid_accuracy'][-1]:.4f} "
                f"train {r['train_accuracy'][-1]:.4f} ({r['seconds']:.1f}s)"
            )
        timings["long_run"] = time.perf_counter() - t0
        timings["seconds_per_epoch"] = timings["long_run"] / (
            len(seeds) * max(long_run_epochs, baseline_epochs)
        )

        # ---- the lesson's default run, re-run on its own (it must equal the long run's start)
        t0 = time.perf_counter()
        baseline_runs = [run(learning_rate, baseline_epochs, s) for s in seeds]
        timings["baseline"] = time.perf_counter() - t0
        prefix_ok = all(
            r[k] == lr_[k][:baseline_epochs]
            for r, lr_ in zip(baseline_runs, long_runs, strict=True)
            for k in ("costs", "train_accuracy", "valid_accuracy")
        )
        baseline_valid = [r["valid_accuracy"][-1] for r in baseline_runs]
        say(f"baseline: valid {baseline_valid} (equals long-run prefix: {prefix_ok})")
        baseline_section = {
            "epochs": baseline_epochs,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "seeds": seeds,
            "costs": [r["costs"] for r in baseline_runs],
            "final_cost": [r["costs"][-1] for r in baseline_runs],
            "final_train_accuracy": [r["train_accuracy"][-1] for r in baseline_runs],
            "final_valid_accuracy": baseline_valid,
            "equals_long_run_prefix": prefix_ok,
            "margin": 0.01,
            "valid_accuracy_threshold": round(min(baseline_valid) - 0.01, 6),
        }

        # ---- the grading run: 2 and 3 hidden layers
        t0 = time.perf_counter()
        grading_valid: dict[int, list[float]] = {2: [], 3: []}
        grading_cost: dict[int, list[float]] = {2: [], 3: []}
        for layers in (2, 3):
            for s in seeds:
                r = run(learning_rate, grading_epochs, s, hidden_layers=layers)
                grading_valid[layers].append(r["valid_accuracy"][-1])
                grading_cost[layers].append(r["costs"][-1])
                say(f"grading run, {layers} hidden, seed {s}: valid {r['valid_accuracy'][-1]:.4f}")
        timings["grading"] = time.perf_counter() - t0
        grading_section = {
            "epochs": grading_epochs,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "seeds": seeds,
            "hidden2_valid_accuracy": grading_valid[2],
            "hidden3_valid_accuracy": grading_valid[3],
            "hidden2_final_cost": grading_cost[2],
            "hidden3_final_cost": grading_cost[3],
            "margin": 0.03,
            "pipeline_threshold": round(min(grading_valid[2]) - 0.03, 6),
            "model3_threshold": round(min(grading_valid[3]) - 0.03, 6),
        }

        # ---- learning-rate sweep
        t0 = time.perf_counter()
        entries = []
        for lr in sweep_learning_rates:
            valid, costs = [], []
            for s in seeds:
                r = run(lr, sweep_epochs, s)
                valid.append(r["valid_accuracy"][-1])
                costs.append(_finite(r["costs"][-1]))
            learns = all(v >= LEARNS_THRESHOLD for v in valid)
            entries.append(
                {
                    "learning_rate": lr,
                    "final_valid_accuracy": valid,
                    "final_cost": costs,
                    "learns": learns,
                }
            )
            say(f"lr {lr}: valid {[round(v, 4) for v in valid]} learns={learns}")
        timings["lr_sweep"] = time.perf_counter() - t0
        sweep_section = {
            "batch_size": batch_size,
            "epochs": sweep_epochs,
            "seeds": seeds,
            "learning_rates": list(sweep_learning_rates),
            "learns_threshold": LEARNS_THRESHOLD,
            "runs": entries,
            "max_stable_learning_rate": _stable_lr_band(
                [e["learning_rate"] for e in entries], [e["learns"] for e in entries]
            ),
        }

        # ---- long-run section and the accuracy one can claim
        n_long = long_run_epochs
        valid_curves = [[round(a, 5) for a in r["valid_accuracy"][:n_long]] for r in long_runs]
        train_curves = [[round(a, 5) for a in r["train_accuracy"][:n_long]] for r in long_runs]
        at10 = min(10, n_long) - 1
        train_end = [c[-1] for c in train_curves]
        valid_end = [c[-1] for c in valid_curves]
        gap = min(train_end) - max(valid_end)
        long_section = {
            "epochs": n_long,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "seeds": seeds,
            "valid_accuracy": valid_curves,
            "train_accuracy": train_curves,
            "final_cost": [r["costs"][n_long - 1] for r in long_runs],
            "claimed_accuracy": {
                "valid_low": min(c[at10] for c in valid_curves),
                "valid_high": max(max(c) for c in valid_curves),
                "train_high": max(max(c) for c in train_curves),
                "train_at_end": train_end,
                "valid_at_end": valid_end,
            },
            "separation": {
                "min_train_minus_max_valid_at_end": round(gap, 5),
                "per_seed_gap_at_end": [
                    round(t - v, 5) for t, v in zip(train_end, valid_end, strict=True)
                ],
                "separable": gap > 0,
                "max_valid_over_all_epochs_below_min_train_at_end": max(
                    max(c) for c in valid_curves
                )
                < min(train_end),
            },
        }

    timings["total"] = time.perf_counter() - started
    return {
        "data_sha256": sha256,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "seeds": seeds,
        "threads": 1,
        "settings": {
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "grading_epochs": grading_epochs,
            "baseline_epochs": baseline_epochs,
            "long_run_epochs": long_run_epochs,
            "sweep_epochs": sweep_epochs,
            "sweep_learning_rates": list(sweep_learning_rates),
            "random_seeds": random_seeds,
            "hidden_layers": 2,
            "width": 16,
        },
        "random_accuracy": random_section,
        "baseline": baseline_section,
        "grading": grading_section,
        "lr_sweep": sweep_section,
        "long_run": long_section,
        "timings_seconds": {k: round(v, 3) for k, v in timings.items()},
    }


def verify_calibration(
    dataset_path: str | os.PathLike[str], calibration: dict[str, Any]
) -> list[str]:
    """Re-run the reference where the grader's thresholds apply; the problems found (empty if none).

    Checks the data file's sha256 against the calibration's, and that seed 0 still meets
    ``grading.pipeline_threshold`` (2 hidden layers), ``grading.model3_threshold``
    (3 hidden layers) and ``baseline.valid_accuracy_threshold``. About 16 epochs of training.
    """
    problems: list[str] = []
    data = load_mnist(dataset_path)
    sha = file_sha256(dataset_path)
    if calibration.get("data_sha256") not in (None, sha):
        problems.append(
            f"data sha256 {sha} differs from the calibrated {calibration['data_sha256']}"
        )
    settings = calibration.get("settings", {})
    lr = float(settings.get("learning_rate", 0.05))
    batch = int(settings.get("batch_size", 100))
    grading = calibration["grading"]
    baseline = calibration["baseline"]
    checks = [
        ("grading run, 2 hidden layers", 2, int(grading["epochs"]), grading["pipeline_threshold"]),
        ("grading run, 3 hidden layers", 3, int(grading["epochs"]), grading["model3_threshold"]),
        ("baseline run", 2, int(baseline["epochs"]), baseline["valid_accuracy_threshold"]),
    ]
    for label, layers, epochs, threshold in checks:
        run = run_experiment(lr, batch, epochs, 0, data, hidden_layers=layers)
        got = run["valid_accuracy"][-1]
        if got < float(threshold):
            problems.append(f"{label}: valid accuracy {got:.4f} < threshold {float(threshold):.4f}")
    return problems


def write_calibration(result: dict[str, Any], out: str | os.PathLike[str]) -> None:
    """Write ``result`` as pretty, key-sorted JSON with a trailing newline, atomically."""
    out = Path(out)
    text = json.dumps(result, indent=2, sort_keys=True, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; this is a file meant to be read
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cal = sub.add_parser("calibrate", help="run the reference experiments, write calibration.json")
    cal.add_argument("--data", default=os.environ.get("MNIST_PATH"), help="mnist.pkl.gz")
    cal.add_argument(
        "--out", default=str(Path(__file__).with_name("calibration.json")), help="output JSON"
    )
    cal.add_argument("--seeds", default="0,1,2", help="comma-separated torch seeds")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("give --data or set MNIST_PATH")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    result = calibrate(
        args.data, seeds=seeds, progress=lambda m: print(m, file=sys.stderr, flush=True)
    )
    write_calibration(result, args.out)
    print(f"wrote {args.out} in {result['timings_seconds']['total']:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
