"""A distinct unprivileged uid per grading process, when the grader runs as root.

RLIMIT_NPROC counts every task of a uid, and a signal reaches every process of the same
uid: sandboxes that run at once must not share one. Each process that starts sandboxes
(a batch worker, or the CLI itself) leases one slot of a small fixed range for its whole
life with an exclusive lock on ``<lock dir>/slot-<n>``; the kernel drops the lock when the
process ends, however it ends, so a slot is never leaked and two graders running at once
(two batches, a retry pool) never share a uid.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

#: The uids (and gids) handed out: BASE, BASE + 1, ... BASE + COUNT - 1. Far above the
#: ranges distributions allocate (system, regular, systemd dynamic users, subuids).
UID_BASE = 1_900_000_000
UID_COUNT = 64

#: The single uid used when no slot is free (as before the per-worker uids): "nobody".
FALLBACK_UID = 65534


def _lock_dir() -> Path:
    for base in (Path("/run"), Path(tempfile.gettempdir())):
        folder = base / "grader-sandbox-uids"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            if folder.stat().st_uid == os.geteuid() and not folder.is_symlink():
                return folder
        except OSError:
            continue
    raise OSError("no folder for the uid locks")


_leased: dict[int, int] = {}  # pid -> uid (a forked worker leases its own)


def worker_uid() -> int:
    """This process's own uid for student code (the same on every call in a process)."""
    pid = os.getpid()
    if pid not in _leased:
        _leased[pid] = _lease()
    return _leased[pid]


def _lease() -> int:
    try:
        folder = _lock_dir()
    except OSError:
        return FALLBACK_UID
    for slot in range(UID_COUNT):
        fd = os.open(folder / f"slot-{slot}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return UID_BASE + slot  # fd stays open: the lock lasts as long as this process
    return FALLBACK_UID


def is_sandbox_uid(uid: int) -> bool:
    """Whether `uid` is one this module hands out (for tests and leftovers checks)."""
    return UID_BASE <= uid < UID_BASE + UID_COUNT or uid == FALLBACK_UID
