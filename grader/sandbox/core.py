"""The Sandbox: where and with which limits one submission's code runs."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExecutionError
from ..spec import SandboxLimits
from . import cgroups, probe, uids
from .limits import disk_bytes, output_cap_bytes, rlimits, sandbox_env
from .mounts import Layout, MiB
from .run import SandboxResult, exit_reason, pump, reap

MODE_BWRAP = "bwrap"
MODE_RLIMITS = "rlimits-only"

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


def repo_root() -> Path:
    """The repository (or installed package's parent) this package lives in."""
    return Path(__file__).resolve().parents[2]


def default_hidden() -> tuple[Path, ...]:
    """Paths every sandbox hides whatever the caller passes: the repository's solutions/."""
    return (repo_root() / "solutions",)


@dataclass
class Sandbox:
    """Where and with which limits student code runs; see the package docstring.

    `readonly` paths are bound read-only (a staged data set), `writable` ones
    read-write (besides `workdir`), `hidden` ones are made unreadable if a bind would
    expose them (the repository's solutions/ always is). `use_bwrap=None` chooses by
    probing; False forces the rlimits-only mode; True requires bwrap (ExecutionError
    if it does not work). `uid`/`gid` (None: this process's leased uid, see
    :mod:`.uids`) is who student code runs as when the grader runs as root.
    `use_cgroup=False` turns the control group off (the rlimits stay).
    """

    limits: SandboxLimits
    workdir: Path
    readonly: Sequence[Path] = ()
    hidden: Sequence[Path] = ()
    writable: Sequence[Path] = ()
    uid: int | None = None
    gid: int | None = None
    use_bwrap: bool | None = None
    use_cgroup: bool = True
    _resolved_mode: str | None = field(default=None, init=False, repr=False, compare=False)
    _group: cgroups.Cgroup | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.uid is None:
            self.uid = uids.worker_uid() if os.geteuid() == 0 else uids.FALLBACK_UID
        if self.gid is None:
            self.gid = self.uid

    @property
    def ids(self) -> tuple[int, int]:
        assert self.uid is not None and self.gid is not None
        return self.uid, self.gid

    # ------------------------------------------------------------------ mode

    @property
    def mode(self) -> str:
        """The mode in force: "bwrap" or "rlimits-only"."""
        if self._resolved_mode is None:
            if self.use_bwrap is False:
                self._resolved_mode = MODE_RLIMITS
            elif probe.bwrap_available():
                self._resolved_mode = MODE_BWRAP
            elif self.use_bwrap:
                raise ExecutionError(
                    f"the sandbox needs bubblewrap: {probe.bwrap_status()[1]}",
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
        return probe.uid_drop_works(*self.ids)

    @property
    def runs_as(self) -> int:
        """The real uid student code runs as (outside any user namespace)."""
        return self.ids[0] if self.drops_uid else os.getuid()

    @property
    def cgroup_kind(self) -> str | None:
        """ "v2", "v1", or None when no control group is used."""
        return cgroups.cgroup_status()[0] if self.use_cgroup else None

    def warning(self) -> str | None:
        """One text naming the protections missing here, or None if all are in force."""
        missing: list[str] = []
        if self.mode != MODE_BWRAP:
            why = "bwrap is turned off" if self.use_bwrap is False else probe.bwrap_status()[1]
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
        if self.use_cgroup and self.cgroup_kind is None:
            missing.append(
                f"{cgroups.cgroup_status()[1]}: the memory, process and CPU limits hold per "
                "process only, submissions graded at once share the CPU without a fair "
                "share, and time limits count wall time (run as root, or with a delegated "
                "cgroup, for per-submission limits)"
            )
        if probe.count_tasks(self.runs_as) is None:
            missing.append("no /proc here, so the process-count limit is not set")
        if not missing:
            return None
        return "sandbox: " + "; ".join(missing) + "."

    # ------------------------------------------------------------------ environment, limits

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The complete environment for student code: a whitelist of ours plus fixed values."""
        home = str(self.workdir.resolve())
        tmp = "/tmp" if self.mode == MODE_BWRAP else str(self.workdir.resolve() / ".tmp")
        return sandbox_env(home, tmp, extra)

    def rlimits(self) -> list[tuple[int, tuple[int, int]]]:
        """The (resource, (soft, hard)) pairs preexec() sets, clamped to our hard limits."""
        return rlimits(self.limits, probe.count_tasks(self.runs_as))

    def preexec(self) -> Callable[[], None]:
        """A function for Popen(preexec_fn=...): joins the control group, sets the limits
        (and, without bwrap, the uid)."""
        limits = self.rlimits()
        drop = self.mode != MODE_BWRAP and self.drops_uid
        uid, gid = self.ids
        group = self.cgroup()
        procs_files = group.procs_files() if group is not None else []

        def child() -> None:
            cgroups.Cgroup.attach(procs_files)
            for res, value in limits:
                resource.setrlimit(res, value)
            if drop:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)

        return child

    # ------------------------------------------------------------------ control group

    def cgroup(self) -> cgroups.Cgroup | None:
        """This sandbox's control group (made on first use), or None where there is none."""
        if self._group is None and self.cgroup_kind is not None:
            limits = cgroups.GroupLimits(
                cpus=self.limits.cpus,
                max_tasks=self.limits.max_processes,
                memory_bytes=(self.limits.memory_mb + self.limits.max_disk_mb) * MiB,
            )
            try:
                self._group = cgroups.create(limits, self.cgroup_kind)
            except OSError as exc:
                raise ExecutionError(f"sandbox: cannot create a control group: {exc}") from exc
            # A sandbox nobody closed (a caller's bug) still leaves no group behind.
            weakref.finalize(self, self._group.remove)
        return self._group

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by every process this sandbox started (the whole tree, even
        processes that left the session), or None without a control group.

        It counts only this submission's work, whatever its neighbours do: compare it with a
        CPU budget instead of wall-clock time where a verdict must not depend on load.
        """
        return self._group.cpu_seconds() if self._group is not None else None

    def kill_all(self) -> None:
        """SIGKILL every process of this sandbox that is still running (via the group)."""
        if self._group is not None:
            self._group.kill()

    def close(self) -> None:
        """Kill what is left and remove the control group (a later start makes a new one)."""
        group, self._group = self._group, None
        if group is not None:
            group.remove()

    # ------------------------------------------------------------------ file system

    def layout(self) -> Layout:
        return Layout(
            workdir=self.workdir,
            readonly=self._readonly(),
            writable=self.writable,
            hidden=[*default_hidden(), *self.hidden],
            disk_bytes=disk_bytes(self.limits),
        )

    def _readonly(self) -> list[Path]:
        for path in self.readonly:
            if not Path(path).exists():
                raise ExecutionError(
                    f"sandbox: the read-only path {path} does not exist",
                    hint="stage the data set before starting the sandbox",
                )
        return [Path(p) for p in self.readonly]

    def bwrap_args(self) -> list[str]:
        """The bwrap options (without the program and the command)."""
        return self.layout().args(self.limits.network)

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run in the sandbox (unchanged in the rlimits-only mode)."""
        if self.mode != MODE_BWRAP:
            return list(argv)
        exe = shutil.which("bwrap") or "bwrap"
        shim: list[str] = []
        if self.drops_uid:
            uid, gid = self.ids
            shim = [sys.executable, "-I", "-S", "-c", _SHIM, str(uid), str(gid)]
        return [exe, *self.bwrap_args(), "--", *shim, *argv]

    def prepare(self) -> None:
        """Create the workdir and hand it (and `writable`) to the sandbox's uid."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.mode != MODE_BWRAP:
            (self.workdir / ".tmp").mkdir(exist_ok=True)
        if not self.drops_uid:
            return
        for root in (self.workdir, *self.writable):
            chown_tree(Path(root), *self.ids)

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

        Everything it started (the process group, the pid namespace under bwrap, the
        control group) is killed on timeout, when the output passes the cap, when the
        tree's CPU time passes ``cpu_seconds``, and when the process exits.
        """
        self.prepare()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                self.command(argv),
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                **self.popen_kwargs(env),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.close()
            raise ExecutionError(f"sandbox: cannot start {argv[0]}: {exc}") from exc
        try:
            out = pump(
                proc,
                input,
                timeout=timeout,
                cap=output_cap_bytes(self.limits),
                cap_reason=f"output limit ({self.limits.max_output_mb} MB)",
                over_limit=self._over_cpu,
            )
        finally:
            reap(proc)
            oom = self._group is not None and self._group.oom_killed()
            self.close()
        returncode = proc.returncode
        if self.mode == MODE_BWRAP and returncode > 128 and returncode - 128 < signal.NSIG:
            returncode = -(returncode - 128)  # bwrap reports a signal as 128 + N
        killed = out.killed or exit_reason(
            self.limits, returncode, out.stderr, oom_killed=oom and returncode != 0
        )
        return SandboxResult(
            argv=list(argv),
            returncode=returncode,
            stdout=out.stdout,
            stderr=out.stderr,
            duration=time.monotonic() - start,
            killed_reason=killed,
            truncated=out.truncated,
        )

    def _over_cpu(self) -> str | None:
        used = self.cpu_seconds()
        if used is not None and used > self.limits.cpu_seconds:
            return f"cpu time limit ({self.limits.cpu_seconds} s)"
        return None


def _walk(root: Path) -> Iterator[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            yield Path(dirpath, name)


def chown_tree(root: Path, uid: int, gid: int) -> None:
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
            with contextlib.suppress(OSError):
                os.lchown(path, uid, gid)
