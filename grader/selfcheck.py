"""Answer extraction and public self-checks: the one module that runs in a student's kernel.

This file is self-contained on purpose (standard library only; numpy and torch are used when
the student's notebook has them). It is used three ways:

* the grader sends its source into the grading kernel to turn the student's answers into
  plain JSON data (numbers, strings, lists, dicts, arrays as base64 bytes: nothing that needs
  unpickling) — the grade itself is decided outside the kernel;
* ``grader release`` copies it beside the template as ``selfcheck.py`` with the assignment's
  PUBLIC checks filled in, so ``selfcheck.check(globals())`` works from a notebook cell in
  Jupyter or Colab;
* ``grader check`` runs that same check in the kernel after executing the notebook.

Public checks contain no answers: value answers are compared through salted hashes of a
normalised form, other questions are checked for form only.
"""

from __future__ import annotations

import base64
import hashlib
import json  # noqa: F401  (the released copy reads PUBLIC_CHECKS with it)
import math
from typing import Any

ARRAY_KEY = "__ndarray__"
UNSUPPORTED_KEY = "__unsupported__"
MAX_ELEMENTS = 5_000_000
MAX_DEPTH = 20
MIME = "application/vnd.grader.answers+json"

# Filled in by `grader release`: {"assignment": id, "salt": hex, "questions": {id: rule}}.
PUBLIC_CHECKS: dict[str, Any] = {}


def _array_payload(array: Any) -> dict[str, Any]:
    import numpy as np

    array = np.array(array, order="C", copy=True)
    if array.dtype.kind not in "biuf" or array.size > MAX_ELEMENTS:
        return {UNSUPPORTED_KEY: f"array of {array.dtype} with {array.size} elements"}
    return {
        ARRAY_KEY: {
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "b64": base64.b64encode(array.tobytes()).decode("ascii"),
        }
    }


def _tensor_to_numpy(value: Any) -> Any:
    import torch

    disable = getattr(torch._C, "DisableTorchFunctionSubclass", None)
    if disable is not None:
        with disable():
            return torch.Tensor.numpy(torch.Tensor.cpu(torch.Tensor.detach(value)))
    return value.detach().cpu().numpy()


def encode(value: Any, depth: int = 0) -> Any:
    """Plain JSON data for a student's answer. Subclasses are reduced to their base type."""
    if depth > MAX_DEPTH:
        return {UNSUPPORTED_KEY: "nested too deeply"}
    if value is None or type(value) in (bool, int, str):
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        number = float.__float__(value)
        return number if math.isfinite(number) else {UNSUPPORTED_KEY: repr(number)}
    if isinstance(value, str):
        return str.__str__(value)
    module = type(value).__module__ or ""
    if module.startswith("torch") or any(
        c.__module__.startswith("torch") and c.__name__ == "Tensor" for c in type(value).__mro__
    ):
        try:
            import torch

            if isinstance(value, torch.Tensor):
                return _array_payload(_tensor_to_numpy(value))
        except Exception as exc:  # a broken tensor is the student's answer, not our crash
            return {UNSUPPORTED_KEY: f"tensor that could not be read: {exc}"}
    if module.startswith("numpy"):
        try:
            import numpy as np

            if isinstance(value, np.generic):
                return encode(value.item(), depth + 1)
            if isinstance(value, np.ndarray):
                return _array_payload(np.asarray(value))
        except Exception as exc:
            return {UNSUPPORTED_KEY: f"array that could not be read: {exc}"}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in list(dict.items(value))[:1000]:
            out[str(key) if isinstance(key, (str, int, float)) else repr(key)] = encode(
                item, depth + 1
            )
        return out
    if isinstance(value, (list, tuple)):
        items = list.__iter__(value) if isinstance(value, list) else tuple.__iter__(value)
        return [encode(item, depth + 1) for _, item in zip(range(100_000), items, strict=False)]
    return {UNSUPPORTED_KEY: type(value).__name__}


def encode_model(value: Any) -> Any:
    """A torch module's state as {name: array}; anything else is unsupported."""
    try:
        import torch

        if isinstance(value, torch.nn.Module):
            state = torch.nn.Module.state_dict(value)
            encoded = {k: encode(v) for k, v in state.items()}
            return {"class": type(value).__name__, "state": encoded}
    except Exception as exc:
        return {UNSUPPORTED_KEY: f"model that could not be read: {exc}"}
    return {UNSUPPORTED_KEY: type(value).__name__}


