"""The sandbox's file system as bubblewrap options: what is bound, hidden and private.

Everything here is pure: it turns paths and sizes into bwrap argv, it does not run bwrap.
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024

#: Single files or folders of /etc bound read-only when they exist.
ETC_ENTRIES = (
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
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def under(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def outermost(paths: Sequence[Path]) -> list[Path]:
    unique = sorted(dict.fromkeys(paths), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(under(path, k) for k in kept):
            kept.append(path)
    return kept


class Mounts:
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
            if parent in self.points or any(under(parent, b) for b in self.binds):
                continue
            self.args += ["--perms", "0755", "--dir", str(parent)]
            self.points.append(parent)

    def add(self, option: str, dest: Path, *, src: str | None = None, bind: bool = False) -> None:
        self._parents(dest)
        self.args += [option, *([src] if src is not None else []), str(dest)]
        self.points.append(dest)
        if bind:
            self.binds.append(dest)

    def ro(self, path: Path, dest: Path | None = None) -> None:
        self.add("--ro-bind", dest or path, src=str(path), bind=True)

    def rw(self, path: Path) -> None:
        self.add("--bind", path, src=str(path), bind=True)

    def tmpfs(self, path: Path, perms: str, size: int) -> None:
        self._parents(path)
        self.args += ["--perms", perms, "--size", str(size), "--tmpfs", str(path)]
        self.points.append(path)

    def symlink(self, target: str, path: Path) -> None:
        self.add("--symlink", path, src=target)


def system_mounts(mounts: Mounts, scratch_bytes: int) -> None:
    """The read-only system part of the file system, /proc, /dev and the private /tmp."""
    mounts.ro(Path("/usr"))
    for name in ROOT_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            mounts.symlink(os.readlink(path), path)
        elif path.is_dir():
            mounts.ro(path)
    for name in ETC_ENTRIES:
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


def namespace_args(network: bool) -> list[str]:
    """New pid, ipc, uts, cgroup (and network) namespaces; bwrap dies with the grader."""
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


def python_paths() -> list[Path]:
    """The interpreter's prefixes and site-packages (bound read-only)."""
    candidates = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
        *site.getsitepackages(),
    }
    return [Path(p).resolve() for p in candidates if p and os.path.isdir(p)]


@dataclass(frozen=True)
class Layout:
    """Where a sandbox's paths go. `workdir` becomes a private tmpfs of `disk_bytes` in
    which the host folder's entries (staged data, scripts) appear read-only."""

    workdir: Path
    readonly: Sequence[Path]
    writable: Sequence[Path]
    hidden: Sequence[Path]
    disk_bytes: int

    def binds(self) -> list[tuple[str, Path]]:
        """(kind, path) with kind "ro", "work", "rw" or "hide", in mount order."""
        ro = [p for p in python_paths() if not under(p, Path("/usr"))]
        ro += [Path(p).resolve() for p in self.readonly]
        work = self.workdir.resolve()
        rw = [Path(p).resolve() for p in self.writable]
        binds = [("ro", p) for p in outermost(ro)] + [("work", work)]
        binds += [("rw", p) for p in dict.fromkeys(rw)]
        bound = [p for _, p in binds] + [Path("/usr"), Path("/etc"), Path("/sys")]
        for path in dict.fromkeys(Path(p).resolve() for p in self.hidden):
            if path.exists() and any(under(path, b) for b in bound):
                binds.append(("hide", path))
        order = {"ro": 0, "work": 1, "rw": 2, "hide": 3}
        return sorted(binds, key=lambda b: (len(b[1].parts), order[b[0]]))

    def args(self, network: bool) -> list[str]:
        """The bwrap options (without the program and the command)."""
        mounts = Mounts()
        system_mounts(mounts, self.disk_bytes)
        binds = self.binds()
        for kind, path in binds:
            if kind == "ro":
                mounts.ro(path)
            elif kind == "rw":
                mounts.rw(path)
            elif kind == "work":
                mounts.tmpfs(path, "0777", max(self.disk_bytes, MiB))
                for entry in sorted(os.listdir(path)) if path.is_dir() else ():
                    mounts.ro(path / entry)
            elif path.is_dir():
                # Traversable (not listable) if a bind lies below it, else closed.
                below = any(k != "hide" and p != path and under(p, path) for k, p in binds)
                mounts.tmpfs(path, "0111" if below else "0000", 4096)
            else:
                mounts.add("--ro-bind", path, src="/dev/null")
        return [
            *namespace_args(network),
            *mounts.args,
            "--chdir",
            str(self.workdir.resolve()),
            # ipykernel would watch our pid, which is not its parent inside the pid
            # namespace (it would exit at once); 1 means "no parent to watch".
            "--setenv",
            "JPY_PARENT_PID",
            "1",
        ]
