"""Runs a student's model class in a clean sandboxed process and reports plain data.

The grader copies this file, `student.py` (the instructor's context cells followed by the
student's class, nothing else from the notebook) and the data set into a fresh directory and
runs `python -I class_task.py` inside the sandbox. The payload arrives on stdin as JSON; the
result leaves as one line `<marker> <json>` on stdout. Nothing here decides a grade: the
grader compares the data it returns with the reference, in its own process.
"""

import base64
import gzip
import json
import pickle
import sys
import traceback


def _encode(array):
    import numpy as np

    array = np.ascontiguousarray(array)
    return {
        "__ndarray__": {
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "b64": base64.b64encode(array.tobytes()).decode("ascii"),
        }
    }


def _decode(data):
    import numpy as np

    payload = data["__ndarray__"]
    raw = base64.b64decode(payload["b64"])
    return np.frombuffer(raw, dtype=np.dtype(payload["dtype"])).reshape(payload["shape"]).copy()


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


def _train(model, images, labels, epochs, batch_size, learning_rate):
    """The lesson's training loop: in-order batches, manual SGD, summed squared error."""
    import torch
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


def main():
    payload = json.loads(sys.stdin.read())
    marker = payload["marker"]
    result = {}
    try:
        import torch

        torch.set_num_threads(1)
        (train_x, train_y), _, _ = _load_data(payload["data_path"])
        namespace = {"__name__": "student"}
        with open("student.py", encoding="utf-8") as handle:
            code = compile(handle.read(), "student.py", "exec")
        exec(code, namespace)
        cls = namespace.get(payload["class_name"])
        if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
            raise TypeError(f"{payload['class_name']} is not a subclass of nn.Module")
        torch.manual_seed(payload["seed"])
        model = cls()
        params = list(model.parameters())
        result["shapes"] = [list(p.shape) for p in params]
        weights = [_decode(w) for w in payload["weights"]]
        if [list(w.shape) for w in weights] == result["shapes"]:
            with torch.no_grad():
                for p, w in zip(params, weights, strict=True):
                    p.copy_(torch.as_tensor(w))
                out = model(torch.as_tensor(_decode(payload["images"])))
            result["outputs"] = _encode(out.detach().numpy())
            torch.manual_seed(payload["seed"])
            model = cls()
            train = payload["train"]
            _train(
                model,
                train_x,
                train_y,
                train["epochs"],
                train["batch_size"],
                train["learning_rate"],
            )
            result["trained"] = [_encode(p.detach().numpy()) for p in model.parameters()]
    except BaseException as exc:  # the student's code may raise anything, even SystemExit
        lines = traceback.format_exception_only(type(exc), exc)
        result["error"] = "".join(lines).strip()[-500:]
    sys.stdout.write("\n" + marker + " " + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
