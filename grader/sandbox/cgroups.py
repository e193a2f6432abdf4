"""One control group per sandbox: a CPU share and quota, a process count and a memory
limit for the submission's whole process tree, its CPU time, and a kill that misses none.

Two kinds, chosen once per process by creating (and removing) a probe group:

``v2``
    the unified hierarchy (``cgroup2``) when the ``cpu``, ``memory`` and ``pids``
    controllers can be enabled below our own group (or the root group): ``cpu.max``,
    ``cpu.weight``, ``pids.max``, ``memory.max``; CPU time from ``cpu.stat``; killed with
    ``cgroup.kill`` where the kernel has it.
``v1``
    separate ``cpu``, ``cpuacct``, ``pids`` and ``memory`` hierarchies (each may be
    co-mounted with others): ``cpu.cfs_quota_us``/``cpu.shares``, ``pids.max``,
    ``memory.limit_in_bytes``; CPU time from ``cpuacct.usage``; killed pid by pid.

Groups are made below the grader's own group in each hierarchy (so a limit placed on the
grader still holds), named ``grader-<pid>-<n>``, and removed when the sandbox ends.
Where none can be made (not root, no delegation) :func:`cgroup_status` says why and the
sandbox keeps its per-process rlimits only.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CONTROLLERS_V1 = ("cpu", "cpuacct", "pids", "memory")
CONTROLLERS_V2 = ("cpu", "memory", "pids")
CFS_PERIOD_US = 100_000

_counter = itertools.count()


@dataclass(frozen=True)
class GroupLimits:
    """What one group may use: CPUs (a quota), tasks, and bytes of memory (incl. tmpfs)."""

    cpus: float
    max_tasks: int
    memory_bytes: int


def _mounts() -> list[tuple[str, Path, set[str]]]:
    """(fstype, mount point, options) of every cgroup file system, from /proc/self/mountinfo."""
    found: list[tuple[str, Path, set[str]]] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        point = Path(fields[4].replace("\\040", " "))
        found.append((rest[0], point, set(rest[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Our group per v1 controller (and "" for v2), from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            for name in names.split(",") if names else [""]:
                paths[name] = path
    return paths


def _write(path: Path, value: str) -> None:
    path.write_text(value)


@dataclass
class Cgroup:
    """A created group: one folder (v2) or one per distinct v1 hierarchy."""

    version: str
    dirs: dict[str, Path]  # controller -> folder (v2: every controller -> the same folder)
    _removed: bool = field(default=False, repr=False)

    @property
    def folders(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def procs_files(self) -> list[str]:
        """The cgroup.procs files a new process writes its pid to (see :meth:`attach`)."""
        return [str(d / "cgroup.procs") for d in self.folders]

    @staticmethod
    def attach(procs_files: list[str]) -> None:
        """Move the calling process into the group (call it in the child, before exec)."""
        pid = str(os.getpid()).encode()
        for name in procs_files:
            fd = os.open(name, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(x) for x in (folder / "cgroup.procs").read_text().split())
        return found

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) used so far by every process that was in the group."""
        try:
            if self.version == "v2":
                for line in (self.dirs["cpu"] / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1e6
                return None
            return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError, KeyError):
            return None

    def oom_killed(self) -> bool:
        """Whether the group's memory limit killed a process."""
        return self.oom_kills() > 0

    def oom_kills(self) -> int:
        """How many processes the group's memory limit has killed so far."""
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        with contextlib.suppress(OSError, KeyError, ValueError):
            for line in (self.dirs["memory"] / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def memory_bytes(self) -> int | None:
        """Memory charged to the group now (its processes, tmpfs files, kernel buffers)."""
        name = "memory.current" if self.version == "v2" else "memory.usage_in_bytes"
        try:
            return int((self.dirs["memory"] / name).read_text())
        except (OSError, KeyError, ValueError):
            return None

    def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process in the group until none is left; True if it emptied."""
        kill_file = self.dirs["cpu"] / "cgroup.kill"
        if self.version == "v2" and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left and remove the folders (idempotent)."""
        if self._removed:
            return
        self.kill()
        for folder in self.folders:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last tasks are reaped
                    time.sleep(0.02)
        self._removed = True


def _make_v1(name: str, limits: GroupLimits) -> Cgroup:
    own = _own_paths()
    dirs: dict[str, Path] = {}
    for controller in CONTROLLERS_V1:
        point = next(
            (p for kind, p, opts in _mounts() if kind == "cgroup" and controller in opts), None
        )
        if point is None:
            raise OSError(f"no cgroup v1 hierarchy has the {controller} controller")
        dirs[controller] = point / own.get(controller, "/").lstrip("/") / name
    group = Cgroup("v1", dirs)
    try:
        for folder in group.folders:
            folder.mkdir()
        cpu = dirs["cpu"]
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(max(1000, int(limits.cpus * CFS_PERIOD_US))))
        _write(dirs["pids"] / "pids.max", str(limits.max_tasks))
        _write(dirs["memory"] / "memory.limit_in_bytes", str(limits.memory_bytes))
        with contextlib.suppress(OSError):  # no swapping past the limit either
            _write(dirs["memory"] / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
    except OSError:
        group.remove()
        raise
    return group


def _v2_base() -> Path:
    """A v2 folder below which our groups get the cpu, memory and pids controllers."""
    point = next((p for kind, p, _ in _mounts() if kind == "cgroup2"), None)
    if point is None:
        raise OSError("no cgroup2 file system is mounted")
    own = point / _own_paths().get("", "/").lstrip("/")
    errors = []
    for base in dict.fromkeys((own, point)):
        try:
            available = set((base / "cgroup.controllers").read_text().split())
            missing = set(CONTROLLERS_V2) - available
            if missing:
                raise OSError(f"controllers {sorted(missing)} are not available in {base}")
            enabled = set((base / "cgroup.subtree_control").read_text().split())
            if not set(CONTROLLERS_V2) <= enabled:
                _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS_V2))
            return base
        except OSError as exc:
            errors.append(str(exc))
    raise OSError("; ".join(errors))


