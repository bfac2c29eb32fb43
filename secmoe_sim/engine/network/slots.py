"""Rows of growable numpy columns handed out and taken back: the flow table's flows, the messages in flight.

Freed rows are handed out again before fresh ones, the most recently freed first; when the fresh rows
would run past the columns, the owner grows them (at least doubling, each column with
:func:`extended`), so a run costs amortised O(1) per row taken.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class SlotPool:
    """Which rows of an owner's columns are free; ``grow(rows)`` makes the owner's columns ``rows`` long."""

    def __init__(self, rows: int, grow: Callable[[int], None]):
        self.rows = rows
        self.used = 0  # rows [0, used) have been handed out at least once
        self._grow = grow
        self._free: list[int] = []

    def take(self, count: int) -> np.ndarray:
        """``count`` rows to use."""
        taken = min(count, len(self._free))
        reused = self._free[len(self._free) - taken :][::-1]  # the most recently freed first
        del self._free[len(self._free) - taken :]
        fresh = count - taken
        if self.used + fresh > self.rows:
            self.rows = max(2 * self.rows, self.used + fresh)
            self._grow(self.rows)
        slots = np.concatenate([np.array(reused, dtype=np.int64), np.arange(self.used, self.used + fresh, dtype=np.int64)])
        self.used += fresh
        return slots

    def give_back(self, rows: list[int]) -> None:
        """``rows`` are free again."""
        self._free.extend(rows)


def extended(column: np.ndarray, rows: int, fill: float = 0) -> np.ndarray:
    """``column`` grown along its first axis to ``rows`` rows, the new ones ``fill`` (same dtype and row shape)."""
    grown = np.empty((rows, *column.shape[1:]), dtype=column.dtype)
    grown[: column.shape[0]] = column
    grown[column.shape[0] :] = fill
    return grown
