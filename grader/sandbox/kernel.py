"""Jupyter kernel managers whose kernel runs inside a Sandbox, over IPC sockets.

The connection file and the kernel's sockets live in a private folder bound read-write
into the sandbox at the same path (the network namespace has no route to our TCP ports).
When the grader runs as root that folder is a tmpfs of :data:`IPC_BYTES`, so student code
cannot fill the host's disk through it either.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Self

from jupyter_client import AsyncKernelManager, KernelManager
from jupyter_client.kernelspec import KernelSpec
from jupyter_core.utils import run_sync

from .core import Sandbox

# nbclient with a BlockingKernelClient waits in get_msg(timeout=None): no cell timeout and no
# dead kernel is ever noticed. Every synchronous manager here hands out this client instead.
ASYNC_CLIENT = "jupyter_client.asynchronous.AsyncKernelClient"

#: The size of the IPC folder's tmpfs (the connection file, the sockets, the kernel's log).
IPC_BYTES = 8 * 1024 * 1024

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MNT_DETACH = 2, 4, 8, 2


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def mount_private_tmpfs(folder: Path, size: int) -> bool:
    """Mount a tmpfs of `size` bytes on `folder` (root only); False where it cannot."""
    if os.geteuid() != 0:
        return False
    options = f"size={size},mode=0700".encode()
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    return _libc().mount(b"tmpfs", str(folder).encode(), b"tmpfs", flags, options) == 0


def unmount(folder: Path) -> None:
    with contextlib.suppress(OSError):
        if os.path.ismount(folder):
            _libc().umount2(str(folder).encode(), _MNT_DETACH)


def sweep_ipc_dirs() -> None:
    """Unmount and remove the IPC folders of graders that died without cleaning up."""
    for folder in Path(tempfile.gettempdir()).glob("grader-kernel-*-*"):
        owner = folder.name.split("-")[2]
        if owner.isdigit() and not Path("/proc", owner).exists():
            unmount(folder)
            shutil.rmtree(folder, ignore_errors=True)


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
        sweep_ipc_dirs()
        self._ipc_dir = Path(tempfile.mkdtemp(prefix=f"grader-kernel-{os.getpid()}-"))
        self.ipc_capped = mount_private_tmpfs(self._ipc_dir, IPC_BYTES)
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
            os.chown(self._ipc_dir / "kernel.json", *sandbox.ids)
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
                os.chown(self.kernel_log_path, *sandbox.ids)
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

    def cpu_seconds(self) -> float | None:
        """CPU time of the kernel's whole process tree so far (see Sandbox.cpu_seconds)."""
        return self.sandbox.cpu_seconds()

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)  # type: ignore[misc]
        if restart:
            self.sandbox.kill_all()  # what the old kernel left behind
            return
        self.sandbox.close()
        unmount(self._ipc_dir)
        shutil.rmtree(self._ipc_dir, ignore_errors=True)


class SandboxedKernelManager(_SandboxedKernelMixin, KernelManager):
    """A KernelManager whose kernel runs inside `sandbox`, talking over IPC sockets.

    Use it as ``NotebookClient(nb, km=SandboxedKernelManager(sandbox))``. nbclient does
    not shut down a kernel manager it was given unless ``execute(cleanup_kc=True)``: call
    ``km.shutdown_kernel(now=True)`` afterwards (killing bwrap kills everything the
    student started, and the control group takes whatever is left).

    Its methods are synchronous, but ``client()`` returns an AsyncKernelClient: with a
    BlockingKernelClient nbclient blocks its event loop in ``get_msg(timeout=None)``, so
    cell timeouts (and interrupt_on_timeout) never fire. Pass
    ``client_class="jupyter_client.blocking.BlockingKernelClient"`` for a blocking one.
    """

    _default_client_class = ASYNC_CLIENT
    # jupyter_client binds cleanup_resources to its own coroutine, not to an override.
    cleanup_resources = run_sync(_SandboxedKernelMixin._async_cleanup_resources)


class AsyncSandboxedKernelManager(_SandboxedKernelMixin, AsyncKernelManager):
    """The asyncio flavour of SandboxedKernelManager (nbclient's default class)."""

    cleanup_resources = _SandboxedKernelMixin._async_cleanup_resources
