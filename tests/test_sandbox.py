"""The sandbox really isolates student code: network, file system, limits, kernels."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from grader import sandbox as sandbox_module
from grader.errors import ExecutionError
from grader.sandbox import (
    MODE_BWRAP,
    MODE_RLIMITS,
    AsyncSandboxedKernelManager,
    Sandbox,
    SandboxedKernelManager,
    bwrap_available,
    bwrap_status,
    output_cap_bytes,
    repo_root,
)
from grader.spec import SandboxLimits

needs_bwrap = pytest.mark.skipif(
    not bwrap_available(), reason=f"bubblewrap unavailable here: {bwrap_status()[1]}"
)

SOLUTIONS_TOML = repo_root() / "solutions" / "mnist_nn" / "assignment.toml"
PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def box(workdir: Path) -> Sandbox:
    return Sandbox(SandboxLimits(memory_mb=2048, max_processes=64, max_output_mb=5), workdir)


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback that accepts connections."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


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


CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
    print("CONNECTED")
except OSError as exc:
    print("REFUSED", exc)
"""


# ----------------------------------------------------------------- plain processes


def test_output_cap_helper() -> None:
    assert output_cap_bytes(SandboxLimits(max_output_mb=20)) == 20 * 1024 * 1024


@needs_bwrap
def test_mode_and_no_warning_with_bwrap(box: Sandbox) -> None:
    assert box.mode == MODE_BWRAP
    assert box.warning() is None
    cmd = box.command(["python", "x.py"])
    assert cmd[0].endswith("bwrap") and cmd[-2:] == ["python", "x.py"]
    assert "--unshare-net" in cmd


@needs_bwrap
def test_network_is_unreachable(box: Sandbox, listener: int) -> None:
    # The same code outside the sandbox does reach the listener.
    outside = subprocess.run(
        [*py(CONNECT), str(listener)], capture_output=True, text=True, timeout=30, check=True
    )
    assert "CONNECTED" in outside.stdout
    result = box.run([*py(CONNECT), str(listener)], timeout=30)
    assert result.returncode == 0, result.stderr_text
    assert "REFUSED" in result.stdout_text


@needs_bwrap
def test_network_allowed_when_the_spec_says_so(workdir: Path, listener: int) -> None:
    box = Sandbox(SandboxLimits(network=True), workdir)
    assert "--unshare-net" not in box.command(["true"])
    result = box.run([*py(CONNECT), str(listener)], timeout=30)
    assert "CONNECTED" in result.stdout_text


@needs_bwrap
def test_solutions_and_hidden_paths_are_unreadable(tmp_path: Path, workdir: Path) -> None:
    assert SOLUTIONS_TOML.is_file()
    shared = tmp_path / "shared"
    (shared / "gradebook").mkdir(parents=True)
    (shared / "gradebook" / "grades.csv").write_text("alice,100\n")
    (shared / "other.ipynb").write_text("{}")
    (shared / "data.txt").write_text("staged data\n")
    elsewhere = tmp_path / "submissions"
    elsewhere.mkdir()
    (elsewhere / "bob.ipynb").write_text("{}")
    # `shared` is bound read-only (as a data folder would be), with two hidden paths in it;
    # the whole repository is bound too, as when a CI venv lies inside the clone.
    box = Sandbox(
        SandboxLimits(),
        workdir,
        readonly=[shared, repo_root()],
        hidden=[shared / "gradebook", shared / "other.ipynb", elsewhere],
    )
    code = """
    import sys
    for path in sys.argv[1:]:
        try:
            with open(path) as fh:
                text = fh.read()
            print("READ" if text else "EMPTY", path)
        except OSError as exc:
            print("DENIED", path, type(exc).__name__)
    """
    paths = [
        SOLUTIONS_TOML,
        shared / "gradebook" / "grades.csv",
        shared / "other.ipynb",
        elsewhere / "bob.ipynb",
        shared / "data.txt",
    ]
    result = box.run([*py(code), *map(str, paths)], timeout=30)
    lines = result.stdout_text.splitlines()
    assert result.returncode == 0, result.stderr_text
    assert lines[0].startswith("DENIED")  # solutions/, hidden by default
    assert lines[1].startswith("DENIED")  # hidden folder inside a read-only bind
    assert lines[2].startswith("DENIED")  # hidden file: /dev/null (nodev) over it
    assert lines[3].startswith("DENIED")  # never bound
    assert lines[4].startswith("READ")  # the staged data stays readable
    listing = box.run(py(f"import os; print(os.listdir({str(repo_root())!r}))"), timeout=30)
    assert "solutions" in listing.stdout_text  # the mount point exists, its content not
    denied = box.run(py(f"import os; os.listdir({str(repo_root() / 'solutions')!r})"), timeout=30)
    assert denied.returncode != 0 and "PermissionError" in denied.stderr_text


