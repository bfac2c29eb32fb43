"""A minimal reference for the flow network: flows that share links at max-min fair rates, from scratch.

Given flows (each a set of links and a byte count, all starting at one instant), it advances time
from one flow's end to the next and, at every end, solves the max-min fair rates of the flows still
active with textbook progressive filling: raise every unfrozen rate together until a link saturates,
freeze the flows on it, repeat. No incremental state, no component search, no batching: the
simplest correct program, written to measure the project's engine against (same routes, same
capacities, the same finish times to float rounding) in ``speed_benchmark.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SATURATED_REL = 1e-12  # links within this (relative) of the lowest fair share saturate together


def water_filling(links: np.ndarray, capacity_bytes_per_s: np.ndarray) -> np.ndarray:
    """Max-min fair rates of flows ``links`` (rows of link indices; the last link, of infinite capacity, pads rows)."""
    num_flows = links.shape[0]
    rates = np.zeros(num_flows)
    frozen = np.zeros(num_flows, dtype=bool)
    residual = capacity_bytes_per_s.astype(float).copy()
    while not frozen.all():
        open_links = links[~frozen]
        count = np.bincount(open_links.ravel(), minlength=residual.shape[0]).astype(float)
        share = np.full(residual.shape[0], np.inf)
        crossed = count > 0
        share[crossed] = residual[crossed] / count[crossed]
        level = share.min()
        saturated = share <= level * (1 + SATURATED_REL)
        newly = ~frozen & saturated[links].any(axis=1)
        rates[newly] = level
        frozen |= newly
        residual -= np.bincount(links[newly].ravel(), weights=np.full(links[newly].size, level), minlength=residual.shape[0])
    return rates


Solver = Callable[[np.ndarray, np.ndarray], np.ndarray]


def finish_times_s(
    links: np.ndarray, payload_bytes: np.ndarray, capacity_bytes_per_s: np.ndarray, solver: Solver = water_filling
) -> tuple[np.ndarray, int]:
    """When each flow ends, all starting at 0, and how many times the rates were solved (by ``solver``:
    ``(links, capacity) -> rates``; default the textbook :func:`water_filling`)."""
    remaining = payload_bytes.astype(float).copy()
    finished = np.full(remaining.shape[0], np.nan)
    active = remaining > 0
    finished[~active] = 0.0
    now, solves = 0.0, 0
    while active.any():
        index = np.flatnonzero(active)
        rates = solver(links[index], capacity_bytes_per_s)
        solves += 1
        step = (remaining[index] / rates).min()
        now += step
        remaining[index] -= rates * step
        done = remaining[index] <= payload_bytes[index] * 1e-12
        finished[index[done]] = now
        remaining[index[done]] = 0.0
        active[index[done]] = False
    return finished, solves
