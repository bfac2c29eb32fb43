"""When each active flow will finish at its current rate, and which flows finish next.

Rates change for many flows at a time, so a binary heap alone would take one Python push per flow
per rate change, and a scan of all flows per completion costs O(flows). The calendar keeps the
finish instant of every flow slot in one array, plus

* a sorted *prefix*: the soonest flows, every flow finishing no later than ``bound``, in order,
  built with one partial sort (``argpartition``) of the soonest ``1/PREFIX_DIVISOR`` of the flows,
  so a rebuild, O(flows), happens once per that many completions;
* a small binary heap for the few finish instants that change to before ``bound`` between
  rebuilds (a flow that starts, a flow whose rate rises); many at once are merged into the prefix
  with one sort instead.

An entry whose slot has been given a newer finish instant since is *stale*: a per-slot version
number tells, and stale entries are skipped when they come to the front.
"""

from __future__ import annotations

import heapq

import numpy as np

from secmoe_sim.engine.network.slots import extended

MIN_PREFIX = 256  # flows in a rebuilt prefix, at least
PREFIX_DIVISOR = 16  # a rebuilt prefix holds this fraction of the scheduled flows, at least MIN_PREFIX
HEAP_INSERTS = 32  # more early instants than this at once are merged into the prefix by sorting


class FinishCalendar:
    """Finish instants of flow slots (``inf``: no finish scheduled) and the soonest ones, sorted."""

    def __init__(self, slots: int):
        self.finish_at = np.full(slots, np.inf)
        self._version = np.zeros(slots, dtype=np.int64)
        self._heap: list[tuple[float, int, int]] = []
        self._soonest: float | None = None  # next_at's answer, until a finish instant changes
        self._clear_prefix()

    def _clear_prefix(self) -> None:
        self._order = np.empty(0, dtype=np.int64)
        self._times = np.empty(0)
        self._versions = np.empty(0, dtype=np.int64)
        self._head = 0
        self._bound = -np.inf  # every scheduled slot finishing at or before this is in the prefix or the heap
        self._heap = []

    def grow(self, slots: int) -> None:
        """Room for ``slots`` flow slots in all."""
        self.finish_at = extended(self.finish_at, slots, np.inf)
        self._version = extended(self._version, slots)

    def set(self, slots: np.ndarray, finish_at: np.ndarray) -> None:
        """New finish instants for ``slots`` (``inf`` to unschedule them)."""
        self._soonest = None
        self.finish_at[slots] = finish_at
        self._version[slots] += 1
        early = np.flatnonzero(finish_at <= self._bound)
        if early.size == 0:
            return
        if early.size <= HEAP_INSERTS:
            versions = self._version[slots[early]]
            for instant, slot, version in zip(finish_at[early].tolist(), slots[early].tolist(), versions.tolist()):
                heapq.heappush(self._heap, (instant, slot, version))
            return
        if early.size > self._order.shape[0] - self._head + MIN_PREFIX:
            self._clear_prefix()  # cheaper to rebuild than to merge
            return
        order = np.concatenate([self._order[self._head :], slots[early]])
        current = self._version[order] == np.concatenate([self._versions[self._head :], self._version[slots[early]]])
        order = order[current]
        times = self.finish_at[order]
        position = np.argsort(times, kind="stable")
        self._order, self._times = order[position], times[position]
        self._versions, self._head = self._version[self._order], 0

    def _rebuild(self) -> None:
        self._heap = []
        self._head = 0
        scheduled = np.flatnonzero(np.isfinite(self.finish_at))
        self._bound = np.inf
        if scheduled.size == 0:
            self._order, self._times, self._versions = scheduled, np.empty(0), np.empty(0, dtype=np.int64)
            return
        keep = max(MIN_PREFIX, scheduled.size // PREFIX_DIVISOR)
        times = self.finish_at[scheduled]
        if keep < scheduled.size:
            cut = np.partition(times, keep - 1)[keep - 1]
            chosen = times <= cut  # ties at the cut stay together
            scheduled, times = scheduled[chosen], times[chosen]
            self._bound = cut
        position = np.argsort(times, kind="stable")
        self._order, self._times = scheduled[position], times[position]
        self._versions = self._version[self._order]

    def _prefix_front(self) -> float:
        """The soonest current entry of the prefix (stale entries at the front are skipped)."""
        order, versions, version = self._order, self._versions, self._version
        head, size = self._head, order.shape[0]
        while head < size and versions[head] != version[order[head]]:
            head += 1
        self._head = head
        return float(self._times[head]) if head < size else np.inf

    def _heap_front(self) -> float:
        heap, version = self._heap, self._version
        while heap and heap[0][2] != version[heap[0][1]]:
            heapq.heappop(heap)
        return heap[0][0] if heap else np.inf

    def next_at(self) -> float:
        """The soonest finish instant (``inf`` if no flow is scheduled to finish)."""
        if self._soonest is not None:
            return self._soonest
        soonest = min(self._prefix_front(), self._heap_front())
        if self._head >= self._order.shape[0] and self._bound < np.inf and not soonest <= self._bound:
            self._rebuild()
            soonest = self._prefix_front()
        self._soonest = soonest
        return soonest

    def pop_until(self, instant: float) -> np.ndarray:
        """Slots whose finish instant is at or before ``instant``; they are unscheduled."""
        if self.next_at() > instant:
            return np.empty(0, dtype=np.int64)
        head = self._head
        if (
            head < self._order.shape[0]
            and self._times[head] == self._soonest
            and (head + 1 == self._order.shape[0] or self._times[head + 1] > instant)
            and self._heap_front() > instant
        ):  # the common case: one flow due, at the front of the prefix (current: next_at skipped the stale ones)
            self._head = head + 1
            self._unschedule(int(self._order[head]))  # a plain index: cheaper than an array of one
            return self._order[head : head + 1]
        due: list[np.ndarray] = []
        while self.next_at() <= instant:
            end = int(np.searchsorted(self._times, instant, side="right"))
            if end > self._head:
                order, versions = self._order[self._head : end], self._versions[self._head : end]
                self._head = end
                self._take(order[versions == self._version[order]], due)
            popped = []
            while self._heap_front() <= instant:
                popped.append(heapq.heappop(self._heap)[1])
            if popped:
                self._take(np.array(popped, dtype=np.int64), due)
        if len(due) == 1:
            return due[0]
        return np.concatenate(due) if due else np.empty(0, dtype=np.int64)

    def _take(self, slots: np.ndarray, due: list[np.ndarray]) -> None:
        self._unschedule(slots)
        due.append(slots)

    def _unschedule(self, slots: np.ndarray | int) -> None:
        """``slots`` (an array of them, or one) finish at no scheduled instant; entries for them go stale."""
        self._soonest = None
        self.finish_at[slots] = np.inf
        self._version[slots] += 1
