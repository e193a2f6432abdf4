"""The second assignment, mnist_numpy: its corpus of mistakes and its samples graded by real
kernels and real clean processes on real MNIST, with exact expected points; its reference's
gradients checked against torch autograd and finite differences."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from grader.batch import BatchOptions, grade_batch
from grader.spec import load_spec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = HERE / "corpus_numpy"
SAMPLES = HERE / "samples" / "mnist_numpy"


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def numpy_reference():
    return _module("_mnist_numpy_reference", ROOT / "solutions" / "mnist_numpy" / "reference.py")


def test_numpy_corpus_is_current(tmp_path):
    build = _module("corpus_numpy_build", CORPUS / "build.py")
    expected = build.build(tmp_path / "corpus")
    assert expected == json.loads((CORPUS / "expected.json").read_text())
    for path in sorted((tmp_path / "corpus").glob("*.ipynb")):
        committed = CORPUS / "notebooks" / path.name
        assert committed.read_text() == path.read_text(), (
            f"run `python tests/corpus_numpy/build.py --update` ({path.name})"
        )
    samples = build.build_samples(tmp_path / "samples")
    assert samples == json.loads((HERE / "samples" / "expected_mnist_numpy.json").read_text())
    for path in sorted((tmp_path / "samples").glob("*.ipynb")):
        assert (SAMPLES / path.name).read_text() == path.read_text(), path.name
    # every mistake the issue names has its case
    for name in (
        "backward_transposed_weights",
        "backward_no_sigmoid_derivative",
        "backward_missing_factor_2",
        "backward_bias_not_summed",
        "sgd_step_in_place",
        "blank_template",
        "solution",
    ):
        assert name in expected


def test_reference_backward_agrees_with_autograd_and_finite_differences(numpy_reference):
    ref = numpy_reference
    rng = np.random.default_rng(7)
    params = ref.init_params(3)
    x, target = rng.random((5, 784)), ref.one_hot(rng.integers(0, 10, size=5))
    grads = ref.backward(params, ref.forward(params, x), target)
    autograd = ref.autograd_gradients(params, x, target)
    for name, value in params.items():
        assert grads[name].shape == value.shape
        np.testing.assert_allclose(grads[name], autograd[name], rtol=1e-10, atol=1e-14)
        index = tuple(int(rng.integers(0, n)) for n in value.shape)
        slope = ref.finite_difference(params, x, target, name, index)
        assert abs(grads[name][index] - slope) <= 1e-6 + 1e-4 * abs(slope)
    # a wrong gradient is caught by both
    assert not np.allclose(grads["W3"] / 2, autograd["W3"], rtol=1e-5)


def test_reference_edge_cases(numpy_reference):
    ref = numpy_reference
    assert ref.one_hot(np.zeros(0, dtype=np.int64)).shape == (0, 10)
    assert ref.cost(np.zeros((0, 10)), np.zeros((0, 10))) == 0.0
    with np.errstate(over="raise", invalid="raise"):  # no overflow or nan at the extremes
        np.testing.assert_array_equal(
            ref.sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0]
        )
    params = ref.init_params(0)
    before = {k: v.copy() for k, v in params.items()}
    ref.sgd_step(params, params, 0.5)
    assert all(np.array_equal(before[k], params[k]) for k in params)


@pytest.mark.slow
def test_numpy_corpus_and_samples_score_exactly(tmp_path, grading_cache):
    """One batch, two workers: every case and sample gets exactly its expected points."""
    spec = load_spec(ROOT / "solutions" / "mnist_numpy")
    batch = grade_batch(
        spec,
        [CORPUS / "notebooks", SAMPLES],
        tmp_path / "out",
        BatchOptions(jobs=2, cache_dir=grading_cache, progress=False),
    )
    results = {r.student: r for r in batch.results}
    expected = json.loads((CORPUS / "expected.json").read_text())
    expected.update(json.loads((HERE / "samples" / "expected_mnist_numpy.json").read_text()))
    assert set(results) == set(expected)
    wrong = []
    for name, points in sorted(expected.items()):
        result = results[name]
        got = {q.id: q.points for q in result.questions if q.id in points}
        if got != points:
            detail = {
                q.id: (q.points, [c.message for c in q.checks if not c.passed] or q.message)
                for q in result.questions
                if q.id in points and q.points != points[q.id]
            }
            wrong.append(f"{name}: {detail}; warnings={result.warnings}; log={result.log[-3:]}")
    assert not wrong, "\n".join(wrong)
    # the messages name the mistake, not just "wrong"
    half = results["backward_missing_factor_2"].question("backward")
    assert half is not None and any("half" in c.message for c in half.checks if not c.passed)
    in_place = results["sgd_step_in_place"].question("sgd_step")
    assert in_place is not None and any("in place" in c.message for c in in_place.checks)