def extract(namespace: dict[str, Any], values: list[str], models: list[str]) -> dict[str, Any]:
    """The answers in a namespace: {"values": {name: data}, "models": {...}, "missing": [...]}."""
    out: dict[str, Any] = {"values": {}, "models": {}, "missing": []}
    for name in values:
        if name in namespace:
            out["values"][name] = encode(namespace[name])
        else:
            out["missing"].append(name)
    for name in models:
        if name in namespace:
            out["models"][name] = encode_model(namespace[name])
        else:
            out["missing"].append(name)
    return out


def emit(payload: dict[str, Any]) -> None:
    """Send data out of the kernel as one display message of the grader's own type."""
    from IPython.display import display

    display({MIME: payload, "text/plain": "grader answers"}, raw=True)


# ----------------------------------------------------------------------------- public checks


def _flatten(data: Any) -> list[float] | None:
    if isinstance(data, bool):
        return [1.0 if data else 0.0]
    if isinstance(data, (int, float)):
        return [float(data)]
    if isinstance(data, dict) and ARRAY_KEY in data:
        import numpy as np

        arr = decode_array(data[ARRAY_KEY])
        return [float(x) for x in np.asarray(arr, dtype=float).ravel()]
    if isinstance(data, list):
        flat: list[float] = []
        for item in data:
            part = _flatten(item)
            if part is None:
                return None
            flat.extend(part)
        return flat
    return None


def canonical(data: Any, decimals: int = 6) -> str | None:
    """The normalised text of a numeric answer: 4 == 4.0 == tensor(4) == [4]. Six decimals,
    near the hidden checks' 1e-6 tolerance, so a self-check pass is not a hidden fail."""
    flat = _flatten(data)
    if flat is None:
        return None
    parts = []
    for x in flat:
        rounded = round(x, decimals)
        parts.append(repr(0.0 if rounded == 0 else rounded))
    return ",".join(parts)


def salted_hash(salt: str, qid: str, text: str) -> str:
    return hashlib.sha256(f"{salt}:{qid}:{text}".encode()).hexdigest()


