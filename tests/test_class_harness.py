"""The class check through the clean process, for real (sandbox, real MNIST, training):
the #12 forger finds nothing to forge, and a wrong-width model earns the "trains" point."""

import importlib.util
from pathlib import Path

import pytest

from grader.checking import Answer, find_class_source, load_module
from grader.grading import _context_sources, open_session

CORPUS = Path(__file__).resolve().parent / "corpus"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("corpus_build_classes", CORPUS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def session(spec, mnist_path, grading_cache):
    return open_session(spec, dataset=mnist_path, cache_dir=grading_cache)


def grade(session, student: str) -> dict[str, tuple[bool, str]]:
    q = session.spec.question("NN_Model3")
    source = find_class_source([student], q.variable)
    source = "\n\n".join([*_context_sources(session.template, q), source])
    checks = load_module(session.spec.checks_path, f"_grader_checks_{session.spec.id}")
    results = checks.NN_Model3(Answer(q, True, None, source), session.ctx(), dict(q.params))
    return {r.name: (r.passed, r.message) for r in results}


@pytest.mark.slow
def test_the_getframe_forger_finds_nothing(session, build):
    got = grade(session, build.MODEL3_FORGES_RESULT)
    assert {name: passed for name, (passed, _) in got.items()} == {
        "shapes": False,
        "same_outputs": False,
        "trains": False,
    }, got
    assert "2 hidden layers" in got["trains"][1]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "trains"), [("MODEL3_WIDER", True)])  # WIDE: the corpus
def test_wrong_width_is_judged_by_its_training(session, build, model, trains):
    got = grade(session, getattr(build, model))
    assert {name: passed for name, (passed, _) in got.items()} == {
        "shapes": False,
        "same_outputs": False,
        "trains": trains,
    }, got
    assert "validation accuracy" in got["trains"][1]
