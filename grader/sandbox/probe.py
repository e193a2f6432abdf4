"""What this machine allows, probed once per process by actually trying it."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .mounts import MiB, Mounts, namespace_args, system_mounts


@functools.cache
def bwrap_status() -> tuple[bool, str]:
    """Whether bubblewrap works here, and why not. Probed once per process by running it."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False, "bwrap is not installed"
    mounts = Mounts()
    system_mounts(mounts, 16 * MiB)
    probe = [exe, *namespace_args(network=False), *mounts.args, "--", "true"]
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
def uid_drop_works(uid: int, gid: int) -> bool:
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


def count_tasks(uid: int) -> int | None:
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