@needs_bwrap
def test_default_sandbox_does_not_expose_the_repository(box: Sandbox) -> None:
    """Only the Python environment is mounted: with the README's `.venv` inside the
    checkout, the checkout's path exists in the sandbox but holds nothing but `.venv`."""
    root = repo_root()
    code = f"import json, os; r = {str(root)!r}; print(json.dumps(sorted(os.listdir(r)) if os.path.exists(r) else None))"
    result = box.run(py(code), timeout=30)
    assert result.returncode == 0, result.stderr_text
    visible = json.loads(result.stdout_text)
    prefix = Path(sys.prefix).resolve()
    allowed = [prefix.relative_to(root).parts[0]] if prefix.is_relative_to(root) else []
    assert visible is None or visible == allowed, visible
    for secret in ("solutions", "grader", "tests", "pyproject.toml"):
        probe = box.run(py(f"import os; print(os.path.exists({str(root / secret)!r}))"), timeout=30)
        assert probe.stdout_text.strip() == "False", secret


@needs_bwrap
def test_writes_only_inside_workdir_and_private_tmp(box: Sandbox, workdir: Path) -> None:
    targets = [
        Path(sys.prefix) / "evil.txt",
        Path("/etc/evil.txt"),
        Path("/evil.txt"),
        Path("/usr/evil.txt"),
        workdir.parent / "evil.txt",
    ]
    code = """
    import sys
    for path in sys.argv[1:]:
        try:
            with open(path, "w") as fh:
                fh.write("x")
            print("WROTE", path)
        except OSError as exc:
            print("DENIED", path, type(exc).__name__)
    """
    inside = [workdir / "model.pt", Path("/tmp/scratch.txt"), Path("/dev/shm/x")]
    result = box.run([*py(code), *map(str, targets + inside)], timeout=30)
    lines = result.stdout_text.splitlines()
    assert all(line.startswith("DENIED") for line in lines[: len(targets)]), lines
    assert all(line.startswith("WROTE") for line in lines[len(targets) :]), lines
    assert not (workdir / "model.pt").exists()  # the work folder is a private tmpfs too
    for path in targets:
        assert not path.exists()
    assert not Path("/tmp/scratch.txt").exists()  # /tmp was private


