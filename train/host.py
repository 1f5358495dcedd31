"""Process-wide set-up for the command lines: the host's allocator, its CPU device count, joining a multi-process run.

Each of these changes the whole process, so the library never calls them: ``fusionjax-train`` and
``fusionjax-eval`` do (``fusionjax.train.cli``), and so can an application or a benchmark, before JAX's backend
starts. Why the allocator matters to XLA:CPU: ``docs/cpu-performance.md``; multi-process runs:
``docs/multi-host.md``.
"""

import ctypes
import ctypes.util
import os
from typing import Callable

from fusionjax.train.errors import ConfigError

# mallopt(3) parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


class _DlInfo(ctypes.Structure):  # dladdr(3)'s Dl_info
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _defining_library(function: Callable) -> str:
    info = _DlInfo()
    try:
        found = ctypes.CDLL(None).dladdr(ctypes.cast(function, ctypes.c_void_p), ctypes.byref(info))
    except AttributeError:  # no dladdr
        return "unknown"
    return os.path.basename(info.dli_fname.decode()) if found and info.dli_fname else "unknown"


def host_malloc() -> str:
    """The file name of the shared library whose ``malloc`` this process calls: ``libc.so.6`` on glibc, or the
    allocator preloaded in its place (``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4`` gives
    ``libtcmalloc_minimal.so.4``); ``"unknown"`` where the platform cannot say.
    """
    try:
        malloc = ctypes.CDLL(None).malloc
    except (AttributeError, OSError, TypeError):  # no process handle (Windows)
        return "unknown"
    return _defining_library(malloc)


def reuse_freed_host_memory() -> bool:
    """Make glibc's ``malloc`` keep the memory this process frees and hand it out again (one arena, no ``mmap``,
    no trimming) instead of returning it to the kernel, which would page-fault it in afresh on the next call.

    XLA:CPU allocates each call's buffers anew, and glibc maps a large block with its own ``mmap`` and unmaps it
    when freed; with this the blocks stay in the heap. The costs: compiling is slower (XLA's compiler threads
    share the one arena) and the process holds its peak heap until it exits. Call it before the first
    computation: threads that allocated earlier keep their arenas. Returns False, changing nothing, where
    ``malloc`` is not glibc's (another C library, or an allocator preloaded in its place: ``host_malloc``).
    """
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name) if libc_name else None
    if libc is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    if host_malloc() != _defining_library(libc.gnu_get_libc_version):
        return False
    return all(libc.mallopt(option, value) == 1
               for option, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))


def split_cpu_host(num_devices: int) -> None:
    """Run JAX's CPU backend as ``num_devices`` devices, so that a batch sharded over them splits over the cores.

    Must run before the backend starts; GPU and TPU backends ignore it.
    """
    import jax

    jax.config.update("jax_num_cpu_devices", num_devices)


def join_multi_process_run(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, detect: bool = False) -> None:
    """Join a multi-process run, or do nothing for a single process.

    ``coordinator_address`` (host:port of process 0) with ``num_processes`` and ``process_id`` names the run
    explicitly (any machines, or several processes on one). ``detect``, or ``JAX_COORDINATOR_ADDRESS`` in the
    environment, leaves them to ``jax.distributed.initialize()``, which reads them from the cluster it detects
    (SLURM, Open MPI, Kubernetes, TPU pods). CPU processes exchange data with gloo, jax's default CPU collectives.
    """
    import jax

    explicit = (coordinator_address, num_processes, process_id)
    if any(value is not None for value in explicit):
        if any(value is None for value in explicit):
            raise ConfigError("--coordinator_address, --num_processes and --process_id go together: pass all "
                              "three, or --distributed alone to detect them from the cluster.")
        jax.distributed.initialize(*explicit)
    elif detect or "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize()
