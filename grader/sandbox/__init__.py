"""Run student code in a sandbox, one per submission.

Every process that executes student code goes through a :class:`Sandbox`: the Jupyter
kernel that nbclient drives (:class:`SandboxedKernelManager`) and the plain "clean"
python processes (:meth:`Sandbox.run`). The package's units:

* :mod:`.probe`: what works here (bwrap, dropping to a uid), probed once per process;
* :mod:`.mounts`: the file system as bwrap options (binds, hidden paths, private tmpfs);
* :mod:`.limits`: per-process rlimits and the environment;
* :mod:`.cgroups`: one control group per sandbox (limits, CPU time, kill);
* :mod:`.uids`: a distinct uid per grading process;
* :mod:`.run`: a plain process run to its end, and why it ended;
* :mod:`.core`: :class:`Sandbox`, which puts these together; :mod:`.kernel`: the managers.

What one submission cannot do to another, and how:

``processes`` (bwrap mode)
    A new pid namespace per sandbox (``--unshare-pid``; also new ipc, uts, cgroup and,
    unless ``limits.network``, network namespaces; ``--new-session``,
    ``--die-with-parent``): student code sees only its own processes, ``kill -9 -1``
    reaches only them, and when the sandbox ends (the kernel is shut down, or
    :meth:`Sandbox.run` returns) its namespace's init dies and the kernel kills every
    process in it, including those started with ``setsid``/double fork. The control
    group then kills anything left (a process can only leave the namespace's tree by
    dying).
``uid``
    When the grader runs as root, a tiny shim inside the sandbox drops to an
    unprivileged uid before executing the command (root ignores RLIMIT_NPROC); each
    grading process (each batch worker) leases its own uid from a small fixed range
    (:mod:`.uids`), so process limits and signal scope are per student.
``CPU, memory, processes`` (control group)
    Where the grader may create cgroups (root, or a delegated hierarchy), each sandbox
    gets its own group, removed when it ends: cgroup v2 (``cpu.max``, ``cpu.weight``,
    ``pids.max``, ``memory.max``) or v1 (``cpu.cfs_quota_us``/``cpu.shares``,
    ``pids.max``, ``memory.limit_in_bytes``). The quota is ``limits.cpus`` CPUs, the
    process count ``limits.max_processes`` for the whole tree, the memory
    ``memory_mb + max_disk_mb`` for the whole tree (its tmpfs pages count too).
``time``
    :meth:`Sandbox.cpu_seconds` (and ``SandboxedKernelManager.cpu_seconds()``) is the CPU
    time of the sandbox's whole process tree so far, read from the group
    (``cpuacct.usage`` / ``cpu.stat``), or None without a group. A neighbour cannot make
    it grow: an executor should compare it with its per-cell and per-notebook budgets and
    keep wall time only as a generous backstop. :meth:`Sandbox.run` kills a process whose
    tree passes ``limits.cpu_seconds``.
``disk``
    The work folder, /tmp and /dev/shm are private tmpfs of ``max_disk_mb`` each (bwrap
    ``--size``); what the host staged in the work folder (data, scripts) appears in it
    read-only. A write past the cap fails with "No space left on device" (ENOSPC). The
    kernel's IPC folder is a tmpfs of 8 MiB when the grader runs as root.

Without cgroups (not root, no delegation) only the per-process rlimits apply and
:meth:`Sandbox.warning` says so (one warning per batch).

Two modes, chosen once per process by actually running bubblewrap (:func:`bwrap_status`):
``bwrap`` as above, and ``rlimits-only`` where bwrap is missing or does not work here
(macOS, a locked-down container): only the resource limits (and the control group)
apply; :meth:`Sandbox.warning` says what is missing.

Resource limits are set in the child in both modes: RLIMIT_DATA = ``memory_mb`` (it
counts every private writable mapping, i.e. what numpy/torch allocate), RLIMIT_AS = a
generous backstop (``2 * memory_mb + 1024`` MiB), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_CORE =
0 and RLIMIT_NPROC = the tasks the sandbox's uid already has + ``max_processes``.

The package has no side effects at import.
"""

from .cgroups import cgroup_status
from .core import MODE_BWRAP, MODE_RLIMITS, Sandbox, default_hidden, repo_root
from .kernel import ASYNC_CLIENT, AsyncSandboxedKernelManager, SandboxedKernelManager
from .limits import ENV_WHITELIST, output_cap_bytes
from .mounts import MiB
from .probe import bwrap_available, bwrap_status
from .run import SandboxResult
from .uids import is_sandbox_uid, worker_uid

__all__ = [
    "ASYNC_CLIENT",
    "ENV_WHITELIST",
    "MODE_BWRAP",
    "MODE_RLIMITS",
    "AsyncSandboxedKernelManager",
    "MiB",
    "Sandbox",
    "SandboxResult",
    "SandboxedKernelManager",
    "bwrap_available",
    "bwrap_status",
    "cgroup_status",
    "default_hidden",
    "is_sandbox_uid",
    "output_cap_bytes",
    "repo_root",
    "worker_uid",
]
