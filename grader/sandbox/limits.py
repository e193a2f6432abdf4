"""Per-process resource limits (rlimits) and the environment student code sees."""

from __future__ import annotations

import os
import resource
import sys

from ..spec import SandboxLimits
from .mounts import MiB

#: Variables passed from the grader's environment into the sandbox (nothing else is).
ENV_WHITELIST = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "LC_MESSAGES", "TZ")


def output_cap_bytes(limits: SandboxLimits) -> int:
    """How many bytes of output (stdout + stderr, or a notebook's outputs) to keep."""
    return max(0, limits.max_output_mb) * MiB


def disk_bytes(limits: SandboxLimits) -> int:
    """The size of each private file system (the work folder, /tmp, /dev/shm)."""
    return max(limits.max_disk_mb, 1) * MiB


def sandbox_env(home: str, tmp: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The complete environment for student code: a whitelist of ours plus fixed values."""
    env = {key: os.environ[key] for key in ENV_WHITELIST if key in os.environ}
    bindir = os.path.dirname(sys.executable)
    env.update(
        PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        HOME=home,
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
        env.update({k: v for k, v in extra.items() if not k.lower().endswith("_proxy")})
    return env


def rlimits(limits: SandboxLimits, tasks_of_uid: int | None) -> list[tuple[int, tuple[int, int]]]:
    """The (resource, (soft, hard)) pairs to set, clamped to our own hard limits.

    `tasks_of_uid`: the tasks the sandbox's uid already has (RLIMIT_NPROC counts every
    task of the uid, not only the sandbox's); None leaves RLIMIT_NPROC alone.
    """
    lim = limits
    backstop = (2 * lim.memory_mb + 1024) * MiB
    wanted: list[tuple[int, int, int]] = [
        (resource.RLIMIT_DATA, lim.memory_mb * MiB, lim.memory_mb * MiB),
        (resource.RLIMIT_AS, backstop, backstop),
        (resource.RLIMIT_CPU, lim.cpu_seconds, lim.cpu_seconds + 5),
        (resource.RLIMIT_FSIZE, lim.max_file_mb * MiB, lim.max_file_mb * MiB),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if tasks_of_uid is not None:
        nproc = tasks_of_uid + lim.max_processes
        wanted.append((resource.RLIMIT_NPROC, nproc, nproc))
    result: list[tuple[int, tuple[int, int]]] = []
    for res, soft, hard in wanted:
        _, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        result.append((res, (soft, hard)))
    return result
