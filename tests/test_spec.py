"""assignment.toml: every wrong type is a SpecError that names the key (a table of cases)."""

import re

import pytest

from grader.errors import SpecError
from grader.spec import load_spec

BASE = """
[assignment]
id = "demo"
source = "demo.source.ipynb"
{assignment}

[grading]
{grading}

[sandbox]
{sandbox}

[questions.sigmoid]
{question}
"""


def write(tmp_path, assignment="", grading="", sandbox="", question="", extra=""):
    path = tmp_path / "assignment.toml"
    for key, default in (("kind", 'kind = "function"'), ("points", "points = 1")):
        if not re.search(rf"^{key} =", question, re.M):
            question = default + "\n" + question
    text = BASE.format(assignment=assignment, grading=grading, sandbox=sandbox, question=question)
    path.write_text(text + extra)
    return path


@pytest.mark.parametrize(
    ("part", "text", "message"),
    [
        ("question", 'points = "1"', "points must be a number, not str"),
        ("question", "points = true", "points must be a number, not bool"),
        ("question", "points = -1", "negative points"),
        ("question", 'kind = "fuction"', "has kind 'fuction'"),
        ("question", "title = 3", "title must be a string"),
        ("question", 'subchecks = { shape = "1" }', "subchecks must be a table of numbers"),
        ("question", "subchecks = { shape = -1 }", "negative sub-check weight"),
        ("question", 'params = "tolerance"', "params must be a table"),
        ("question", 'context_cells = "imports"', "context_cells must be a list of strings"),
        ("question", 'public = "hash"', "'hash' is for value questions"),
        ("question", 'public = "always"', "public = 'always'"),
        ("question", 'form = { type = "function" }', "a function form needs name"),
        ("question", 'form = { type = "matrix" }', "form type 'matrix'"),
        ("question", 'form = { type = "function", name = "f", arguments = "z" }', "arguments must be a list of strings"),
        ("question", 'form = { type = "number", min = "0" }', "form min must be a number"),
        ("question", 'form = { type = "class", name = "M" }', "input_shape"),
        ("question", 'form = { type = "class", name = "M", input_shape = [2, 784], output_shape = [2, "10"] }', "output_shape"),
        ("question", "colour = 1", "unknown key(s) colour"),
        ("grading", 'seed = "0"', "seed must be a whole number, not str"),
        ("grading", "cell_timeout = 1.5", "cell_timeout must be a whole number"),
        ("grading", "parameters = 3", "parameters must be a table"),
        ("sandbox", 'memory_mb = "4096"', "memory_mb must be a whole number"),
        ("sandbox", 'network = "no"', "network must be true or false"),
        ("assignment", "title = 1", "[assignment] title must be a string"),
        # TOML has nan and inf; limits below zero reached setrlimit (every run failed)
        ("question", "points = nan", "points must be a finite number"),
        ("question", "points = inf", "points must be a finite number"),
        ("question", "subchecks = { shape = nan }", "subchecks must be a table of numbers"),
        ("sandbox", "cpus = inf", "cpus must be a finite number"),
        ("sandbox", "memory_mb = -1", "memory_mb must be above 0"),
        ("sandbox", "cpus = 0", "cpus must be above 0"),
        ("sandbox", "max_output_mb = -5", "max_output_mb must be 0 or more"),
        ("grading", "cell_timeout = -1", "cell_timeout must be above 0"),
        ("grading", "seed = -3", "seed must be 0 or more"),
    ],
)
def test_wrong_types_are_spec_errors(tmp_path, part, text, message):
    path = write(tmp_path, **{part: text})
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert message in str(info.value.message)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('\n[dataset]\nfilename = 1\nurl = "u"\nsha256 = "s"\n', "filename must be a string"),
        ('\n[dataset]\nfilename = "f"\n', "missing key(s) url, sha256"),
        ('\n[dataset]\nfilename = "f"\nurl = "u"\nsha256 = "s"\nsize = "17"\n', "size must be a whole number"),
        ('\n[dataset]\nfilename = "f"\nurl = "u"\nsha256 = "s"\nloader = 1\n', "loader must be a string"),
    ],
)
def test_dataset_types(tmp_path, extra, message):
    path = tmp_path / "assignment.toml"
    text = BASE.format(assignment="", grading="", sandbox="", question='kind = "value"\npoints = 1')
    head, _, rest = text.partition("\n[grading]")
    path.write_text(head + extra + "\n[grading]" + rest)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert message in str(info.value.message)


