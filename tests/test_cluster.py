"""Batch grading on a real Dask cluster: a scheduler and two workers started here, on
127.0.0.1, one of them killed during the batch. Scores must equal the local run's."""

import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from grader.batch import BatchOptions, grade_batch
from grader.cluster import Bundle
from grader.errors import UsageError
from grader.spec import load_spec

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
NOTEBOOKS = ["solution", "first_nine_off_by_one", "model3_wrong_width", "experiments_wrong_direction"]
DASK = str(Path(sys.executable).parent / "dask")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], log: Path) -> subprocess.Popen:
    handle = log.open("wb")
    try:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        handle.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture
def cluster(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = {
        "scheduler": _start(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            tmp_path / "scheduler.log",
        )
    }
    for name in ("worker-a", "worker-b"):
        procs[name] = _start(
            [DASK, "worker", address, "--name", name, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0"],
            tmp_path / f"{name}.log",
        )
    from distributed import Client

    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, procs
    finally:
        for proc in procs.values():
            _stop(proc)


@pytest.mark.slow
def test_batch_on_dask_survives_a_killed_worker(spec, grading_cache, tmp_path, cluster, pages_drawn_here):
    address, procs = cluster
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(CORPUS / "notebooks" / f"{name}.ipynb", class_dir / f"{name}.ipynb")
    seen = []

    def on_result(result):
        seen.append(result.student)
        if len(seen) == 1:  # both workers hold a task now: kill one of them mid-task
            _stop(procs["worker-a"])

    batch = grade_batch(
        spec,
        [class_dir],
        tmp_path / "out",
        BatchOptions(scheduler=address, cache_dir=grading_cache, progress=False),
        on_result=on_result,
    )
    expected = json.loads((CORPUS / "expected.json").read_text())
    got = {
        r.student: {q.id: q.points for q in r.questions if q.id in expected[r.student]}
        for r in batch.results
    }
    assert got == {name: expected[name] for name in NOTEBOOKS}
    assert sorted(seen) == sorted(NOTEBOOKS)  # each recorded once, none lost
    assert batch.graded == len(NOTEBOOKS) and batch.failed == 0
    assert procs["worker-a"].poll() is not None
    assert any("graded on worker worker-b" in line for r in batch.results for line in r.log)
    csv = (tmp_path / "out" / "grades.csv").read_text()
    assert all(name in csv for name in NOTEBOOKS)
    # the feedback pages came back drawn with the results, none drawn again here
    assert pages_drawn_here == []
    assert all((tmp_path / "out" / "feedback" / f"{name}.html").is_file() for name in NOTEBOOKS)


def test_bundle_carries_the_hidden_folder(spec, tmp_path):
    bundle = Bundle.of(spec)
    names = {rel for rel, _ in bundle.files}
    assert {"assignment.toml", "checks.py", "reference.py", "mnist_nn.source.ipynb"} <= names
    root = bundle.unpack(tmp_path)
    assert (root / "checks.py").read_bytes() == spec.checks_path.read_bytes()
    assert Bundle.of(spec).digest == bundle.digest


def test_bad_scheduler_is_a_usage_error(spec, tmp_path):
    notebook = tmp_path / "a.ipynb"
    shutil.copy(CORPUS / "notebooks" / "solution.ipynb", notebook)
    for bad in ("local:x", "nowhere"):
        with pytest.raises(UsageError):
            grade_batch(spec, [notebook], tmp_path / "out", BatchOptions(scheduler=bad, progress=False))


def test_a_worker_keeps_the_sessions_of_the_last_two_assignment_versions(spec, grading_cache, mnist_path, tmp_path, monkeypatch):
    """A long-lived worker graded three versions of an edited assignment: the oldest
    session (its kernel started ahead, its fork server) is closed, the newest two kept."""
    from grader import cluster

    monkeypatch.setattr(cluster, "_SESSIONS", {})
    monkeypatch.setattr(cluster, "_ROOT", tmp_path / "worker")
    (tmp_path / "worker").mkdir()
    options = {"cache_dir": grading_cache, "dataset": mnist_path}
    sessions = []
    for version in range(3):
        root = tmp_path / f"v{version}" / spec.root.name
        shutil.copytree(spec.root, root)
        with (root / "checks.py").open("a") as f:
            f.write(f"\n# version {version}\n")
        with cluster._GRADING:
            sessions.append(cluster._session(Bundle.of(load_spec(root)), options))
    try:
        assert list(cluster._SESSIONS.values()) == sessions[1:]
        assert sessions[0].spare is None and sessions[0].server is None  # closed
        assert all(s.spare is not None for s in sessions[1:])
        with cluster._GRADING:  # used again: the most recently used, nothing opened
            assert cluster._session(Bundle.of(load_spec(tmp_path / "v1" / spec.root.name)), options) is sessions[1]
        assert list(cluster._SESSIONS.values()) == [sessions[2], sessions[1]]
        closed = weakref.ref(sessions.pop(0))
        gc.collect()
        assert closed() is None  # nothing (no exit handler) keeps it and its loaded data alive
    finally:
        for session in sessions:
            session.close()
