"""What of a student's cells goes with their class into the clean process (a pure rule)."""

import pytest

from grader.checking import find_class_source

CLASS = "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.a = nn.Linear(784, WIDTH)"


@pytest.mark.parametrize(
    ("sources", "kept", "dropped"),
    [
        ([CLASS], [CLASS], []),
        (["WIDTH = 16", CLASS], ["WIDTH = 16", CLASS], []),
        (["def act(x):\n    return x.sigmoid()\n\n" + CLASS], ["def act(x):", CLASS], []),
        (["from google.colab import drive\n" + CLASS], ["try:\n    from google.colab import drive\nexcept ImportError:"], []),
        (["model = M()\ntrain_model(100, 100, 0.05, image_train, label_train, model)\n" + CLASS], [CLASS], ["train_model", "model = M()"]),
        (["import torch as _t\n_t.allclose = lambda *a, **k: True\n" + CLASS], [CLASS], ["allclose"]),
        (["x = image_train[0]", CLASS], [CLASS], ["image_train"]),
        ([CLASS, "class M(nn.Module):\n    pass"], ["class M(nn.Module):\n    pass"], []),
        ([CLASS, "AFTER = 1"], [CLASS], ["AFTER"]),  # only what comes before the class
        (["@torch.no_grad()\ndef helper(x):\n    return x\n" + CLASS], ["@torch.no_grad()\ndef helper"], []),
        (["this is not python (", CLASS], [CLASS], ["not python"]),
    ],
)
def test_class_module(sources, kept, dropped):
    module = find_class_source(sources, "M")
    assert module is not None
    compile(module, "<student>", "exec")
    for text in kept:
        assert text in module
    for text in dropped:
        assert text not in module


def test_no_class_is_none():
    assert find_class_source(["WIDTH = 16", "class Other:\n    pass", "broken ("], "M") is None