def test_a_good_function_question(tmp_path):
    question = (
        'extract = "sigmoid"\npublic = "form"\n'
        'form = { type = "function", name = "sigmoid", arguments = ["z"] }\n'
        "subchecks = { shape = 1, values = 2 }\nparams = { rtol = 1e-7 }\n"
        'context_cells = ["imports"]'
    )
    spec = load_spec(write(tmp_path, question=question, grading="seed = 3"))
    q = spec.question("sigmoid")
    assert q.kind == "function" and q.points == 1.0 and isinstance(q.points, float)
    assert q.subchecks == {"shape": 1.0, "values": 2.0}
    assert q.context_cells == ("imports",)
    assert spec.grading.seed == 3


def test_the_repository_assignments_load(repo_root):
    for path in sorted((repo_root / "solutions").glob("*/assignment.toml")):
        load_spec(path)


@pytest.mark.parametrize(("loader", "expected"), [('loader = "load"', "7 bytes"), ("", None)])
def test_data_comes_from_the_named_loader(tmp_path, loader, expected):
    from grader.checking import CheckContext

    (tmp_path / "reference.py").write_text(
        "def load(path):\n    return f'{len(path.read_bytes())} bytes'\n"
    )
    data_file = tmp_path / "data.bin"
    data_file.write_bytes(b"1234567")
    dataset = f'\n[dataset]\nfilename = "data.bin"\nurl = "u"\nsha256 = "s"\n{loader}\n'
    path = write(tmp_path, assignment='reference = "reference.py"', extra=dataset)
    ctx = CheckContext(load_spec(path), data_file, tmp_path / "cache")
    if expected is None:
        with pytest.raises(SpecError, match="needs \\[dataset\\] loader"):
            ctx.data()
    else:
        assert ctx.data() == expected


def test_limits_given_on_the_command_line_are_checked_too(tmp_path):
    """`--memory-mb -1` reached setrlimit as 2**64 - 1 MiB: no memory limit at all."""
    import argparse

    from grader.cli import _limits

    spec = load_spec(write(tmp_path))
    args = argparse.Namespace(memory_mb=-1)
    with pytest.raises(SpecError, match="memory_mb must be above 0"):
        _limits(args, spec)
    assert _limits(argparse.Namespace(memory_mb=512), spec).memory_mb == 512


def test_the_assignment_files_are_what_can_change_a_grade(repo_root, tmp_path):
    """The batch fingerprint, the bundle a Dask worker gets and the Gradescope zip cover the
    same files: data a check reads (any kind) and a helper folder linked in count;
    Jupyter's checkpoint of a notebook opened to look at it, bytecode, editor backups and a
    grader output folder kept inside the assignment (grades change every batch) do not."""
    import shutil

    from grader.cluster import Bundle
    from grader.spec import assignment_files, files_digest

    root = tmp_path / "mnist_nn"
    shutil.copytree(repo_root / "solutions" / "mnist_nn", root)
    (root / "thresholds.csv").write_text("q,min\nval,0.9\n")
    (root / "expected.npz").write_bytes(b"PK-1")
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "helpers.py").write_text("X = 1\n")
    (root / "shared").symlink_to(tmp_path / "common", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # around it: not followed
    (root / "course").symlink_to(tmp_path, target_is_directory=True)
    (root / "data").mkdir()
    (root / "data" / "weights.pt").write_bytes(b"w")
    (root / "alias").symlink_to(root / "data", target_is_directory=True)  # inside: walked anyway
    (tmp_path / "common" / "again").symlink_to(tmp_path / "common", target_is_directory=True)
    before, bundle = files_digest(root), Bundle.of(load_spec(root))
    names = [rel for rel, _ in assignment_files(root)]
    assert names == [rel for rel, _ in bundle.files] == sorted(names)
    assert {"thresholds.csv", "expected.npz", "shared/helpers.py", "checks.py", "data/weights.pt"} <= set(names)
    assert not [n for n in names if n.startswith(("loop/", "course/", "alias/", "shared/again/"))]
    for junk in (
        ".ipynb_checkpoints/mnist_nn.source-checkpoint.ipynb",
        "__pycache__/checks.cpython-311.pyc",
        "checks.py~",
        ".notes.txt",
        "out/grades.csv",
        "out/gradebook.sqlite",
        "gradebook.sqlite",  # --gradebook pointed into the assignment folder itself
        "gradebook.sqlite-journal",
    ):
        (root / junk).parent.mkdir(exist_ok=True)
        (root / junk).write_text("{}")
    assert files_digest(root) == before and Bundle.of(load_spec(root)).digest == bundle.digest
    for edit in ("thresholds.csv", "expected.npz", "shared/helpers.py", "checks.py", "data/weights.pt"):
        with (root / edit).open("a") as f:
            f.write("\n")
        assert files_digest(root) != before and Bundle.of(load_spec(root)).digest != bundle.digest
        before = files_digest(root)