def _make_v2(name: str, limits: GroupLimits) -> Cgroup:
    folder = _v2_base() / name
    group = Cgroup("v2", dict.fromkeys(CONTROLLERS_V2, folder))
    folder.mkdir()
    try:
        quota = max(1000, int(limits.cpus * CFS_PERIOD_US))
        _write(folder / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        _write(folder / "cpu.weight", "100")
        _write(folder / "pids.max", str(limits.max_tasks))
        _write(folder / "memory.max", str(limits.memory_bytes))
        with contextlib.suppress(OSError):
            _write(folder / "memory.swap.max", "0")
    except OSError:
        group.remove()
        raise
    return group


def create(limits: GroupLimits, kind: str | None = None) -> Cgroup:
    """A new group of `kind` ("v2", "v1"; None: the one :func:`cgroup_status` found)."""
    kind = kind or cgroup_status()[0]
    if kind is None:
        raise OSError(cgroup_status()[1])
    name = f"grader-{os.getpid()}-{next(_counter)}"
    group = _make_v2(name, limits) if kind == "v2" else _make_v1(name, limits)
    for folder in group.folders:
        _sweep(folder.parent)
    return group


def _sweep(parent: Path) -> None:
    """Remove the empty groups that graders which died without cleaning up left here."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            owner = entry.name.split("-")
            if len(owner) != 3 or owner[0] != "grader" or not owner[1].isdigit():
                continue
            if not Path("/proc", owner[1]).exists():
                with contextlib.suppress(OSError):
                    entry.rmdir()


@functools.cache
def cgroup_status() -> tuple[str | None, str]:
    """("v2" | "v1" | None, why): which kind of group this process can create here."""
    probe = GroupLimits(cpus=1, max_tasks=64, memory_bytes=64 * 2**20)
    errors = []
    for kind in ("v2", "v1"):
        try:
            create(probe, kind).remove()
            return kind, f"cgroup {kind}"
        except OSError as exc:
            errors.append(f"{kind}: {exc.strerror or exc}" if exc.strerror else f"{kind}: {exc}")
    return None, "no cgroup can be created here (" + "; ".join(errors) + ")"
