"""A fixed pure-Python workload, like the simulator's event loop, that the benchmarks time to describe the machine:
how fast it runs now (``speed_benchmark.py``) and how many cores' worth of it several processes get
(``sweep_benchmark.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def python_loop_s(iterations: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Run ``iterations`` steps of pure-Python arithmetic; return their duration by ``clock``."""
    started, total = clock(), 0
    for i in range(iterations):
        total += i * i
    return clock() - started
