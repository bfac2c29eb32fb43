"""How the measuring process's host memory allocator treats freed memory, set before anything is timed.

glibc's ``malloc`` hands large blocks back to the operating system when they are freed: blocks
above its mmap threshold (128 KiB at start, raised by the sizes freed since, at most 32 MiB) are
unmapped, and free memory at the top of the heap beyond the trim threshold is released. The next
allocation of that size then touches fresh pages, and every 4 KiB page costs a page fault. Which
block takes which path depends on the sizes the process freed before, so the same op costs
different times in a microbenchmark that repeats one shape and inside a layer whose ops allocate
many sizes. On a 2-core Xeon, one math-path attention with 16 MiB of scores took 8.8 ms in the
calibration's loop and 21 ms in a process where each call faulted its pages (9,184 faults per call,
about 1.3 us each), and the reference layer it belongs to 80-94 ms against 42 ms without faults; an
8192 x 64 x 1024 GEMM (a 32 MiB output) took 11.0 ms with faults and 3.4 ms without.

``caching`` (the default of ``calibrate`` and ``check-real``) keeps freed memory in the process
for reuse, as torch's CUDA caching allocator does with device memory and as the caching allocators
the PyTorch performance tuning guide recommends for CPU inference (jemalloc, tcmalloc) do: glibc's
``mallopt`` with ``M_MMAP_MAX = 0`` (no block is unmapped) and the largest ``M_TRIM_THRESHOLD``
(the heap is not trimmed). Timings are then the kernels' own, and a layer costs what its ops cost
in the microbenchmarks. ``system`` leaves the allocator as the process found it, to measure a
deployment that runs on glibc's defaults. The choice is recorded in every trace's and check's
metadata (``host_allocator``).
"""

from __future__ import annotations

import ctypes
import ctypes.util

HOST_ALLOCATORS = ("caching", "system")
DEFAULT_HOST_ALLOCATOR = "caching"  # calibrate's and check-real's
M_TRIM_THRESHOLD = -1  # glibc malloc.h: release free memory at the heap's top above this many bytes
M_MMAP_MAX = -4  # glibc malloc.h: how many blocks may be mmapped at once (0: none)
LARGEST_TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int
_SYSTEM = "system (the C library's defaults)"
_current = _SYSTEM  # the setting is process-wide, so its description is too


def set_host_allocator(kind: str) -> str:
    """Set the process's allocator to ``kind`` (``caching`` or ``system``) and describe what was set.

    ``system`` changes nothing (so after ``caching`` the process stays caching, and says so).
    ``caching`` needs glibc's ``mallopt``; where the C library has none (macOS, musl) the process keeps
    its allocator and the description says so, so that the metadata never claims a setting that
    did not take.
    """
    if kind not in HOST_ALLOCATORS:
        raise ValueError(f"host allocator must be one of {', '.join(HOST_ALLOCATORS)}, got {kind!r}")
    global _current
    if kind == "caching":
        mallopt = _glibc_mallopt()
        if mallopt is None:
            _current = "system (caching asked for, but the C library has no mallopt)"
        elif mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, LARGEST_TRIM_THRESHOLD_BYTES):
            _current = f"caching (glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD={LARGEST_TRIM_THRESHOLD_BYTES})"
        else:
            _current = "system (caching asked for, but mallopt refused it)"
    return _current


def host_allocator() -> str:
    """What :func:`set_host_allocator` set in this process (the C library's defaults before any call)."""
    return _current


def allocator_kind(description: str) -> str:
    """The kind (``caching`` or ``system``) a description of :func:`set_host_allocator`'s names first."""
    return description.split(maxsplit=1)[0]


def _glibc_mallopt():
    """glibc's ``mallopt(param, value) -> int``, or None where the C library does not have it."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt
