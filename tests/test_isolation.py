"""No submission can change another's result: control groups, pid namespaces, per-worker
uids and private size-capped file systems, run for real (skipped, with the reason, where
this machine does not allow a mechanism)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from grader.batch import BatchOptions, grade_batch
from grader.sandbox import (
    Sandbox,
    SandboxedKernelManager,
    bwrap_available,
    bwrap_status,
    cgroups,
    uids,
)
from grader.spec import SandboxLimits

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "isolation"
CORPUS = HERE / "corpus"
PY = sys.executable

needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason=f"no bubblewrap: {bwrap_status()[1]}")
needs_cgroup = pytest.mark.skipif(cgroups.cgroup_status()[0] is None, reason=cgroups.cgroup_status()[1])
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="per-worker uids apply when the grader runs as root")


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def processes_with(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def started(box: Sandbox, argv: list[str]) -> subprocess.Popen[bytes]:
    box.prepare()
    return subprocess.Popen(box.command(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **box.popen_kwargs())


# ----------------------------------------------------------------- control groups


@needs_cgroup
def test_cgroup_limits_the_whole_tree_and_counts_its_cpu_time() -> None:
    limits = cgroups.GroupLimits(cpus=0.5, max_tasks=12, memory_bytes=200 * 2**20)
    group = cgroups.create(limits)
    files = group.procs_files()
    try:
        for folder in group.folders:
            assert folder.is_dir()
        code = """
        import os, time
        children = 0
        try:
            for _ in range(40):
                if os.fork() == 0:
                    os.closerange(0, 3)  # the pipe ends with the parent
                    time.sleep(60)
                    os._exit(0)
                children += 1
        except OSError as exc:
            print("refused after", children, exc.errno)
        end = time.process_time() + 0.5
        while time.process_time() < end:
            pass
        """
        proc = subprocess.Popen(py(code), stdout=subprocess.PIPE, preexec_fn=lambda: cgroups.Cgroup.attach(files))
        out, _ = proc.communicate(timeout=120)
        refused, count, errno = out.decode().split()[0:1], *out.decode().split()[2:4]
        assert refused == ["refused"] and int(count) < 12 and int(errno) == 11  # EAGAIN
        assert group.pids()  # the sleeping children are still in the group
        assert (group.cpu_seconds() or 0) >= 0.5
        hog = subprocess.run(
            py("b = bytearray(400 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\nprint('survived')"),
            preexec_fn=lambda: cgroups.Cgroup.attach(files),
            capture_output=True,
            timeout=120,
        )
        assert hog.returncode == -9 and b"survived" not in hog.stdout
        assert group.oom_killed()
        assert group.kill()
        assert group.pids() == set()
    finally:
        group.remove()
    assert not any(folder.exists() for folder in group.folders)


@needs_cgroup
def test_cgroup_quota_and_limits_are_written() -> None:
    group = cgroups.create(cgroups.GroupLimits(cpus=1.5, max_tasks=99, memory_bytes=300 * 2**20))
    try:
        if group.version == "v2":
            folder = group.dirs["cpu"]
            assert (folder / "cpu.max").read_text().split() == ["150000", "100000"]
            assert (folder / "pids.max").read_text().strip() == "99"
            assert (folder / "memory.max").read_text().strip() == str(300 * 2**20)
        else:
            assert (group.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "150000"
            assert (group.dirs["pids"] / "pids.max").read_text().strip() == "99"
            assert (group.dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(300 * 2**20)
    finally:
        group.remove()


@needs_bwrap
@needs_cgroup
def test_sandbox_cpu_seconds_counts_processes_that_left_the_session(workdir: Path) -> None:
    box = Sandbox(SandboxLimits(), workdir)
    code = """
    import subprocess, sys
    subprocess.Popen([sys.executable, "-c", "import time\\nend = time.process_time() + 1.0\\nwhile time.process_time() < end: pass"], start_new_session=True).wait()
    """
    proc = started(box, py(code))
    try:
        proc.communicate(timeout=120)
        used = box.cpu_seconds()
        assert used is not None and used >= 1.0
    finally:
        box.close()
    assert box.cpu_seconds() is None  # the group is gone


def test_no_cgroup_gives_one_clear_warning(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "cgroup_status", lambda: (None, "no cgroup can be created here (v1: Permission denied)"))
    box = Sandbox(SandboxLimits(), workdir)
    warning = box.warning() or ""
    assert warning.count("no cgroup can be created here") == 1
    assert "per process only" in warning
    assert box.cgroup() is None and box.cpu_seconds() is None
    assert Sandbox(SandboxLimits(), workdir, use_cgroup=False).cgroup() is None


# ----------------------------------------------------------------- pid namespace, uids


@needs_bwrap
def test_processes_that_left_the_session_die_with_the_sandbox(workdir: Path) -> None:
    marker = f"{3000 + uuid.uuid4().int % 1000}.{os.getpid()}"
    code = f"""
    import os, subprocess
    subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "{marker}"])
        os._exit(0)
    os.wait()
    print(sum(1 for p in os.listdir("/proc") if p.isdigit()))
    """
    result = Sandbox(SandboxLimits(), workdir).run(py(code), timeout=60)
    assert result.ok, result.stderr_text
    # Inside: the namespace's init, the script and the two sleepers (nothing of the host's).
    assert int(result.stdout_text) <= 5
    time.sleep(0.2)
    assert processes_with(f"sleep {marker}") == []


@needs_root
def test_each_grading_process_leases_its_own_uid() -> None:
    code = "from grader.sandbox import worker_uid; import time; print(worker_uid(), flush=True); time.sleep(3)"
    procs = [subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE) for _ in range(3)]
    seen = [int(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
    for p in procs:
        p.communicate(timeout=30)
    assert len(set(seen)) == 3 and all(uids.is_sandbox_uid(u) for u in seen)
    assert os.geteuid() == 0 and Sandbox(SandboxLimits(), Path("/tmp")).uid == uids.worker_uid()


@needs_bwrap
@pytest.mark.slow
def test_a_dead_kernel_leaves_no_group_and_no_ipc_folder(workdir: Path) -> None:
    km = SandboxedKernelManager.for_sandbox(Sandbox(SandboxLimits(), workdir), kernel_name="python3")
    km.start_kernel()
    group, ipc = km.sandbox.cgroup(), km.ipc_dir
    os.killpg(km.provisioner.process.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    for _ in range(100):
        if not km.is_alive():
            break
        time.sleep(0.1)
    km.cleanup_resources()  # what an executor calls for a kernel that died
    assert not ipc.exists()
    if group is not None:
        assert not any(folder.exists() for folder in group.folders)


@needs_root
def test_ipc_folders_of_dead_graders_are_swept(workdir: Path) -> None:
    from grader.sandbox.kernel import IPC_BYTES, mount_private_tmpfs

    stale = Path(tempfile.mkdtemp(prefix="grader-kernel-999999999-"))  # above any pid_max
    assert mount_private_tmpfs(stale, IPC_BYTES) and os.path.ismount(stale)
    km = SandboxedKernelManager.for_sandbox(Sandbox(SandboxLimits(), workdir))
    try:
        assert not stale.exists()
        assert os.path.ismount(km.ipc_dir)  # its own IPC folder is a capped tmpfs
    finally:
        km.cleanup_resources()
    assert not km.ipc_dir.exists()


# ----------------------------------------------------------------- private file systems


@needs_bwrap
def test_the_work_folder_is_a_capped_private_filesystem(workdir: Path) -> None:
    (workdir / "given.txt").write_text("staged")
    box = Sandbox(SandboxLimits(max_disk_mb=64), workdir)
    code = """
    import os
    print(open("given.txt").read())
    try:
        open("given.txt", "w")
    except OSError as exc:
        print("given is read-only", exc.errno)
    written = 0
    try:
        with open("flood.bin", "wb") as fh:
            for _ in range(100):
                fh.write(b"x" * 2**20)
                fh.flush()
                written += 1
    except OSError as exc:
        print("stopped after", written, "MiB:", exc.strerror)
        raise
    """
    result = box.run(py(code), timeout=60)
    lines = result.stdout_text.splitlines()
    assert lines[0] == "staged" and lines[1] == "given is read-only 30"  # EROFS
    assert lines[2].startswith("stopped after") and lines[2].endswith("No space left on device")
    assert int(lines[2].split()[2]) <= 64
    assert result.killed_reason == "disk limit (64 MB per private file system)"
    assert sorted(os.listdir(workdir)) == ["given.txt"]  # nothing reached the host


@needs_bwrap
@pytest.mark.slow
def test_a_notebook_writing_760_mib_is_stopped_by_the_cap(workdir: Path) -> None:
    box = Sandbox(SandboxLimits(), workdir)  # the default cap: 512 MB
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        # 760 MiB in files of 95 MiB, each below the per-file limit (max_file_mb = 200).
        nbformat.v4.new_code_cell(
            "written = 0\n"
            "for part in range(8):\n"
            "    with open(f'part{part}.bin', 'wb') as fh:\n"
            "        for _ in range(95):\n"
            "            fh.write(b'x' * 2**20); fh.flush(); written += 1"
        ),
        nbformat.v4.new_code_cell(
            "import os; print(written, sum(os.path.getsize(f) for f in os.listdir('.')) // 2**20)"
        ),
    ]
    km = SandboxedKernelManager.for_sandbox(box, kernel_name="python3")
    client = NotebookClient(nb, km=km, timeout=300, allow_errors=True, shutdown_kernel="immediate")
    client.execute(cleanup_kc=True)
    error = nb.cells[0].outputs[-1]
    assert error.output_type == "error" and "No space left on device" in error.evalue
    written, size = map(int, nb.cells[1].outputs[0].text.split())
    assert written <= 512 and size <= 512  # stopped at the cap, not at 760
    assert os.listdir(workdir) == []


# ----------------------------------------------------------------- the isolation test


def _load_build():
    spec = importlib.util.spec_from_file_location("isolation_build", FIXTURES / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hostile_fixtures_are_current(tmp_path: Path) -> None:
    expected = _load_build().build(tmp_path)
    assert expected == json.loads((FIXTURES / "expected.json").read_text())
    for path in sorted(tmp_path.glob("*.ipynb")):
        committed = FIXTURES / "notebooks" / path.name
        assert committed.read_text() == path.read_text(), "run `python tests/isolation/build.py --update`"


def _grade(spec, grading_cache, tmp_path: Path, names: list[str], jobs: int) -> dict:
    folder = tmp_path / "subs"
    folder.mkdir()
    for name in names:
        source = CORPUS / "notebooks" / "solution.ipynb" if name == "honest" else FIXTURES / "notebooks" / f"{name}.ipynb"
        shutil.copy(source, folder / f"{name}.ipynb")
    batch = grade_batch(spec, [folder], tmp_path / "out", BatchOptions(jobs=jobs, cache_dir=grading_cache, progress=False))
    return {r.student: r for r in batch.results}


def _points(result) -> dict[str, float]:
    return {q.id: q.points for q in result.questions}


@pytest.fixture(scope="module")
def honest_alone(spec, grading_cache, tmp_path_factory):
    return _grade(spec, grading_cache, tmp_path_factory.mktemp("alone"), ["honest"], jobs=1)["honest"]


#: Every attack on its own is worth a run where a change touches isolation; CI runs them all at once.
EACH = os.environ.get("GRADER_ISOLATION_EACH") == "1"


@needs_bwrap
@pytest.mark.slow
@pytest.mark.parametrize(
    "hostile",
    [
        "hostile_all",
        *(
            pytest.param(name, marks=pytest.mark.skipif(not EACH, reason="set GRADER_ISOLATION_EACH=1"))
            for name in ("hostile_spinners", "hostile_fork_loop", "hostile_kill_all", "hostile_proc_scan")
        ),
    ],
)
def test_honest_result_beside_a_hostile_neighbour(spec, grading_cache, tmp_path, honest_alone, hostile):
    expected = json.loads((CORPUS / "expected.json").read_text())
    assert {k: v for k, v in _points(honest_alone).items() if k in expected["solution"]} == expected["solution"]
    results = _grade(spec, grading_cache, tmp_path, ["honest", hostile], jobs=2)
    honest = results["honest"]
    print(f"honest alone {sum(_points(honest_alone).values())}, beside {hostile} {sum(_points(honest).values())}")
    assert _points(honest) == _points(honest_alone), (honest.warnings, honest.log[-5:])
    assert honest.status == honest_alone.status
    bad = results[hostile]
    mine = json.loads((FIXTURES / "expected.json").read_text())[hostile]
    assert {k: v for k, v in _points(bad).items() if k in mine} == mine
    time.sleep(0.5)
    assert processes_with(_load_build().MARKER) == []  # nothing of the attacker outlived it