def decode_array(payload: dict[str, Any]) -> Any:
    import numpy as np

    dtype = np.dtype(payload["dtype"])
    if dtype.kind not in "biuf":
        raise ValueError(f"refusing array dtype {dtype}")
    shape = tuple(int(s) for s in payload["shape"])
    raw = base64.b64decode(payload["b64"], validate=True)
    count = 1
    for s in shape:
        count *= s
    if count * dtype.itemsize != len(raw):
        raise ValueError("array payload does not match its shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _number(data: Any) -> float | None:
    flat = _flatten(data)
    if flat is None or len(flat) != 1:
        return None
    return flat[0]


def _check_form(rule: dict[str, Any], data: Any, namespace: dict[str, Any] | None) -> str | None:
    """None when the answer has the right form, else what is wrong."""
    form = rule.get("type")
    if form == "number":
        number = _number(data)
        if number is None:
            return "should be a single number"
        low, high = rule.get("min"), rule.get("max")
        if (low is not None and number < low) or (high is not None and number > high):
            return f"should be a number between {low} and {high}"
        return None
    if form == "sequence":
        flat = _flatten(data)
        if flat is None:
            return "should be a list (or array) of numbers"
        if "length" in rule and len(flat) != rule["length"]:
            return f"should hold {rule['length']} numbers, not {len(flat)}"
        return None
    if form == "dict":
        if not isinstance(data, dict) or ARRAY_KEY in data:
            return "should be a dict"
        missing = [k for k in rule.get("keys", []) if k not in data]
        if missing:
            return f"is missing the key(s) {', '.join(missing)}"
        for key in rule.get("keys", []):
            item = data[key]
            if not isinstance(item, dict):
                return f"{key!r} should be a dict"
            absent = [k for k in rule.get("item_keys", []) if k not in item]
            if absent:
                return f"{key!r} is missing {', '.join(absent)}"
            for field in rule.get("numeric_item_keys", []):
                if _number(item.get(field)) is None:
                    return f"{key!r}: {field} should be a number"
        return None
    if form == "class":
        if namespace is None:
            return None
        return _check_class_form(rule, namespace)
    if form == "function":
        if namespace is None:
            return None
        return _check_function_form(rule, namespace)
    return None


def _check_function_form(rule: dict[str, Any], namespace: dict[str, Any]) -> str | None:
    """The function exists and takes the arguments the spec names (it is not called)."""
    import inspect

    name = rule["name"]
    func = namespace.get(name)
    if not callable(func) or isinstance(func, type):
        return f"no function named {name} is defined"
    wanted = rule.get("arguments")
    if wanted is not None:
        try:
            signature = inspect.signature(func)
            signature.bind(*wanted)
        except (TypeError, ValueError):
            return f"{name} should take the arguments ({', '.join(wanted)})"
    return None


def _check_class_form(rule: dict[str, Any], namespace: dict[str, Any]) -> str | None:
    name = rule["name"]
    cls = namespace.get(name)
    if not isinstance(cls, type):
        return f"no class named {name} is defined"
    try:
        import torch

        if not issubclass(cls, torch.nn.Module):
            return f"{name} should be a subclass of nn.Module"
        model = cls()
        with torch.no_grad():
            out = model(torch.zeros(rule["input_shape"]))
        expected = list(rule["output_shape"])
        if not isinstance(out, torch.Tensor) or list(out.shape) != expected:
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return f"{name}()(x) returned {shape}, expected a tensor of shape {expected}"
    except Exception as exc:
        return f"building or running {name} failed: {type(exc).__name__}: {exc}"
    return None


def run_public_checks(
    answers: dict[str, Any], public: dict[str, Any], namespace: dict[str, Any] | None = None
) -> list[dict[str, str]]:
    """Results of the public checks on extracted answers: [{id, status, message}]."""
    results = []
    salt = public.get("salt", "")
    values = answers.get("values", {})
    for qid, rule in public.get("questions", {}).items():
        variable = rule.get("variable", qid)
        form_type = rule.get("form", {}).get("type") or rule.get("type")
        if form_type in ("class", "function"):
            problem = _check_form(rule.get("form", rule), None, namespace)
            if namespace is None:
                status, message = "form ok", "is checked when graded"
            elif problem:
                status, message = "fail", problem
            elif form_type == "class":
                status, message = "form ok", "builds, and its output has the expected shape (graded later)"
            else:
                status, message = "form ok", "is defined with the expected arguments (graded later)"
            results.append({"id": qid, "status": status, "message": message})
            continue
        if variable not in values:
            message = f"{variable} is not defined"
            results.append({"id": qid, "status": "missing", "message": message})
            continue
        data = values.get(variable)
        if data == {UNSUPPORTED_KEY: "ellipsis"}:
            results.append({"id": qid, "status": "missing", "message": "not answered yet"})
            continue
        if isinstance(data, dict) and UNSUPPORTED_KEY in data:
            results.append(
                {
                    "id": qid,
                    "status": "fail",
                    "message": f"{variable} holds a {data[UNSUPPORTED_KEY]}, "
                    "which cannot be graded",
                }
            )
            continue
        problem = _check_form(rule.get("form", rule), data, namespace)
        if problem:
            results.append({"id": qid, "status": "fail", "message": f"{variable} {problem}"})
            continue
        if "hash" in rule:
            text = canonical(data)
            ok = text is not None and salted_hash(salt, qid, text) == rule["hash"]
            hint = rule.get("hint", "")
            results.append(
                {
                    "id": qid,
                    "status": "pass" if ok else "fail",
                    "message": "matches the expected answer" if ok else f"not right yet. {hint}",
                }
            )
        else:
            results.append(
                {"id": qid, "status": "form ok", "message": "has the right form (graded later)"}
            )
    return results


def format_results(results: list[dict[str, str]]) -> str:
    width = max((len(r["id"]) for r in results), default=10)
    lines = [f"{r['id']:<{width}}  {r['status']:<8}  {r['message']}" for r in results]
    return "\n".join(lines)


def check(namespace: dict[str, Any], public: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Check the answers in a notebook's namespace: ``selfcheck.check(globals())``."""
    public = public if public is not None else PUBLIC_CHECKS
    if not public:
        print("No public checks are bundled with this copy of selfcheck.py.")
        return []
    variables = [r.get("variable", q) for q, r in public.get("questions", {}).items()]
    answers = extract(namespace, variables, [])
    results = run_public_checks(answers, public, namespace)
    print(format_results(results))
    return results

