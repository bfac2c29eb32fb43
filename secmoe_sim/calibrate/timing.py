"""Device selection and timing behind one interface, for the CPU and for CUDA GPUs.

A :class:`Device` knows its torch device, the dtypes worth measuring on it, its name and memory,
the communication backend its processes use, and how to time a callable:

* :class:`CpuDevice` times with ``time.perf_counter`` around each call (CPU ops are synchronous);
* :class:`CudaDevice` records a pair of CUDA events around each call and synchronises once after
  the repeats, so a timing is the GPU's elapsed time between the events. A loop of tiny kernels
  timed this way measures their throughput: when the host cannot launch fast enough, the GPU
  idles between kernels and the events include that idle time.

Every timing follows the same protocol: ``refresh`` writes fresh random values into the inputs
before every call (outside the timed region: never zeros, never the same values twice), ``warmup``
untimed calls, then at least ``MIN_REPEATS`` timed calls (:func:`stable_time_s`, which measures a
shape again while its spread shows interference; :func:`interleaved_time_s` for calls to be
compared with each other, timed round-robin).

torch is imported when a device is made, not when this module is imported.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from secmoe_sim.calibrate import CalibrationError, require_torch
from secmoe_sim.calibrate.host_allocator import host_allocator
from secmoe_sim.spec.units import SECOND_FACTORS

MIN_REPEATS = 20
MAX_ATTEMPTS = 3  # measurements of one shape while its timings look disturbed
UNSTABLE_SPREAD = 2.0  # p90 over p10 above which a measurement counts as disturbed
INTERLEAVED_ROUNDS = 5  # round-robin rounds of interleaved_time_s
DEVICE_KINDS = ("cpu", "cuda")
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def torch_dtype(dtype: str):
    """The torch dtype for a trace dtype name (fp32, bf16, fp16)."""
    torch = require_torch()
    if dtype not in TORCH_DTYPES:
        raise CalibrationError(f"dtype {dtype!r} cannot be measured (choose from {', '.join(TORCH_DTYPES)})")
    return getattr(torch, TORCH_DTYPES[dtype])


@dataclass
class Device(ABC):
    """A device to measure: what it is and how to time work on it (subclasses say how)."""

    kind: str
    torch_device: object
    name: str
    memory_bytes: float
    default_dtypes: tuple[str, ...]
    comm_backend: str

    @abstractmethod
    def time_s(self, fn: Callable[[], object], refresh: Callable[[], object], warmup: int, repeats: int) -> np.ndarray:
        """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` calls; inputs refreshed before each.

        One batch of calls; :func:`stable_time_s` and :func:`interleaved_time_s` are the protocols
        measurements use (at least ``MIN_REPEATS`` calls).
        """

    def describe(self) -> dict:
        """Metadata of the device for a trace or report."""
        return {"device": self.kind, "device_name": self.name, "device_memory_bytes": self.memory_bytes}


class CpuDevice(Device):
    """The host CPU: wall-clock timing of synchronous calls."""

    def time_s(self, fn, refresh, warmup, repeats):
        for _ in range(warmup):
            refresh()
            fn()
        samples = np.empty(repeats)
        for index in range(repeats):
            refresh()
            started_at = time.perf_counter()
            fn()
            samples[index] = time.perf_counter() - started_at
        return samples


class CudaDevice(Device):
    """A CUDA GPU: CUDA-event timing on the current stream, one synchronisation per measurement."""

    def synchronize(self) -> None:
        require_torch().cuda.synchronize(self.torch_device)

    def time_s(self, fn, refresh, warmup, repeats):
        torch = require_torch()
        for _ in range(warmup):
            refresh()
            fn()
        events = []
        for _ in range(repeats):
            refresh()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        self.synchronize()
        return np.array([start.elapsed_time(end) * SECOND_FACTORS["ms"] for start, end in events])


def stable_time_s(device: Device, fn, refresh, warmup: int, repeats: int) -> tuple[np.ndarray, int]:
    """:meth:`Device.time_s`, measured again (at most ``MAX_ATTEMPTS`` times in all) while the
    spread shows interference: the 90th percentile more than ``UNSTABLE_SPREAD`` times the 10th,
    which on a shared machine means other processes took the cores for part of the repeats.
    Returns the samples of the attempt with the lowest median, and the number of attempts."""
    _check_repeats(repeats)
    best = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        samples = device.time_s(fn, refresh, warmup, repeats)
        if best is None or np.median(samples) < np.median(best):
            best = samples
        low, high = np.percentile(samples, (10, 90))
        if high <= UNSTABLE_SPREAD * low:
            break
    assert best is not None  # MAX_ATTEMPTS >= 1
    return best, attempt


def interleaved_time_s(
    device: Device, calls: list[tuple[Callable, Callable]], warmup: int, repeats: int, rounds: int = INTERLEAVED_ROUNDS
) -> list[np.ndarray]:
    """Timings of several ``(fn, refresh)`` calls to be compared with each other, taken round-robin:
    ``rounds`` rounds, each timing every call ``ceil(repeats / rounds)`` times (after ``warmup``
    calls in the first round, one in the others). A slow spell of the machine then spreads over
    all of them instead of biasing one. At least ``repeats`` samples per call."""
    _check_repeats(repeats)
    per_round = -(-repeats // rounds)
    samples: list[list[np.ndarray]] = [[] for _ in calls]
    for round_index in range(rounds):
        for index, (fn, refresh) in enumerate(calls):
            samples[index].append(device.time_s(fn, refresh, warmup if round_index == 0 else 1, per_round))
    return [np.concatenate(parts) for parts in samples]


def _check_repeats(repeats: int) -> None:
    if repeats < MIN_REPEATS:
        raise CalibrationError(f"a timing needs at least {MIN_REPEATS} repeats, got {repeats}")


def make_device(kind: str) -> Device:
    """The device of ``kind`` (``cpu`` or ``cuda``); a one-line error if it is not available."""
    torch = require_torch()
    if kind == "cpu":
        return CpuDevice(
            kind="cpu",
            torch_device=torch.device("cpu"),
            name=cpu_name(),
            memory_bytes=host_memory_bytes(),
            default_dtypes=("fp32",),
            comm_backend="gloo",
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise CalibrationError(
                "--device cuda: torch sees no CUDA device (torch "
                f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)"
            )
        index = torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        return CudaDevice(
            kind="cuda",
            torch_device=torch.device("cuda", index),
            name=properties.name,
            memory_bytes=float(properties.total_memory),
            default_dtypes=("bf16", "fp16"),
            comm_backend="nccl",
        )
    raise CalibrationError(f"unknown device {kind!r} (choose from {', '.join(DEVICE_KINDS)})")


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux, else the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_memory_bytes() -> float:
    """Physical memory of the host, bytes."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def scheduler_group() -> str:
    """The Linux autogroup of this process and its priority (``/proc/self/autogroup``), or ``unknown``.

    With autogroups, ``nice`` orders processes only within their group; the group's own priority
    decides how the CPU is shared with other sessions' processes.
    """
    try:
        with open("/proc/self/autogroup", encoding="utf-8") as group:
            return group.read().strip()
    except OSError:
        return "unknown"


def set_threads(threads: int | None) -> int:
    """Fix torch's intra-op thread count (``None``: keep torch's default) and return it."""
    torch = require_torch()
    if threads is not None:
        if threads < 1:
            raise CalibrationError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def environment(device: Device, threads: int) -> dict:
    """What a measurement ran on: torch version, device, threads, host allocator, load, priority, date."""
    torch = require_torch()
    return {
        "torch_version": torch.__version__,
        **device.describe(),
        "threads": threads,
        "interop_threads": torch.get_num_interop_threads(),
        "host_allocator": host_allocator(),
        "python_version": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],
        "nice": os.nice(0),  # scheduling priority of the measuring process (negative: favoured over other processes)
        "scheduler_group": scheduler_group(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
