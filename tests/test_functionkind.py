"""The function kind for real: student functions called in the sandboxed clean process."""

from pathlib import Path

import numpy as np
import pytest

from grader import sandbox as sb
from grader.checking import Answer, CheckContext
from grader.clean import make_runner
from grader.errors import ExecutionError
from grader.forkserver import ForkServer
from grader.functions import Case, compare, first_mismatch
from grader.spec import Question


@pytest.fixture(params=["started", "forked"])
def ctx(request, spec, tmp_path):
    """A clean process started for each request, or forked by a server (bwrap only)."""
    limits = spec.sandbox

    def factory(workdir: Path):
        return sb.Sandbox(limits=limits, workdir=workdir, hidden=[spec.root.resolve()])

    if request.param == "started":
        yield CheckContext(spec, None, tmp_path / "cache", make_runner(factory, None, None, tmp_path))
        return
    if factory(tmp_path).mode != sb.MODE_BWRAP:
        pytest.skip("the fork server needs bubblewrap")
    server = ForkServer(factory, None, None, tmp_path)
    yield CheckContext(spec, None, tmp_path / "cache", server)
    assert server.forking
    server.close()


def answer(source: str, name: str = "f") -> Answer:
    return Answer(Question(id=name, kind="function", points=1), True, None, source)


SIGMOID = "import numpy as np\n\ndef f(z):\n    return 1 / (1 + np.exp(-z))"


def test_calls_the_function_on_the_checks_inputs(ctx):
    rng = np.random.default_rng(0)
    cases = [
        Case((rng.normal(size=(4, 3)),), label="a batch"),
        Case((np.zeros((0, 3)),), label="an empty batch"),
        Case((np.array([-800.0, 0.0, 800.0]),), label="extreme values"),
        Case((0.0,), label="a number"),
    ]
    results = ctx.call_function(answer(SIGMOID), cases)
    with np.errstate(over="ignore"):
        expected = [1 / (1 + np.exp(-np.asarray(c.args[0]))) for c in cases]
    assert first_mismatch(results, expected, rtol=1e-12) is None
    assert isinstance(results[0].value, np.ndarray) and results[0].value.shape == (4, 3)
    assert results[3].value == 0.5
    assert all(r.changed_arguments() == [] for r in results)


def test_errors_in_place_changes_and_prints(ctx):
    source = (
        "import json\n"
        "def f(x, scale=1):\n"
        "    print(json.dumps({'case': 0, 'value': 42}))  # a forged line goes to stderr\n"
        "    if len(x) == 1:\n"
        "        raise ValueError('one sample')\n"
        "    x *= scale\n"
        "    return x.sum()"
    )
    cases = [Case((np.ones(3),), {"scale": 2}), Case((np.ones(1),)), Case((np.ones(2),))]
    first, second, third = ctx.call_function(answer(source), cases)
    assert first.ok and first.value == 6.0
    assert first.changed_arguments() == ["argument 1"]
    assert np.array_equal(cases[0].args[0], np.ones(3))  # the grader's copy is untouched
    assert second.error == "ValueError: one sample"
    assert third.ok and third.changed_arguments() == []


def test_what_the_process_sees(ctx):
    source = (
        "import os, sys\n"
        "def f():\n"
        "    frames, frame = [], sys._getframe()\n"
        "    while frame is not None:\n"
        "        frames.append(sorted(k for k in frame.f_locals if isinstance(k, str)))\n"
        "        frame = frame.f_back\n"
        "    return {'files': sorted(os.listdir('.')), 'argv': sys.argv, 'frames': frames}"
    )
    (result,) = ctx.call_function(answer(source), [Case()])
    assert result.ok, result.error
    assert [f for f in result.value["files"] if not f.startswith(".")] == []  # no harness
    text = repr(result.value)
    for secret in ("nonce", "marker", "expected", "reference"):
        assert secret not in text


def test_a_hanging_or_dying_function(ctx):
    source = "import os\ndef f(x):\n    if x == 2:\n        os._exit(3)\n    return x"
    results = ctx.call_function(answer(source), [Case((1,)), Case((2,)), Case((3,))])
    assert results[0].value == 1
    assert results[1].error is not None and "exit code 3" in results[1].error
    assert results[2].error == results[1].error
    hang = answer("def f():\n    while True:\n        pass")
    (result,) = ctx.call_function(hang, [Case()], timeout=3)
    assert "timeout" in (result.error or "")


def test_a_module_that_fails_and_a_missing_function(ctx):
    (broken,) = ctx.call_function(answer("@undefined\ndef f():\n    pass"), [Case()])
    assert "NameError" in (broken.error or "")
    (missing,) = ctx.call_function(answer("def g():\n    pass"), [Case()])
    assert missing.error == "NameError: f is not a function"
    (absent,) = ctx.call_function(Answer(Question(id="f", kind="function", points=1), False), [Case()])
    assert absent.error == "no function f was found"


def test_run_task(ctx, tmp_path):
    task = tmp_path / "task.py"
    task.write_text("def run(namespace, payload):\n    return namespace['f'](payload['x']) * 2\n")
    assert ctx.run_task(answer("def f(x):\n    return x + 1"), task, {"x": np.arange(3)}).tolist() == [2, 4, 6]
    with pytest.raises(ExecutionError, match="ZeroDivisionError"):
        ctx.run_task(answer("def f(x):\n    return 1 / 0"), task, {"x": 1})


def test_nan_and_infinity_arguments_reach_the_function_as_floats(ctx):
    """JSON holds no NaN: the codec alone turned a float('nan') argument into a dict."""
    source = "def f(x, y=0.0):\n    return [type(x).__name__, x, y]"
    cases = [Case((float("nan"),), {"y": float("-inf")}), Case(([1.0, float("inf")],))]
    first, second = ctx.call_function(answer(source), cases)
    assert first.ok and first.value[0] == "float", first.value
    assert compare(first.value, ["float", float("nan"), float("-inf")]) is None
    assert first.changed_arguments() == []  # NaN after the call is the NaN it was given
    assert second.ok and compare(second.value, ["list", [1.0, float("inf")], 0.0]) is None