@needs_bwrap
def test_environment_is_whitelisted(
    box: Sandbox, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("GRADER_SECRET_TOKEN", "s3cret")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    result = box.run(py(code), timeout=30, env={"MNIST_PATH": "/data"})
    import json

    env = json.loads(result.stdout_text)
    assert env["HOME"] == str(workdir)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["MPLBACKEND"] == "Agg" and env["PYTHONHASHSEED"] == "0"
    assert env["MNIST_PATH"] == "/data"
    assert "http_proxy" not in env and "GRADER_SECRET_TOKEN" not in env


@needs_bwrap
@pytest.mark.slow
def test_fork_bomb_is_contained(workdir: Path) -> None:
    marker = f"bomb-{uuid.uuid4().hex[:8]}"
    box = Sandbox(SandboxLimits(max_processes=40), workdir)
    code = f"""
    import os, sys, time
    sys.argv[0] = {marker!r}
    start, made, failed = time.time(), 0, 0
    while time.time() - start < 2:
        try:
            pid = os.fork()
        except OSError:
            failed += 1
            continue
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        made += 1
    print(made, failed, flush=True)
    """
    result = box.run([*py(code), marker], timeout=30)
    made, failed = map(int, result.stdout_text.split())
    assert made <= 40 and failed > 0
    # Everything the bomb started died with the sandbox, and we can still fork.
    time.sleep(0.2)
    assert processes_with(marker) == []
    assert subprocess.run(["true"], check=False).returncode == 0


@needs_bwrap
def test_big_print_is_cut_at_the_output_cap(box: Sandbox) -> None:
    code = "import sys; sys.stdout.write('x' * 100_000_000); sys.stdout.flush()"
    result = box.run(py(code), timeout=60)
    assert result.truncated
    assert len(result.stdout) == 5 * 1024 * 1024
    assert result.killed_reason == "output limit (5 MB)"
    assert result.duration < 30


@needs_bwrap
@pytest.mark.slow
def test_infinite_loop_is_killed_at_the_timeout(box: Sandbox) -> None:
    marker = f"spin-{uuid.uuid4().hex[:8]}"
    code = """
    import subprocess, sys
    subprocess.Popen([sys.executable, "-c", "while True: pass", sys.argv[1]],
                     start_new_session=True)
    print("started", flush=True)
    while True:
        pass
    """
    start = time.monotonic()
    result = box.run([*py(code), marker], timeout=1.5)
    assert result.killed_reason == "timeout (1.5 s)"
    assert result.stdout_text == "started\n"
    assert time.monotonic() - start < 10
    time.sleep(0.2)
    assert processes_with(marker) == []


@needs_bwrap
@pytest.mark.slow
def test_memory_limit(box: Sandbox) -> None:
    small = box.run(
        py("import numpy as np; a = np.ones(500_000_000 // 8); print(a.sum())"), timeout=60
    )
    assert small.ok, small.stderr_text
    code = "import numpy as np; a = np.ones(6_000_000_000 // 8); print('ALLOCATED')"
    result = box.run(py(code), timeout=60)
    assert "ALLOCATED" not in result.stdout_text
    assert "MemoryError" in result.stderr_text
    assert result.killed_reason == "memory limit (2048 MB)"
    shared = box.run(
        py("import mmap; m = mmap.mmap(-1, 6_000_000_000); print('MAPPED')"), timeout=60
    )
    assert "MAPPED" not in shared.stdout_text  # RLIMIT_AS catches shared mappings


@needs_bwrap
@pytest.mark.slow
def test_cpu_time_limit(workdir: Path) -> None:
    box = Sandbox(SandboxLimits(cpu_seconds=1), workdir)
    result = box.run(py("while True: pass"), timeout=30)
    assert result.returncode < 0
    assert result.killed_reason == "cpu time limit (1 s)"


@needs_bwrap
def test_file_size_limit(workdir: Path) -> None:
    box = Sandbox(SandboxLimits(max_file_mb=1), workdir)
    code = """
    import os
    try:
        open('big.bin', 'wb').write(b'x' * 3_000_000)
    finally:
        print(os.path.getsize('big.bin'))
    """
    result = box.run(py(code), timeout=30)
    assert result.returncode != 0
    assert "File too large" in result.stderr_text
    assert int(result.stdout_text) <= 1024 * 1024


@needs_bwrap
def test_stdin_and_exit_code(box: Sandbox) -> None:
    code = "import sys; data = sys.stdin.read(); print(len(data)); sys.exit(3)"
    result = box.run(py(code), input=b"y" * 300_000, timeout=30)
    assert result.stdout_text.strip() == "300000"
    assert result.returncode == 3 and result.killed_reason is None and not result.ok


@needs_bwrap
def test_signal_exit_is_reported(box: Sandbox) -> None:
    result = box.run(py("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"), timeout=30)
    assert result.returncode == -11
    assert result.killed_reason == "signal 11 (SIGSEGV)"


@needs_bwrap
def test_missing_readonly_path_is_an_execution_error(workdir: Path, tmp_path: Path) -> None:
    box = Sandbox(SandboxLimits(), workdir, readonly=[tmp_path / "nope"])
    with pytest.raises(ExecutionError, match="does not exist"):
        box.command(["true"])


# ----------------------------------------------------------------- fallback mode


def test_rlimits_only_mode_warns_and_still_limits(workdir: Path) -> None:
    box = Sandbox(SandboxLimits(memory_mb=1024, max_output_mb=1), workdir, use_bwrap=False)
    assert box.mode == MODE_RLIMITS
    assert box.command(["python", "x.py"]) == ["python", "x.py"]
    warning = box.warning()
    assert warning is not None
    assert warning.startswith("sandbox: bwrap is turned off: ")
    assert "NO network isolation" in warning and "NO file-system isolation" in warning
    ok = box.run(py("import os; print(os.getcwd())"), timeout=30)
    assert ok.ok and ok.stdout_text.strip() == str(workdir)
    big = box.run(py("print('x' * 5_000_000)"), timeout=30)
    assert big.killed_reason == "output limit (1 MB)" and len(big.stdout) == 1024 * 1024
    mem = box.run(py("b = bytearray(3_000_000_000)"), timeout=30)
    assert mem.killed_reason == "memory limit (1024 MB)"


@pytest.mark.slow
def test_rlimits_only_mode_timeout_kills_the_group(workdir: Path) -> None:
    marker = f"fallback-{uuid.uuid4().hex[:8]}"
    box = Sandbox(SandboxLimits(), workdir, use_bwrap=False)
    code = """
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", sys.argv[1]])
    time.sleep(60)
    """
    result = box.run([*py(code), marker], timeout=1.0)
    assert result.killed_reason == "timeout (1 s)"
    time.sleep(0.2)
    assert processes_with(marker) == []


def test_unavailable_bwrap_falls_back_or_raises(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module.probe, "bwrap_status", lambda: (False, "bwrap is not installed"))
    auto = Sandbox(SandboxLimits(), workdir)
    assert auto.mode == MODE_RLIMITS
    assert (auto.warning() or "").startswith("sandbox: bwrap is not installed")
    with pytest.raises(ExecutionError, match="needs bubblewrap"):
        _ = Sandbox(SandboxLimits(), workdir, use_bwrap=True).mode


def test_bwrap_probe_is_cached() -> None:
    assert bwrap_status() is bwrap_status()


# ----------------------------------------------------------------- kernels

NOTEBOOK_CELLS = [
    "import os\nprint('hello from', os.getuid(), os.getcwd())",
    CONNECT.replace("int(sys.argv[1])", "PORT"),
    f"""
try:
    print(open({str(SOLUTIONS_TOML)!r}).read()[:20])
except OSError as exc:
    print('no solutions:', type(exc).__name__)
""",
    "import subprocess\n"
    "child = subprocess.Popen(['sleep', 'MARKER'], start_new_session=True)\n"
    "print('spawned', child.pid)",
    "import os\n"
    "print([os.environ.get(k) for k in\n"
    "       ('OMP_NUM_THREADS', 'GRADER_SEED', 'https_proxy', 'GRADER_SECRET_TOKEN', 'HOME')])\n"
    "print(os.environ['PATH'].split(':')[0] == os.path.dirname(__import__('sys').executable))",
]


def make_notebook(port: int, marker: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cells = [c.replace("PORT", str(port)).replace("MARKER", marker) for c in NOTEBOOK_CELLS]
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[str]:
    return ["".join(o.get("text", "") for o in cell.outputs) for cell in nb.cells]


@needs_bwrap
@pytest.mark.slow
def test_notebook_runs_inside_the_sandboxed_kernel(
    box: Sandbox, workdir: Path, listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADER_SECRET_TOKEN", "s3cret")
    marker = f"{1000 + uuid.uuid4().int % 1000}.{os.getpid()}"
    nb = make_notebook(listener, marker)
    km = SandboxedKernelManager.for_sandbox(box, kernel_name="python3")
    client = NotebookClient(nb, km=km, timeout=120)
    # What the caller passes is kept (but PATH and proxies); our own environment is not.
    given = {"OMP_NUM_THREADS": "2", "GRADER_SEED": "7", "PATH": "/nowhere"}
    given["https_proxy"] = "http://proxy.invalid:3128"
    try:
        client.execute(env=given, cwd="/")
        out = outputs(nb)
        assert out[4] == f"['2', '7', None, None, '{workdir}']\nTrue\n"
        assert out[0] == f"hello from {box.runs_as} {workdir}\n"
        assert out[1].startswith("REFUSED")
        assert out[2] == "no solutions: FileNotFoundError\n"
        assert out[3].startswith("spawned")
        assert processes_with(f"sleep {marker}")  # alive while the kernel is
        ipc_dir = km.ipc_dir
        assert ipc_dir.is_dir()
        assert "Traceback" not in km.kernel_log()  # the kernel's own stderr goes there
    finally:
        # nbclient leaves a kernel manager it was given (and its client) running.
        if client.kc is not None:
            client.kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert not km.has_kernel
    time.sleep(0.2)
    assert processes_with(f"sleep {marker}") == []
    assert processes_with(str(ipc_dir)) == []
    assert not ipc_dir.exists()


@needs_bwrap
@pytest.mark.slow
def test_cell_timeout_interrupts_and_the_kernel_goes_on(box: Sandbox) -> None:
    nb = nbformat.v4.new_notebook()
    cells = ["x = 41", "while True:\n    pass", "print(x + 1)"]
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    km = SandboxedKernelManager.for_sandbox(box)
    client = NotebookClient(
        nb,
        km=km,
        timeout=2,
        interrupt_on_timeout=True,
        allow_errors=True,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": "too slow"},
    )
    start = time.monotonic()
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert time.monotonic() - start < 30
    assert nb.cells[1].outputs[0]["ename"] == "KeyboardInterrupt"
    assert outputs(nb)[2] == "42\n"


@needs_bwrap
@pytest.mark.slow
def test_async_kernel_manager_and_interrupt(box: Sandbox) -> None:
    async def scenario() -> list[str]:
        km = AsyncSandboxedKernelManager(box)
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            busy = "try:\n    while True:\n        pass\nexcept KeyboardInterrupt:\n"
            msg_id = kc.execute(busy + "    print('interrupted')")
            await asyncio.sleep(1.0)
            await km.interrupt_kernel()
            texts = []
            while True:
                msg = await kc.get_iopub_msg(timeout=30)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "stream":
                    texts.append(msg["content"]["text"])
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
            assert await km.is_alive()
            return texts
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    texts = asyncio.run(scenario())
    assert "".join(texts) == "interrupted\n"


@needs_bwrap
@pytest.mark.slow
def test_kill_kernel_takes_the_students_processes_with_it(box: Sandbox) -> None:
    marker = f"{2000 + uuid.uuid4().int % 1000}.{os.getpid()}"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import os, subprocess\n"
            f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            f"    os.execvp('sleep', ['sleep', '{marker}'])"
        ),
        nbformat.v4.new_code_cell(
            "import time; time.sleep(0.3)\n"
            "print(sum(MARK in open(f'/proc/{p}/cmdline').read()\n"
            "          for p in os.listdir('/proc') if p.isdigit()))".replace(
                "MARK", repr(f"sleep\0{marker}")
            )
        ),
    ]
    km = SandboxedKernelManager(box)
    client = NotebookClient(nb, km=km, timeout=120, shutdown_kernel="immediate")
    client.execute(cleanup_kc=True)  # nbclient shuts the kernel down and stops its client
    assert outputs(nb)[1] == "2\n"  # seen from inside the sandbox's pid namespace
    assert not km.has_kernel
    time.sleep(0.2)
    assert processes_with(f"sleep {marker}") == []
