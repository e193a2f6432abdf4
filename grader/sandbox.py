"""Run student code in a sandbox.

Every process that executes student code goes through a :class:`Sandbox`: the Jupyter
kernel that nbclient drives (:class:`SandboxedKernelManager`) and the plain "clean"
python processes (:meth:`Sandbox.run`).

Two modes, chosen once per process by actually running bubblewrap (:func:`bwrap_status`):

``bwrap``
    The command runs under ``bwrap`` in new pid, ipc, uts, cgroup and (unless
    ``limits.network``) network namespaces, with a new session, killed with its parent.
    The file system is empty except for read-only binds of what Python needs (/usr and
    the /bin, /lib* links, a few files of /etc, the interpreter's prefixes and
    site-packages, and the caller's ``readonly`` paths), a fresh /proc and /dev, private
    size-capped tmpfs on /tmp and /dev/shm, and the read-write ``workdir`` (plus
    ``writable`` paths). Hidden paths (the repository's ``solutions/`` always, and the
    caller's ``hidden``) that would still be reachable under a bind are covered by an
    empty, unreadable tmpfs (a file by /dev/null). When the grader runs as root, a tiny
    shim inside the sandbox drops to an unprivileged uid (65534 by default) before it
    executes the command: root ignores RLIMIT_NPROC, so without the drop a fork bomb
    would not be contained (bwrap's own ``--unshare-user --uid`` keeps the real uid 0
    and does not help).

``rlimits-only``
    bwrap is missing or does not work here (macOS, a locked-down container): only the
    resource limits apply; :meth:`Sandbox.warning` says what is missing.

Resource limits are set in the child by :meth:`Sandbox.preexec` in both modes:
RLIMIT_DATA = ``memory_mb`` (since Linux 4.7 it counts every private writable mapping,
i.e. what numpy/torch allocate, and not torch's large read-only/PROT_NONE mappings),
RLIMIT_AS = a generous backstop (``2 * memory_mb + 1024`` MiB) for shared anonymous
mappings, RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_CORE = 0 and RLIMIT_NPROC = the tasks the
sandbox's uid already has + ``max_processes`` (the kernel counts every task of a uid, so
sandboxes running at once under one uid share that budget: give parallel workers their
own ``uid``). The limits are per process (a student who forks can use ``memory_mb`` in
each child, up to ``max_processes``). No cgroup is used: this machine has a cgroup v1 hierarchy that
belongs to the session machinery, and cgroup v2's memory controller is not delegated.

Kernels (:class:`SandboxedKernelManager`) use jupyter_client's IPC transport: the
connection file and the sockets live in a private folder bound read-write into the
sandbox at the same path, as the network namespace has no route to our TCP ports.

The module has no side effects at import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import resource
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from jupyter_client import AsyncKernelManager, KernelManager
from jupyter_client.kernelspec import KernelSpec

from .errors import ExecutionError
from .spec import SandboxLimits

MiB = 1024 * 1024

#: The unprivileged uid/gid student code runs as when the grader runs as root.
DEFAULT_UID = 65534
DEFAULT_GID = 65534

MODE_BWRAP = "bwrap"
MODE_RLIMITS = "rlimits-only"

#: Variables passed from the grader's environment into the sandbox (nothing else is).
ENV_WHITELIST = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "LC_MESSAGES", "TZ")

#: Single files or folders of /etc bound read-only when they exist.
_ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "host.conf",
    "alternatives",
    "mime.types",
    "os-release",
)
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

#: Drops to an unprivileged uid inside the bwrap sandbox, then executes the command.
_SHIM = (
    "import os,sys\n"
    "u,g=int(sys.argv[1]),int(sys.argv[2])\n"
    "os.setgroups([]);os.setresgid(g,g,g);os.setresuid(u,u,u)\n"
    "try:\n"
    " os.execvp(sys.argv[3],sys.argv[3:])\n"
    "except OSError as e:\n"
    " sys.stderr.write(f'sandbox: cannot execute {sys.argv[3]}: {e}\\n');os._exit(127)\n"
)

_MEMORY_MARKERS = (b"MemoryError", b"Cannot allocate memory", b"can't allocate memory")


def output_cap_bytes(limits: SandboxLimits) -> int:
    """How many bytes of output (stdout + stderr, or a notebook's outputs) to keep."""
    return max(0, limits.max_output_mb) * MiB


def repo_root() -> Path:
    """The repository (or installed package's parent) this module lives in."""
    return Path(__file__).resolve().parents[1]


def default_hidden() -> tuple[Path, ...]:
    """Paths every sandbox hides whatever the caller passes: the repository's solutions/."""
    return (repo_root() / "solutions",)


# --------------------------------------------------------------------------- probing


class _Mounts:
    """Builds bwrap's mount options in order, creating missing parent folders as 0755.

    (bwrap creates the parents of a mount point as 0700, which an unprivileged uid cannot
    traverse.)
    """

    def __init__(self) -> None:
        self.args: list[str] = []
        self.points: list[Path] = []  # mount points and folders made so far
        self.binds: list[Path] = []  # bind mounts (their content exists already)

    def _parents(self, dest: Path) -> None:
        for parent in reversed(dest.parents[:-1]):  # without "/"
            if parent in self.points or any(_under(parent, b) for b in self.binds):
                continue
            self.args += ["--perms", "0755", "--dir", str(parent)]
            self.points.append(parent)

    def add(self, option: str, dest: Path, *, src: str | None = None, bind: bool = False) -> None:
        self._parents(dest)
        self.args += [option, *([src] if src is not None else []), str(dest)]
        self.points.append(dest)
        if bind:
            self.binds.append(dest)

    def ro(self, path: Path) -> None:
        self.add("--ro-bind", path, src=str(path), bind=True)

    def rw(self, path: Path) -> None:
        self.add("--bind", path, src=str(path), bind=True)

    def tmpfs(self, path: Path, perms: str, size: int) -> None:
        self._parents(path)
        self.args += ["--perms", perms, "--size", str(size), "--tmpfs", str(path)]
        self.points.append(path)

    def symlink(self, target: str, path: Path) -> None:
        self.add("--symlink", path, src=target)


def _system_mounts(mounts: _Mounts, scratch_bytes: int) -> None:
    """The read-only system part of the file system, /proc, /dev and the private /tmp."""
    mounts.ro(Path("/usr"))
    for name in _ROOT_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            mounts.symlink(os.readlink(path), path)
        elif path.is_dir():
            mounts.ro(path)
    for name in _ETC_ENTRIES:
        path = Path("/etc") / name
        if path.exists():
            mounts.ro(path)
    # torch's cpuinfo reads the CPU topology and prints errors without it.
    if Path("/sys/devices/system/cpu").is_dir():
        mounts.ro(Path("/sys/devices/system/cpu"))
    mounts.add("--proc", Path("/proc"))
    mounts.add("--dev", Path("/dev"))
    size = max(scratch_bytes, 16 * MiB)
    mounts.tmpfs(Path("/tmp"), "1777", size)
    mounts.tmpfs(Path("/dev/shm"), "1777", size)


def _namespace_args(network: bool) -> list[str]:
    args = [
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
    ]
    if not network:
        args.append("--unshare-net")
    if os.geteuid() != 0:
        args.append("--unshare-user")
    return args


@functools.cache
def bwrap_status() -> tuple[bool, str]:
    """Whether bubblewrap works here, and why not. Probed once per process by running it."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False, "bwrap is not installed"
    mounts = _Mounts()
    _system_mounts(mounts, 16 * MiB)
    probe = [exe, *_namespace_args(network=False), *mounts.args, "--", "true"]
    try:
        proc = subprocess.run(
            probe,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"bwrap could not be run: {exc}"
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        why = detail[-1] if detail else f"exit code {proc.returncode}"
        return False, f"bwrap does not work here ({why})"
    return True, "bwrap works"


def bwrap_available() -> bool:
    """Whether bubblewrap works here (cached probe)."""
    return bwrap_status()[0]


@functools.cache
def _uid_drop_works(uid: int, gid: int) -> bool:
    """Without bwrap, as root: can `uid` run this interpreter (is its prefix readable)?"""
    if os.geteuid() != 0:
        return False

    def drop() -> None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", "pass"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
            cwd="/",
            preexec_fn=drop,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _count_tasks(uid: int) -> int | None:
    """Tasks (threads count, as for RLIMIT_NPROC) whose real uid is `uid`; None if unknown."""
    proc = Path("/proc")
    if not (proc / "self" / "status").exists():
        return None
    total = 0
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "status").read_text()
        except OSError:
            continue
        real_uid = threads = None
        for line in text.splitlines():
            if line.startswith("Uid:"):
                real_uid = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        if real_uid == uid:
            total += threads or 1
    return total


# --------------------------------------------------------------------------- results


@dataclass
class SandboxResult:
    """What a sandboxed process did. `returncode` is negative for a signal (as subprocess)."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes
    duration: float
    killed_reason: str | None = None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_reason is None

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


def _describe_signal(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "?"
    return f"signal {signum} ({name})"


# --------------------------------------------------------------------------- sandbox


@dataclass
class Sandbox:
    """Where and with which limits student code runs; see the module docstring.

    `readonly` paths are bound read-only (a staged data set), `writable` ones
    read-write (besides `workdir`), `hidden` ones are made unreadable if a bind would
    expose them (the repository's solutions/ always is). `use_bwrap=None` chooses by
    probing; False forces the rlimits-only mode; True requires bwrap (ExecutionError
    if it does not work).
    """

    limits: SandboxLimits
    workdir: Path
    readonly: Sequence[Path] = ()
    hidden: Sequence[Path] = ()
    writable: Sequence[Path] = ()
    uid: int = DEFAULT_UID
    gid: int = DEFAULT_GID
    use_bwrap: bool | None = None
    _resolved_mode: str | None = field(default=None, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ mode

    @property
    def mode(self) -> str:
        """The mode in force: "bwrap" or "rlimits-only"."""
        if self._resolved_mode is None:
            if self.use_bwrap is False:
                self._resolved_mode = MODE_RLIMITS
            elif bwrap_available():
                self._resolved_mode = MODE_BWRAP
            elif self.use_bwrap:
                raise ExecutionError(
                    f"the sandbox needs bubblewrap: {bwrap_status()[1]}",
                    hint="install bubblewrap (apt-get install bubblewrap) or allow user namespaces",
                )
            else:
                self._resolved_mode = MODE_RLIMITS
        return self._resolved_mode

    @property
    def drops_uid(self) -> bool:
        """Whether student code runs as `uid` instead of the grader's (root's) uid."""
        if os.geteuid() != 0:
            return False
        if self.mode == MODE_BWRAP:
            return True
        return _uid_drop_works(self.uid, self.gid)

    @property
    def runs_as(self) -> int:
        """The real uid student code runs as (outside any user namespace)."""
        return self.uid if self.drops_uid else os.getuid()

    def warning(self) -> str | None:
        """One text naming the protections missing here, or None if all are in force."""
        missing: list[str] = []
        if self.mode != MODE_BWRAP:
            why = "bwrap is turned off" if self.use_bwrap is False else bwrap_status()[1]
            missing.append(
                f"{why}: student code runs with resource limits only, with NO "
                "network isolation and NO file-system isolation (it can read solutions/, "
                "other submissions and the gradebook, and write anywhere the grader can)"
            )
            if os.geteuid() == 0 and not self.drops_uid:
                missing.append(
                    f"running as root and uid {self.uid} cannot run {sys.executable}, so the "
                    "process-count limit is not enforced (root ignores RLIMIT_NPROC)"
                )
        if _count_tasks(self.runs_as) is None:
            missing.append("no /proc here, so the process-count limit is not set")
        if not missing:
            return None
        return "sandbox: " + "; ".join(missing) + "."

    # ------------------------------------------------------------------ environment

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The complete environment for student code: a whitelist of ours plus fixed values."""
        env = {key: os.environ[key] for key in ENV_WHITELIST if key in os.environ}
        bindir = os.path.dirname(sys.executable)
        tmp = "/tmp" if self.mode == MODE_BWRAP else str(self.workdir.resolve() / ".tmp")
        env.update(
            PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin",
            HOME=str(self.workdir.resolve()),
            TMPDIR=tmp,
            IPYTHONDIR=f"{tmp}/.ipython",
            MPLCONFIGDIR=f"{tmp}/.matplotlib",
            MPLBACKEND="Agg",
            PYTHONHASHSEED="0",
            PYTHONNOUSERSITE="1",
            PYTHONDONTWRITEBYTECODE="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            NUMEXPR_NUM_THREADS="1",
            LANG=env.get("LANG", "C.UTF-8"),
        )
        if extra:
            env.update({k: v for k, v in extra.items() if not _is_proxy(k)})
        return env

    # ------------------------------------------------------------------ limits

    def rlimits(self) -> list[tuple[int, tuple[int, int]]]:
        """The (resource, (soft, hard)) pairs preexec() sets, clamped to our hard limits."""
        lim = self.limits
        wanted: list[tuple[int, int, int]] = [
            (resource.RLIMIT_DATA, lim.memory_mb * MiB, lim.memory_mb * MiB),
            (
                resource.RLIMIT_AS,
                (2 * lim.memory_mb + 1024) * MiB,
                (2 * lim.memory_mb + 1024) * MiB,
            ),
            (resource.RLIMIT_CPU, lim.cpu_seconds, lim.cpu_seconds + 5),
            (resource.RLIMIT_FSIZE, lim.max_file_mb * MiB, lim.max_file_mb * MiB),
            (resource.RLIMIT_CORE, 0, 0),
        ]
        existing = _count_tasks(self.runs_as)
        if existing is not None:
            # RLIMIT_NPROC counts every task of the uid, not only the sandbox's.
            nproc = existing + lim.max_processes
            wanted.append((resource.RLIMIT_NPROC, nproc, nproc))
        result: list[tuple[int, tuple[int, int]]] = []
        for res, soft, hard in wanted:
            _, cur_hard = resource.getrlimit(res)
            if cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
                soft = min(soft, hard)
            result.append((res, (soft, hard)))
        return result

    def preexec(self) -> Callable[[], None]:
        """A function for Popen(preexec_fn=...): sets the limits (and, without bwrap, the uid)."""
        limits = self.rlimits()
        drop = self.mode != MODE_BWRAP and self.drops_uid
        uid, gid = self.uid, self.gid

        def child() -> None:
            for res, value in limits:
                resource.setrlimit(res, value)
            if drop:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)

        return child

    # ------------------------------------------------------------------ file system

    def _python_paths(self) -> list[Path]:
        candidates = {
            sys.prefix,
            sys.base_prefix,
            sys.exec_prefix,
            sys.base_exec_prefix,
            os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
            *site.getsitepackages(),
        }
        return [Path(p).resolve() for p in candidates if p and os.path.isdir(p)]

    def _binds(self) -> list[tuple[str, Path]]:
        """(kind, path) with kind "ro", "rw" or "hide", in mount order."""
        ro: list[Path] = []
        for path in self._python_paths():
            if not _under(path, Path("/usr")):
                ro.append(path)
        for path in self.readonly:
            if not Path(path).exists():
                raise ExecutionError(
                    f"sandbox: the read-only path {path} does not exist",
                    hint="stage the data set before starting the sandbox",
                )
            ro.append(Path(path).resolve())
        rw = [self.workdir.resolve(), *(Path(p).resolve() for p in self.writable)]
        binds = [("ro", p) for p in _outermost(ro)] + [("rw", p) for p in dict.fromkeys(rw)]
        bound = [p for _, p in binds] + [Path("/usr"), Path("/etc"), Path("/sys")]
        for path in dict.fromkeys(Path(p).resolve() for p in (*default_hidden(), *self.hidden)):
            if path.exists() and any(_under(path, b) for b in bound):
                binds.append(("hide", path))
        order = {"ro": 0, "rw": 1, "hide": 2}
        return sorted(binds, key=lambda b: (len(b[1].parts), order[b[0]]))

    def bwrap_args(self) -> list[str]:
        """The bwrap options (without the program and the command)."""
        mounts = _Mounts()
        _system_mounts(mounts, max(2 * self.limits.max_file_mb, 64) * MiB)
        binds = self._binds()
        for kind, path in binds:
            if kind == "ro":
                mounts.ro(path)
            elif kind == "rw":
                mounts.rw(path)
            elif path.is_dir():
                # Traversable (not listable) if a bind lies below it, else closed.
                below = any(k != "hide" and p != path and _under(p, path) for k, p in binds)
                mounts.tmpfs(path, "0111" if below else "0000", 4096)
            else:
                mounts.add("--ro-bind", path, src="/dev/null")
        return [
            *_namespace_args(self.limits.network),
            *mounts.args,
            "--chdir",
            str(self.workdir.resolve()),
            # ipykernel would watch our pid, which is not its parent inside the pid
            # namespace (it would exit at once); 1 means "no parent to watch".
            "--setenv",
            "JPY_PARENT_PID",
            "1",
        ]

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run in the sandbox (unchanged in the rlimits-only mode)."""
        if self.mode != MODE_BWRAP:
            return list(argv)
        exe = shutil.which("bwrap") or "bwrap"
        shim: list[str] = []
        if self.drops_uid:
            shim = [sys.executable, "-I", "-S", "-c", _SHIM, str(self.uid), str(self.gid)]
        return [exe, *self.bwrap_args(), "--", *shim, *argv]

    def prepare(self) -> None:
        """Create the workdir and hand it (and `writable`) to the sandbox's uid."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.mode != MODE_BWRAP:
            (self.workdir / ".tmp").mkdir(exist_ok=True)
        if not self.drops_uid:
            return
        for root in (self.workdir, *self.writable):
            _chown_tree(Path(root), self.uid, self.gid)

    # ------------------------------------------------------------------ running

    def popen_kwargs(self, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for Popen that put a process in this sandbox."""
        return {
            "cwd": str(self.workdir.resolve()),
            "env": self.env(extra_env),
            "preexec_fn": self.preexec(),
            "start_new_session": True,
            "close_fds": True,
        }

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float,
        env: dict[str, str] | None = None,
    ) -> SandboxResult:
        """Run a plain process to completion in the sandbox, bounded in time and output.

        The whole process group (and, under bwrap, the whole pid namespace) is killed on
        timeout, when the output passes the cap, and when the process exits.
        """
        self.prepare()
        cmd = self.command(argv)
        cap = output_cap_bytes(self.limits)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                **self.popen_kwargs(env),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ExecutionError(f"sandbox: cannot start {argv[0]}: {exc}") from exc
        chunks: dict[int, list[bytes]] = {1: [], 2: []}
        captured = 0
        killed: str | None = None
        truncated = False
        exited_at: float | None = None
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, 1)
        sel.register(proc.stderr, selectors.EVENT_READ, 2)
        pending = memoryview(input or b"")
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            if pending:
                sel.register(proc.stdin, selectors.EVENT_WRITE, 0)
            else:
                proc.stdin.close()
        try:
            while sel.get_map():
                now = time.monotonic()
                if now - start >= timeout:
                    killed = f"timeout ({timeout:g} s)"
                    break
                if proc.poll() is not None:
                    exited_at = exited_at or now
                    if now - exited_at > 0.5:  # descendants keep the pipes open
                        break
                for key, _ in sel.select(timeout=min(0.1, max(0.0, timeout - (now - start)))):
                    if key.data == 0:
                        assert proc.stdin is not None
                        try:
                            sent = os.write(proc.stdin.fileno(), pending[:65536])
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            sent = len(pending)
                        pending = pending[sent:]
                        if not pending:
                            sel.unregister(proc.stdin)
                            proc.stdin.close()
                        continue
                    data = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    room = cap - captured
                    if len(data) > room:
                        data = data[: max(room, 0)]
                        truncated = True
                    chunks[key.data].append(data)
                    captured += len(data)
                    if truncated:
                        killed = f"output limit ({self.limits.max_output_mb} MB)"
                        break
                if killed:
                    break
        finally:
            _kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.returncode is None:  # pragma: no cover - the kernel did not reap it
                proc.kill()
                proc.wait()
            sel.close()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        returncode = proc.returncode
        if self.mode == MODE_BWRAP and returncode > 128 and returncode - 128 < signal.NSIG:
            returncode = -(returncode - 128)  # bwrap reports a signal as 128 + N
        stderr = b"".join(chunks[2])
        if killed is None:
            killed = self._reason(returncode, stderr)
        return SandboxResult(
            argv=list(argv),
            returncode=returncode,
            stdout=b"".join(chunks[1]),
            stderr=stderr,
            duration=time.monotonic() - start,
            killed_reason=killed,
            truncated=truncated,
        )

    def _reason(self, returncode: int, stderr: bytes) -> str | None:
        if returncode < 0:
            signum = -returncode
            if signum == signal.SIGXCPU:
                return f"cpu time limit ({self.limits.cpu_seconds} s)"
            if signum == signal.SIGXFSZ:
                return f"file size limit ({self.limits.max_file_mb} MB)"
            if signum == signal.SIGKILL:
                return f"{_describe_signal(signum)}: cpu time limit or out of memory"
            return _describe_signal(signum)
        if returncode != 0 and any(m in stderr[-4096:] for m in _MEMORY_MARKERS):
            return f"memory limit ({self.limits.memory_mb} MB)"
        return None


def _is_proxy(name: str) -> bool:
    return name.lower().endswith("_proxy")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group the sandbox started (bwrap takes its namespace with it)."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()


def _under(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _outermost(paths: Sequence[Path]) -> list[Path]:
    unique = sorted(dict.fromkeys(paths), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(_under(path, k) for k in kept):
            kept.append(path)
    return kept


def _walk(root: Path) -> Iterator[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            yield Path(dirpath, name)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give directories and single-linked regular files under `root` to uid:gid."""
    if not root.exists():
        return
    for path in _walk(root):
        try:
            st = path.lstat()
        except OSError:
            continue
        if (st.st_uid, st.st_gid) == (uid, gid):
            continue
        is_dir = path.is_dir() and not path.is_symlink()
        if is_dir or (path.is_file() and not path.is_symlink() and st.st_nlink == 1):
            os.lchown(path, uid, gid)


# --------------------------------------------------------------------------- kernels


# nbclient with a BlockingKernelClient waits in get_msg(timeout=None): no cell timeout and no
# dead kernel is ever noticed. Every synchronous manager here hands out this client instead.
ASYNC_CLIENT = "jupyter_client.asynchronous.AsyncKernelClient"


class _SandboxedKernelMixin:
    """Launches the kernel inside a Sandbox over IPC sockets; see SandboxedKernelManager."""

    sandbox: Sandbox
    kernel_env: dict[str, str]
    _ipc_dir: Path
    _default_client_class: str | None = None  # None: the manager class's own default

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        kernel_env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("transport", "ipc")
        if self._default_client_class:
            kwargs.setdefault("client_class", self._default_client_class)
        super().__init__(**kwargs)
        self._setup_sandbox(sandbox, kernel_env)

    @classmethod
    def for_sandbox(
        cls, sandbox: Sandbox, *, kernel_env: dict[str, str] | None = None, **kwargs: Any
    ) -> Self:
        """A manager for `sandbox`; `kwargs` are KernelManager traits (kernel_name=...)."""
        return cls(sandbox, kernel_env=kernel_env, **kwargs)

    def _setup_sandbox(self, sandbox: Sandbox, kernel_env: dict[str, str] | None) -> None:
        self._ipc_dir = Path(tempfile.mkdtemp(prefix="grader-kernel-"))
        self.sandbox = dataclasses.replace(sandbox, writable=(*sandbox.writable, self._ipc_dir))
        self.kernel_env = dict(kernel_env or {})
        km: Any = self
        km.connection_file = str(self._ipc_dir / "kernel.json")
        km.ip = str(self._ipc_dir / "ipc")

    @property
    def ipc_dir(self) -> Path:
        """The folder with the connection file and the IPC sockets (bound into the sandbox)."""
        return self._ipc_dir

    @property
    def kernel_spec(self) -> KernelSpec | None:
        spec: KernelSpec | None = super().kernel_spec  # type: ignore[misc]
        if spec is not None:
            # SIGINT to bwrap would kill the sandbox: interrupt with a control message.
            spec.interrupt_mode = "message"
        return spec

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        # Without an env, jupyter_client passes a copy of os.environ on: keep only what
        # the caller gave explicitly (start_kernel(env=...), nbclient's execute(env=...)).
        given = kw.get("env")
        if given is None:
            kw.pop("env", None)  # env=None would break jupyter_client's pre_launch
        self._caller_env = {
            k: v for k, v in (given or {}).items() if k not in ("PATH", "JPY_PARENT_PID")
        }
        pre_start = super()._async_pre_start_kernel  # type: ignore[misc]
        result: tuple[list[str], dict[str, Any]] = await pre_start(**kw)
        return result

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        sandbox = self.sandbox
        sandbox.prepare()  # also hands the IPC folder to the sandbox's uid
        if sandbox.drops_uid:
            os.chown(self._ipc_dir / "kernel.json", sandbox.uid, sandbox.gid)
        extra = {**getattr(self, "_caller_env", {}), **self.kernel_env}
        kw.update(sandbox.popen_kwargs(extra))
        kw.pop("close_fds", None)
        kw.pop("start_new_session", None)  # jupyter_client's launcher sets it
        log = None
        if kw.get("stdout") is None and kw.get("stderr") is None:
            # The kernel's own output (not the cells'; ipykernel sends those to the
            # notebook) goes to a log, capped by RLIMIT_FSIZE, not to our terminal.
            log = open(self.kernel_log_path, "ab")
            if sandbox.drops_uid:
                os.chown(self.kernel_log_path, sandbox.uid, sandbox.gid)
            kw["stdout"], kw["stderr"] = log, subprocess.STDOUT
        try:
            await super()._async_launch_kernel(  # type: ignore[misc]
                sandbox.command(kernel_cmd), **kw
            )
        finally:
            if log is not None:
                log.close()

    @property
    def kernel_log_path(self) -> Path:
        """Where the kernel process's own stdout and stderr go (removed at shutdown)."""
        return self._ipc_dir / "kernel.log"

    def kernel_log(self, limit: int = 8192) -> str:
        """The end of the kernel's own output, e.g. to explain a kernel that died."""
        try:
            with open(self.kernel_log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - limit))
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)  # type: ignore[misc]
        if not restart:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)


class SandboxedKernelManager(_SandboxedKernelMixin, KernelManager):
    """A KernelManager whose kernel runs inside `sandbox`, talking over IPC sockets.

    Use it as ``NotebookClient(nb, km=SandboxedKernelManager(sandbox))``. nbclient does
    not shut down a kernel manager it was given unless ``execute(cleanup_kc=True)``: call
    ``km.shutdown_kernel(now=True)`` afterwards (killing bwrap kills everything the
    student started).

    Its methods are synchronous, but ``client()`` returns an AsyncKernelClient: with a
    BlockingKernelClient nbclient blocks its event loop in ``get_msg(timeout=None)``, so
    cell timeouts (and interrupt_on_timeout) never fire. Pass
    ``client_class="jupyter_client.blocking.BlockingKernelClient"`` for a blocking one.
    """

    _default_client_class = ASYNC_CLIENT


class AsyncSandboxedKernelManager(_SandboxedKernelMixin, AsyncKernelManager):
    """The asyncio flavour of SandboxedKernelManager (nbclient's default class)."""
