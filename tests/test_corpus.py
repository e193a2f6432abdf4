"""The corpus: every common mistake and known exploit, graded by real kernels on real MNIST,
compared with its exact expected score."""

import json
from pathlib import Path

import pytest

from grader.batch import BatchOptions, grade_batch

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def test_corpus_is_current(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("corpus_build", CORPUS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.build(tmp_path)
    assert expected == json.loads((CORPUS / "expected.json").read_text())
    for path in sorted(tmp_path.glob("*.ipynb")):
        committed = CORPUS / "notebooks" / path.name
        assert committed.read_text() == path.read_text(), f"run `python tests/corpus/build.py --update` ({path.name})"
    assert len(expected) >= 25
    samples = module.build_samples(tmp_path / "samples")
    assert samples == json.loads((HERE / "samples" / "expected_mnist_nn.json").read_text())
    for path in sorted((tmp_path / "samples").glob("*.ipynb")):
        committed = HERE / "samples" / "mnist_nn" / path.name
        assert committed.read_text() == path.read_text(), f"run `python tests/corpus/build.py --update` ({path.name})"


@pytest.fixture(scope="module")
def corpus_results(spec, tmp_path_factory, grading_cache):
    out = tmp_path_factory.mktemp("corpus-out")
    batch = grade_batch(
        spec,
        [CORPUS / "notebooks"],
        out,
        BatchOptions(jobs=2, cache_dir=grading_cache, progress=False),
    )
    return {r.student: r for r in batch.results}, out


@pytest.mark.slow
def test_corpus_scores_exactly(corpus_results):
    results, _ = corpus_results
    expected = json.loads((CORPUS / "expected.json").read_text())
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


@pytest.mark.slow
def test_corpus_reports_what_happened(corpus_results):
    results, out = corpus_results
    assert results["locked_cost_func_returns_zero"].changed_cells
    assert results["locked_accuracy_returns_one_metadata_stripped"].changed_cells
    assert results["solution"].changed_cells == []
    percent = results["random_accuracy_percent"].question("random_model_accuracy")
    assert percent is not None and "percentage" in percent.checks[0].note
    train = results["claims_training_accuracy"].question("claimed_accuracy")
    assert train is not None and "training set" in train.checks[0].message
    twice = results["answer_assigned_twice_unmarked"]
    assert any("graded as the answer to 'first_nine_index'" in w and "the last of 2" in w for w in twice.warnings)
    colab = results["colab_rewritten_answer_cells"]
    assert colab.changed_cells == [] and sum("graded as the answer" in w for w in colab.warnings) == 2
    died = results["exits_early_after_answers"]
    assert any("died" in line for line in died.log + died.warnings)
    for name in ("grades.csv", "manual.csv", "run.log", "gradebook.sqlite"):
        assert (out / name).is_file()
    assert (out / "feedback" / "solution.html").is_file()
