"""The program that runs a student's code in the clean process. It decides nothing.

The grader starts it as ``python -I -c <this file's text>`` inside the sandbox, so no copy of
it lies in the working folder, and sends one JSON request on stdin:

* ``codec``: the text of grader/selfcheck.py (the same plain-data encoding the kernel uses);
* ``source``: the student's code (their definition with its helpers, imports and constants);
* ``mode``: ``"call"`` (call the function ``name`` on each of ``cases``) or ``"task"`` (run
  the assignment's ``task`` module: its ``run(namespace, payload)`` returns plain data).

Everything in this process is as untrusted as the student's kernel: it holds no secret and
prints no verdict. It writes JSON lines (one per case, or one for the task) on its original
stdout; the student's own prints go to stderr. The grader reads those lines as the student's
answer, capped in size before decoding, and computes every expected value in its own process.
"""

import contextlib
import json
import os
import sys
import traceback
import types
from typing import Any, TextIO

MAX_REQUEST = 256 * 1024 * 1024


def _error(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[-800:]


def _decode(codec: Any, data: Any) -> Any:
    """JSON data to values: arrays back to numpy arrays; tuples stay lists."""
    if isinstance(data, dict):
        if codec.ARRAY_KEY in data:
            return codec.decode_array(data[codec.ARRAY_KEY])
        if set(data) == {"__float__"}:  # grader/clean.py FLOAT_KEY: a NaN or an infinity
            return float(data["__float__"])
        return {k: _decode(codec, v) for k, v in data.items()}
    if isinstance(data, list):
        return [_decode(codec, v) for v in data]
    return data


def _call(codec: Any, namespace: dict[str, Any], request: dict[str, Any], out: TextIO) -> None:
    name = request["name"]
    func = namespace.get(name)
    for index, case in enumerate(request["cases"]):
        line: dict[str, Any] = {"case": index}
        if not callable(func):
            line["error"] = f"NameError: {name} is not a function"
        else:
            args = [_decode(codec, a) for a in case.get("args", [])]
            kwargs = {k: _decode(codec, v) for k, v in case.get("kwargs", {}).items()}
            try:
                line["value"] = codec.encode(func(*args, **kwargs))
            except BaseException as exc:  # the student's code may raise anything, even SystemExit
                line["error"] = _error(exc)
            line["args"] = [codec.encode(a) for a in args]
            line["kwargs"] = {k: codec.encode(v) for k, v in kwargs.items()}
        out.write(json.dumps(line) + "\n")
        out.flush()


def _task(
    codec: Any,
    namespace: dict[str, Any],
    request: dict[str, Any],
    out: TextIO,
    task: types.ModuleType | None,
) -> None:
    if task is None:
        task = _module("task", request["task"])
    line: dict[str, Any] = {"case": 0}
    try:
        line["value"] = codec.encode(task.run(namespace, _decode(codec, request["payload"])))
    except BaseException as exc:
        line["error"] = _error(exc)
    out.write(json.dumps(line) + "\n")
    out.flush()


def _run_request(
    request: dict[str, Any], codec: Any, task: types.ModuleType | None, out: TextIO
) -> None:
    """The student's code, then the calls or the task: result lines on `out`."""
    # Our lines go to `out`; whatever the student prints goes to stderr.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    namespace: dict[str, Any] = {"__name__": "student"}
    try:
        exec(compile(request["source"], "student.py", "exec"), namespace)
    except BaseException as exc:
        out.write(json.dumps({"case": -1, "error": _error(exc)}) + "\n")
        out.flush()
        return
    if request["mode"] == "call":
        _call(codec, namespace, request, out)
    else:
        _task(codec, namespace, request, out, task)


def _module(name: str, text: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(text, f"{name}.py", "exec"), module.__dict__)
    return module


def main() -> None:
    request = json.loads(sys.stdin.buffer.read(MAX_REQUEST))
    codec = _module("grader_codec", request["codec"])
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    _run_request(request, codec, None, out)


# ---------------------------------------------------------------------------- fork server
#
# ``python -I -c <this text> serve``: one process per grading worker, in its own sandbox,
# with the codec and the task modules (and what they import and prepare) loaded once; it
# forks a child per request, and the child runs the student's code as main() does.
#
# Nothing of one student's reaches the next: the server never holds a student's data (the
# child reads the request itself; the child's output is relayed through one buffer that is
# zeroed after each piece), so a later child, a copy of the server, finds none in its memory;
# after each child every other process of the sandbox's pid namespace is killed and /tmp,
# /dev/shm and the working folder's writable entries are emptied; and the server is not
# dumpable, so a child can neither trace it nor open its memory or pipes.
#
# Each child also gets a user, IPC and network namespace of its own (System V and POSIX IPC,
# abstract sockets, loopback ports and the user keyring die with it) and its own CPU-time
# limit. A server that cannot make those namespaces says b"N\n" and exits.
#
# In: b"<setup length> <request length> <output cap>\n", the setup (JSON: codec, task, the
# payload for the task's prepare() and the CPU-time limit; nothing of the student's), then,
# once the server has said b"R\n" (ready: started, task prepared; b"R prepared\n" when it
# has just prepared a task), the request (main()'s),
# which only the child reads. Out: pieces b"O <n>\n" + n bytes of the child's stdout and
# b"E <n>\n" + n bytes of its stderr, then b"S <json>\n": {"exit": code | null, "signal": n |
# null, "truncated": bool, "clean": bool, "started": bool}. "clean": false means something
# could not be cleared or restored (the server exits after saying so); "started": false that
# the child failed before the student's code began (the machine's failure: the grader retries).

PIECE = 65536


def _not_dumpable(flag: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, flag, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def _read_exactly(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        data = os.read(fd, min(left, 1 << 20))
        if not data:
            raise EOFError
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _read_header(fd: int) -> list[int] | None:
    """One header line, read a byte at a time (nothing after it is taken from the pipe)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            return None
        line += byte
        if len(line) > 64:
            raise ValueError("bad header")
    return [int(x) for x in line.split()]


CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWNET = 0x08000000, 0x10000000, 0x40000000


def _own_namespaces() -> None:
    """A user, IPC and network namespace of this process's own: the System V and POSIX IPC
    objects, abstract sockets and loopback ports it makes die with it, and a user keyring of
    its own. Same uid and gid inside; the loopback interface up, as in the sandbox."""
    import ctypes
    import fcntl
    import socket
    import struct

    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWIPC | CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack("16sH", fcntl.ioctl(sock, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))  # SIOCSIFFLAGS IFF_UP


def _child(
    setup: dict[str, Any], size: int, codec: Any, task: Any, out_w: int, err_w: int, go_w: int
) -> None:
    """In the forked child: read the request, keep only our pipes, run the student's code
    (after saying so on `go_w`: a child that fails before is the machine's failure, not the
    student's)."""
    import fcntl
    import resource
    import signal

    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        _not_dumpable(1)  # an ordinary process again (it may write its /proc/self maps)
        _own_namespaces()
        cpu = int(setup["cpu_seconds"])  # the server's own limit is its life's, not a run's
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        request = json.loads(_read_exactly(0, size))
        out_w, err_w, go_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in (out_w, err_w, go_w))
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(err_w, 1)
        os.dup2(err_w, 2)
        os.dup2(out_w, 3)
        os.dup2(go_w, 4)
        os.closerange(5, os.sysconf("SC_OPEN_MAX"))
        sys.stdin = open(0, closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        out = os.fdopen(3, "w", encoding="utf-8")
        os.write(4, b"G")
        os.close(4)
        _run_request(request, codec, task, out)
        out.flush()
        sys.stderr.flush()
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(70)
    os._exit(0)


def _relay(pid: int, out_r: int, err_r: int, answers: int, cap: int) -> tuple[int, bool]:
    """Pass the child's output on in pieces until it ends; its wait status, and whether it
    passed `cap` bytes (it is then killed)."""
    import selectors
    import signal
    import time

    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    sent, truncated, status, exited_at = 0, False, None, 0.0
    selector = selectors.DefaultSelector()
    selector.register(out_r, selectors.EVENT_READ, b"O")
    selector.register(err_r, selectors.EVENT_READ, b"E")
    while selector.get_map() and not truncated:
        if status is None:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status, exited_at = code, time.monotonic()
        elif time.monotonic() - exited_at > 0.5:  # descendants keep the pipes open
            break
        for key, _ in selector.select(timeout=0.1):
            n = os.readv(key.fd, [buffer])
            if not n:
                selector.unregister(key.fd)
                continue
            if sent + n > cap:
                truncated = True
                if status is None:
                    os.kill(pid, signal.SIGKILL)
                n = max(cap - sent, 0)
            _write_all(answers, key.data + b" %d\n" % n)
            _write_all(answers, view[:n])
            sent += n
            view[:] = bytes(PIECE)  # nothing of the student's stays in this process
            if truncated:
                break
    selector.close()
    if status is None:
        _, status = os.waitpid(pid, 0)
    return status, truncated


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _others() -> list[int]:
    """Processes of this pid namespace other than its init and this server."""
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def _collect_sockets() -> None:
    """Have the kernel collect Unix sockets left passing each other's descriptors (in
    flight, they would keep what they carry, e.g. memory files, with no process left): its
    garbage collector runs when a socket that held descriptors in flight is closed."""
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        socket.send_fds(a, [b"x"], [a.fileno()])


def _clear(home: str, keep: set[str]) -> bool:
    """Kill every other process here and empty the writable places; False if something
    could not be cleared (said on stderr)."""
    import shutil
    import signal
    import time

    deadline = time.monotonic() + 5
    while _others():
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if time.monotonic() > deadline:
            print(f"server: processes left: {_others()}", file=sys.stderr)
            return False
        time.sleep(0.01)

    _collect_sockets()

    def unlock(_func: Any, path: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):  # (not ours when it is a mount point)
            os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, onerror=unlock)
        else:
            os.unlink(path)

    ok = True
    for folder, kept in (("/tmp", set()), ("/dev/shm", set()), (home, keep)):
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o1777 if folder != home else 0o777)
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            if name in kept or os.path.commonpath([path, home]) == path:
                continue  # the grader's read-only entries, or a folder holding ours
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, onerror=unlock)
                else:
                    os.unlink(path)
            except Exception as exc:  # e.g. RecursionError in a very deep tree
                print(f"server: cannot remove {path}: {exc}", file=sys.stderr)
                ok = False
    return ok


def _own_state() -> list[Any]:
    """What a child could change of the server from outside with the same uid (limits,
    priority, scheduling, CPUs): the server compares it after each child and, when it
    changed, says so and is replaced."""
    import resource

    limits = [resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")]
    return [
        limits,
        os.getpriority(os.PRIO_PROCESS, 0),
        os.sched_getscheduler(0),
        sorted(os.sched_getaffinity(0)),
    ]


def _keys() -> int:
    """How many keys this uid can see (a child's are collected shortly after it ends)."""
    try:
        with open("/proc/keys") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


def _settled(keys: int) -> None:
    import time

    deadline = time.monotonic() + 2
    while _keys() > keys and time.monotonic() < deadline:
        time.sleep(0.01)


def _namespaces_work() -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            _not_dumpable(1)
            _own_namespaces()
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    return os.waitpid(pid, 0)[1] == 0


def serve() -> None:
    _not_dumpable(0)
    home = os.getcwd()
    keep = set(os.listdir(home))  # the read-only entries the grader staged
    answers = os.dup(1)
    os.dup2(2, 1)
    if not _namespaces_work():  # the grader then starts a process per run instead
        _write_all(answers, b"N\n")
        return
    state, keys = _own_state(), _keys()
    modules: dict[tuple[str, str], Any] = {}
    while True:
        header = _read_header(0)
        if header is None:
            return
        setup_size, size, cap = header
        setup = json.loads(_read_exactly(0, setup_size))
        codec = modules.get(("codec", setup["codec"]))
        if codec is None:
            codec = modules["codec", setup["codec"]] = _module("grader_codec", setup["codec"])
        key = ("task", setup["task"])
        prepared = b""
        if setup["task"] and key not in modules:
            modules[key] = None  # a task that fails here is run by each child instead
            try:
                module = _module("task", setup["task"])
                prepare = getattr(module, "prepare", None)
                if callable(prepare):
                    prepare(_decode(codec, setup["payload"]))
                    prepared = b" prepared"
                modules[key] = module
            except Exception:
                traceback.print_exc()
        task = modules.get(key) if setup["task"] else None
        limits = {"cpu_seconds": setup["cpu_seconds"]}
        del setup
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        go_r, go_w = os.pipe()
        sys.stderr.flush()
        _write_all(answers, b"R" + prepared + b"\n")  # ready: the run's clock starts now
        pid = os.fork()
        if pid == 0:
            _child(limits, size, codec, task, out_w, err_w, go_w)
        for fd in (out_w, err_w, go_w):
            os.close(fd)
        status, truncated = _relay(pid, out_r, err_r, answers, cap)
        os.set_blocking(go_r, False)
        try:
            started = os.read(go_r, 1) == b"G"
        except BlockingIOError:
            started = False
        for fd in (out_r, err_r, go_r):
            os.close(fd)
        os.chdir(home)
        clean = _clear(home, keep)
        _settled(keys)
        if _own_state() != state:
            print("server: a child changed the server's limits or scheduling", file=sys.stderr)
            clean = False
        end = {
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "truncated": truncated,
            "clean": clean,
            "started": started,
        }
        _write_all(answers, b"S " + json.dumps(end).encode() + b"\n")
        if not clean:
            return


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    else:
        main()
