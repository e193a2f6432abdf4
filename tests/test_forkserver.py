"""The fork server for the clean process, for real under bubblewrap: a child per request,
prepared once, and nothing of one student's left for the next."""

from pathlib import Path

import numpy as np
import pytest

from grader import sandbox as sb
from grader.checking import Answer, CheckContext
from grader.forkserver import ForkServer
from grader.functions import Case
from grader.spec import Question


@pytest.fixture
def server(spec, tmp_path):
    def factory(workdir: Path):
        return sb.Sandbox(limits=spec.sandbox, workdir=workdir, hidden=[spec.root.resolve()])

    if factory(tmp_path).mode != sb.MODE_BWRAP:
        pytest.skip("the fork server needs bubblewrap")
    server = ForkServer(factory, None, None, tmp_path)
    yield server
    server.close()


@pytest.fixture
def ctx(spec, tmp_path, server):
    return CheckContext(spec, None, tmp_path / "cache", server)


def call(ctx: CheckContext, source: str, *args):
    answer = Answer(Question(id="f", kind="function", points=1), True, None, source)
    (result,) = ctx.call_function(answer, [Case(args)])
    return result


# Leaves a detached process, a daemon of its own, files in every writable place and a folder
# it cannot be walked into.
LEAVE_TRACES = """
import os, subprocess, sys
def f():
    subprocess.Popen(["sleep", "300"], start_new_session=True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            import time
            time.sleep(300)
        os._exit(0)
    for folder in ("/tmp", "/dev/shm", "."):
        with open(os.path.join(folder, "left-by-a"), "w") as handle:
            handle.write("a")
    os.makedirs("locked/inner")
    os.chmod("locked", 0)
    os.environ["LEFT_BY_A"] = "1"  # and in this process's own state
    sys.modules["json"].LEFT_BY_A = 1
    return os.getpid()
"""

LOOK_AROUND = """
import os, sys
def f():
    me, parent = os.getpid(), os.getppid()
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return {
        "others": [p for p in pids if p not in (1, me, parent)],
        # (the folders that hold the working folder are mount points, not left-overs)
        "tmp": [n for n in os.listdir("/tmp") if not os.getcwd().startswith("/tmp/" + n)],
        "shm": os.listdir("/dev/shm"), "here": os.listdir("."),
        "state": ["LEFT_BY_A" in os.environ, hasattr(sys.modules["json"], "LEFT_BY_A")],
    }
"""


def test_a_child_per_request_and_nothing_left_for_the_next(ctx, server):
    first = call(ctx, LEAVE_TRACES)
    assert first.ok, first.error
    second = call(ctx, LOOK_AROUND)
    assert second.ok, second.error
    assert second.value["others"] == []
    assert second.value["tmp"] == second.value["shm"] == second.value["here"] == []
    assert second.value["state"] == [False, False]  # a fresh copy of the server
    assert server.started == 1  # the same server: it cleared up, it was not replaced


# A student's source and output hold a marker; a later student scans all of their own
# process's memory for it (with a pattern that does not match itself).
MARKER = "QZXLEAK{}KAELXZQ"
SPILL = """
import sys
SECRET = "{marker}"
def f():
    print(SECRET)
    print(SECRET, file=sys.stderr)
    return SECRET
"""
SCAN = r"""
import re
def f():
    pattern = re.compile(rb"QZXLEAK\d{6}KAELXZQ")
    found = set()
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or "[vvar" in line or "[vsyscall" in line:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                found.update(m.decode() for m in pattern.findall(mem.read(end - start)))
            except (OSError, ValueError, OverflowError):
                pass
    return sorted(found)
"""


def test_a_later_child_finds_nothing_of_an_earlier_student_in_its_memory(ctx):
    marker = MARKER.format(482913)
    spilled = call(ctx, SPILL.format(marker=marker))
    assert spilled.ok and spilled.value == marker
    scan = call(ctx, SCAN)
    assert scan.ok, scan.error
    assert scan.value == []
    # the scan does find a marker where there is one: in its own source
    own = call(ctx, SCAN.replace("def f():", f"KEEP = '{MARKER.format(777777)}'\ndef f():"))
    assert own.value == [MARKER.format(777777)]


PRY = """
import ctypes, os
def f():
    server = os.getppid()
    tried = {}
    for what in ("mem", "environ", "fd"):
        path = f"/proc/{server}/{what}"
        try:
            os.listdir(path) if what == "fd" else open(path, "rb").read(16)
            tried[what] = "opened"
        except OSError as exc:
            tried[what] = type(exc).__name__
    libc = ctypes.CDLL(None, use_errno=True)
    tried["ptrace"] = libc.ptrace(16, server, None, None)  # PTRACE_ATTACH
    return tried
"""


def test_the_server_cannot_be_traced_or_read(ctx):
    pried = call(ctx, PRY)
    assert pried.ok, pried.error
    assert pried.value == {
        "mem": "PermissionError", "environ": "PermissionError", "fd": "PermissionError",
        "ptrace": -1,
    }


def test_a_child_that_kills_the_server_costs_only_its_own_result(ctx, server):
    killer = call(ctx, "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1")
    assert not killer.ok and "no result came back" in (killer.error or "")
    after = call(ctx, "def f(x):\n    return x * 2", 21)
    assert after.ok and after.value == 42
    assert server.started == 2


def test_a_task_is_prepared_once_and_shared_by_every_child(ctx, server, tmp_path):
    task = tmp_path / "task.py"
    task.write_text(
        "import os\n"
        "PREPARED = {}\n"
        "def prepare(payload):\n"
        "    PREPARED['pid'] = os.getpid()\n"
        "    PREPARED['table'] = payload['table'] * 10\n"
        "def run(namespace, payload):\n"
        "    return [PREPARED.get('pid'), os.getpid(), namespace['f'](PREPARED['table'])]\n"
    )
    answer = Answer(Question(id="f", kind="function", points=1), True, None, "def f(t):\n    return t.sum()")
    first = ctx.run_task(answer, task, {"table": np.arange(4)})
    second = ctx.run_task(answer, task, {"table": np.arange(4)})
    assert first[0] == second[0]  # prepared by one process: the server
    assert len({first[0], first[1], second[1]}) == 3  # each run a child of its own
    assert first[2] == second[2] == 60
    assert server.started == 1
