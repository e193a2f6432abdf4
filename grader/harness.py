"""The program that runs a student's code in the clean process. It decides nothing.

The grader starts it as ``python -I -c <this file's text>`` inside the sandbox, so no copy of
it lies in the working folder, and sends one JSON request on stdin:

* ``codec``: the text of grader/selfcheck.py (the same plain-data encoding the kernel uses);
* ``source``: the student's code (their definition with its helpers, imports and constants);
* ``mode``: ``"call"`` (call the function ``name`` on each of ``cases``) or ``"task"`` (run
  the assignment's ``task`` module: its ``run(namespace, payload)`` returns plain data).

Everything in this process is as untrusted as the student's kernel: it holds no secret and
prints no verdict. It writes JSON lines (one per case, or one for the task) on its original
stdout; the student's own prints go to stderr. The grader reads those lines as the student's
answer, capped in size before decoding, and computes every expected value in its own process.
"""

import json
import os
import sys
import traceback
import types
from typing import Any, TextIO

MAX_REQUEST = 256 * 1024 * 1024


def _error(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[-800:]


def _decode(codec: Any, data: Any) -> Any:
    """JSON data to values: arrays back to numpy arrays; tuples stay lists."""
    if isinstance(data, dict):
        if codec.ARRAY_KEY in data:
            return codec.decode_array(data[codec.ARRAY_KEY])
        if set(data) == {"__float__"}:  # grader/clean.py FLOAT_KEY: a NaN or an infinity
            return float(data["__float__"])
        return {k: _decode(codec, v) for k, v in data.items()}
    if isinstance(data, list):
        return [_decode(codec, v) for v in data]
    return data


def _call(codec: Any, namespace: dict[str, Any], request: dict[str, Any], out: TextIO) -> None:
    name = request["name"]
    func = namespace.get(name)
    for index, case in enumerate(request["cases"]):
        line: dict[str, Any] = {"case": index}
        if not callable(func):
            line["error"] = f"NameError: {name} is not a function"
        else:
            args = [_decode(codec, a) for a in case.get("args", [])]
            kwargs = {k: _decode(codec, v) for k, v in case.get("kwargs", {}).items()}
            try:
                line["value"] = codec.encode(func(*args, **kwargs))
            except BaseException as exc:  # the student's code may raise anything, even SystemExit
                line["error"] = _error(exc)
            line["args"] = [codec.encode(a) for a in args]
            line["kwargs"] = {k: codec.encode(v) for k, v in kwargs.items()}
        out.write(json.dumps(line) + "\n")
        out.flush()


def _task(codec: Any, namespace: dict[str, Any], request: dict[str, Any], out: TextIO) -> None:
    task = types.ModuleType("task")
    exec(compile(request["task"], "task.py", "exec"), task.__dict__)
    line: dict[str, Any] = {"case": 0}
    try:
        line["value"] = codec.encode(task.run(namespace, _decode(codec, request["payload"])))
    except BaseException as exc:
        line["error"] = _error(exc)
    out.write(json.dumps(line) + "\n")
    out.flush()


def main() -> None:
    request = json.loads(sys.stdin.buffer.read(MAX_REQUEST))
    codec = types.ModuleType("grader_codec")
    exec(compile(request["codec"], "selfcheck.py", "exec"), codec.__dict__)
    # Our lines go to the original stdout; whatever the student prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    namespace: dict[str, Any] = {"__name__": "student"}
    try:
        exec(compile(request["source"], "student.py", "exec"), namespace)
    except BaseException as exc:
        out.write(json.dumps({"case": -1, "error": _error(exc)}) + "\n")
        out.flush()
        return
    if request["mode"] == "call":
        _call(codec, namespace, request, out)
    else:
        _task(codec, namespace, request, out)


if __name__ == "__main__":
    main()
