"""The fork server for the clean process, for real under bubblewrap: a child per request,
prepared once, and nothing of one student's left for the next."""

import dataclasses
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
    assert server.forking  # every run was forked, none started afresh
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


def test_a_child_that_ends_the_server_costs_only_its_own_result(ctx, server):
    killer = call(ctx, "import os, signal\ndef f():\n    os.kill(os.getppid(), signal.SIGKILL)")
    assert not killer.ok and "no result came back" in (killer.error or "")
    quitter = call(ctx, "import os\ndef f():\n    os._exit(3)")
    assert not quitter.ok and "exit code 3" in (quitter.error or "")
    after = call(ctx, "def f(x):\n    return x * 2", 21)
    assert after.ok and after.value == 42
    assert server.started == 3  # each unclean end replaced the server


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


# System V shared memory and a message queue, a listening abstract socket, and 200 MB of
# memory files held only by Unix sockets passing each other's descriptors (no process left).
LEAVE_IPC = """
import ctypes, mmap, os, socket
def f():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    shm = libc.shmget(0x5EC4E7, 4096, 0o1666)
    ctypes.memmove(libc.shmat(shm, None, 0), b"from A", 6)
    queue = libc.msgget(0x5EC4E8, 0o1666)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind("\\0left-by-a")
    listener.listen()
    os.set_inheritable(listener.fileno(), True)
    if os.fork() == 0:
        os.setsid()
        import time
        time.sleep(300)
    fds = []
    for _ in range(2):
        fd = os.memfd_create("x")
        os.ftruncate(fd, 100 << 20)
        with mmap.mmap(fd, 100 << 20) as m:
            for off in range(0, 100 << 20, 1 << 20):
                m[off:off + (1 << 20)] = b"1" * (1 << 20)
        fds.append(fd)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    socket.send_fds(a, [b"x"], [*fds, a.fileno(), b.fileno()])
    return [shm >= 0, queue >= 0]
"""
FIND_IPC = """
import ctypes, os, resource, socket
def f():
    libc = ctypes.CDLL(None, use_errno=True)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect("\\0left-by-a")
        connected = True
    except OSError:
        connected = False
    big = bytearray(300 << 20)  # the memory A hid is gone too
    return {
        "shm": libc.shmget(0x5EC4E7, 0, 0), "queue": libc.msgget(0x5EC4E8, 0),
        "socket": connected, "big": len(big) >> 20,
        "cpu": list(resource.getrlimit(resource.RLIMIT_CPU)),
    }
"""


def test_ipc_objects_sockets_and_hidden_memory_do_not_outlive_a_child(spec, tmp_path):
    limits = dataclasses.replace(spec.sandbox, memory_mb=400, max_disk_mb=16)

    def factory(workdir: Path):
        return sb.Sandbox(limits=limits, workdir=workdir, hidden=[spec.root.resolve()])

    server = ForkServer(factory, None, None, tmp_path)
    ctx = CheckContext(spec, None, tmp_path / "cache", server)
    try:
        left = call(ctx, LEAVE_IPC)
        assert left.ok and left.value == [True, True], left.error
        found = call(ctx, FIND_IPC)
        assert found.ok, found.error
        cpu = limits.cpu_seconds
        assert found.value == {
            "shm": -1, "queue": -1, "socket": False, "big": 300, "cpu": [cpu, cpu + 5]
        }
        assert server.forking  # (the server may have been replaced if memory stayed held)
    finally:
        server.close()


def test_starting_and_preparing_are_not_counted_against_a_run(ctx, tmp_path):
    task = tmp_path / "task.py"
    task.write_text(
        "import time\n"
        "def prepare(payload):\n"
        "    time.sleep(3)\n"
        "def run(namespace, payload):\n"
        "    return namespace['f']()\n"
    )
    answer = Answer(Question(id="f", kind="function", points=1), True, None, "def f():\n    return 7")
    assert ctx.run_task(answer, task, {}, timeout=2) == 7


# The server shares the children's uid: prlimit and setpriority reach it by pid.
CHANGE_THE_SERVER = """
import os, resource
def f():
    server = os.getppid()
    resource.prlimit(server, resource.RLIMIT_AS, (300 << 20, 300 << 20))
    os.setpriority(os.PRIO_PROCESS, server, 19)
    os.sched_setaffinity(server, {0})
    return "changed"
"""
OWN_LIMITS = """
import os, resource
def f():
    return [resource.getrlimit(resource.RLIMIT_AS)[0], os.getpriority(os.PRIO_PROCESS, 0),
            len(os.sched_getaffinity(0))]
"""


def test_a_child_that_changes_the_server_has_it_replaced(ctx, server):
    before = call(ctx, OWN_LIMITS)
    assert call(ctx, CHANGE_THE_SERVER).value == "changed"
    after = call(ctx, OWN_LIMITS)
    assert after.ok and after.value == before.value
    assert server.started == 2


def test_a_server_that_fails_before_the_students_code_never_fails_the_student(ctx, server, tmp_path):
    task = tmp_path / "task.py"
    task.write_text(
        "import os\n"
        "def prepare(payload):\n"
        "    os._exit(1)  # the server dies before it is ready\n"
        "def run(namespace, payload):\n"
        "    return namespace['f']()\n"
    )
    answer = Answer(Question(id="f", kind="function", points=1), True, None, "def f():\n    return 7")
    assert ctx.run_task(answer, task, {}) == 7  # tried in a new server, then started afresh
    assert server.started == 2
