"""What the clean process does with a student's model class: build it, run it, train it.

The grader's harness (grader/harness.py) executes the student's class (with its helpers and
the instructor's context cells) and calls ``run(namespace, payload)``; what it returns is
plain data the grader reads as the student's answer. Nothing here decides a grade: the
grader compares that data with the reference, in its own process. This file is sent to the
process as text; no copy of it is left where the student's code runs.
"""

import gzip
import pickle

import torch  # loaded once by a fork server, before any student's code

_DATA: dict = {}  # the data set by path, loaded by prepare() in a fork server


def _load_data(path):
    allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed")
            return super().find_class(module, name)

    with gzip.open(path, "rb") as handle:
        return Restricted(handle, encoding="latin-1").load()


def prepare(payload):
    """Called once by the grader's fork server before it forks a process per student: every
    later run shares the data set loaded here (nothing of a student's is here yet)."""
    _training_data(payload["data_path"])


def _training_data(path):
    if path not in _DATA:
        _DATA[path] = _load_data(path)[0]
    return _DATA[path]


def _train(model, images, labels, epochs, batch_size, learning_rate):
    """The lesson's training loop: in-order batches, manual SGD, summed squared error."""
    import torch.nn.functional as F

    for _ in range(epochs):
        for i in range((len(images) - 1) // batch_size + 1):
            xb = torch.tensor(images[i * batch_size : (i + 1) * batch_size])
            yb = F.one_hot(torch.tensor(labels[i * batch_size : (i + 1) * batch_size]), 10)
            pred = model(xb)
            cost = torch.nn.MSELoss(reduction="sum")(pred, yb.float())
            cost.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= p.grad * learning_rate
                model.zero_grad()


def _error(exc):
    return f"{type(exc).__name__}: {exc}"[-500:]


def run(namespace, payload):
    """{"shapes": [...], "initial": [arrays], "outputs": array, "trained": [arrays]}, as far
    as it got, and "error" when a step failed. The outputs are computed with the grader's
    weights when the shapes match them, else with the model's own initial weights."""
    import torch

    torch.set_num_threads(1)
    result = {}
    cls = namespace.get(payload["class_name"])
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        result["error"] = f"{payload['class_name']} is not a subclass of nn.Module"
        return result
    try:
        torch.manual_seed(payload["seed"])
        model = cls()
        params = list(model.parameters())
        result["shapes"] = [list(p.shape) for p in params]
        weights = payload["weights"]
        with torch.no_grad():
            if [list(w.shape) for w in weights] == result["shapes"]:
                for p, w in zip(params, weights, strict=True):
                    p.copy_(torch.as_tensor(w))
            result["initial"] = [p.detach().numpy().copy() for p in params]
            result["outputs"] = model(torch.as_tensor(payload["images"])).detach().numpy()
        torch.manual_seed(payload["seed"])
        model = cls()
        train_x, train_y = _training_data(payload["data_path"])
        train = payload["train"]
        _train(model, train_x, train_y, train["epochs"], train["batch_size"], train["learning_rate"])
        result["trained"] = [p.detach().numpy() for p in model.parameters()]
    except BaseException as exc:  # the student's code may raise anything, even SystemExit
        result["error"] = _error(exc)
    return result
