"""The active flows of the network and their max-min fair rates, kept up to date incrementally.

Every flow occupies a *slot* of a set of numpy arrays: its links (a padded row), its weight (how
many identical flows it stands for), its rate, the bytes it had left at ``updated_at`` and its
finish instant (in a :class:`~secmoe_sim.engine.network.finish_calendar.FinishCalendar`). A flow's
remaining bytes are only brought up to date when its rate changes: until then they fall linearly.
Starting and finishing flows update per-link loads and flow counts in O(flows changed).

Rates are recomputed (``settle``) after flows start or finish. A full water-filling per change
would cost O(flows) per event, so the recomputation is restricted to flows that can change:

* **Level threshold.** Water-filling freezes flows in increasing order of rate. Removing a flow of
  rate ``r`` leaves every flow of rate below ``r`` untouched (up to level ``r`` the filling is the
  same, only with more room on the removed flow's links). Adding a flow whose max-min rate will be
  at least ``b`` leaves every flow below ``b`` untouched; ``b`` is bounded from below by the flow's
  equal share ``min over its links of capacity / flows on the link``. So only flows at or above
  ``threshold = min(removed rates, added bounds)`` are recomputed, against the capacity that the
  flows below it leave.
* **Connected component.** Of those, only flows connected to a changed link through a chain of
  links and flows above the threshold are recomputed (a breadth-first search over links); a
  separate part of the network, a different group's all-to-all or an idle ring, keeps its rates.
  (Below ``BFS_MIN_CANDIDATES`` candidates the search costs more than it saves and is skipped:
  re-solving an untouched component gives it the rates it has, to float rounding. It is skipped in
  batched mode too, where a recomputation follows changes spread over the whole cluster: on a
  1,024-GPU all-to-all, 99 searches over 14.5 million candidates set aside 7 flows.)

Two modes: with ``tolerance`` 0 (``exact``) rates are recomputed at every instant at which flows
start or finish. With ``tolerance`` > 0 (``batched``) they are recomputed only once the flows
started or finished since the last recomputation exceed ``tolerance`` times the flows active then;
in between, a finished flow's bandwidth stays unused and a new flow gets a *provisional* rate: an
equal part of the capacity its links have left (never more than the links carry). If no flow
could progress, rates are recomputed at once. ``tolerance`` 0 is exactly ``exact``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from secmoe_sim.engine.network.finish_calendar import FinishCalendar
from secmoe_sim.engine.network.maxmin import max_min_rates
from secmoe_sim.engine.network.slots import SlotPool, extended

EMPTY_LINK_COUNT = 0.5  # weights are whole numbers: a link with less than this carries no flow
SIMULTANEOUS_REL = 1e-12  # finish instants this close (relative) count as one instant: float residue
LEVEL_REL = 1e-9  # rates this close (relative) below the threshold count as at it: the same level, rounded differently
INITIAL_SLOTS = 1024
BFS_MIN_CANDIDATES = 1024
LOCAL_SOLVE_RATIO = 8  # solve over renumbered links when the cluster has this many times more links than the problem

RateObserver = Callable[[float, "FlowTable"], None]


def _scatter_add(target: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    """``target[indices] += values`` with repeated indices summed, at the cheaper of two costs."""
    if indices.shape[0] > target.shape[0]:
        target += np.bincount(indices, weights=values, minlength=target.shape[0])
    else:
        np.add.at(target, indices, values)


class FlowTable:
    """Active flows over links of capacity ``capacity_bytes_per_s``, at most ``width`` links each."""

    def __init__(self, capacity_bytes_per_s: np.ndarray, width: int, tolerance: float, observer: RateObserver | None = None):
        self.capacity_bytes_per_s = np.append(np.asarray(capacity_bytes_per_s, dtype=float), np.inf)
        self.sentinel = self.capacity_bytes_per_s.shape[0] - 1
        self.width = width
        self.tolerance = tolerance
        self.observer = observer
        num_links = self.capacity_bytes_per_s.shape[0]
        self.link_load_bytes_per_s = np.zeros(num_links)
        self.link_flows = np.zeros(num_links)  # weighted count of active flows on each link
        self.links = np.full((INITIAL_SLOTS, width), self.sentinel, dtype=np.int64)
        self.weights = np.zeros(INITIAL_SLOTS)
        self.rate_bytes_per_s = np.zeros(INITIAL_SLOTS)
        self.remaining_bytes = np.zeros(INITIAL_SLOTS)
        self.updated_at = np.zeros(INITIAL_SLOTS)
        self.active = np.zeros(INITIAL_SLOTS, dtype=bool)
        self.provisional = np.zeros(INITIAL_SLOTS, dtype=bool)
        self.tag = np.zeros(INITIAL_SLOTS, dtype=np.int64)  # what the table's user knows each flow by (set by it)
        self.calendar = FinishCalendar(INITIAL_SLOTS)
        self.num_active = 0
        self._slots = SlotPool(INITIAL_SLOTS, self._grow)
        self._threshold = np.inf
        self._touched = np.zeros(num_links, dtype=bool)
        self._local_index = np.zeros(num_links, dtype=np.int64)  # scratch for renumbering links
        self._changes = 0
        self._active_at_solve = 0
        self._new_slots: list[np.ndarray] = []  # started, waiting for a provisional rate
        self._unsolved: list[np.ndarray] = []  # started since the last recomputation
        self._finished: list[np.ndarray] = []  # ended, still on their links until released
        self.flows_started = 0
        self.recomputations = 0
        self.recomputed_flows = 0
        self.recompute_host_s = 0.0  # host time spent recomputing rates (benchmarks report it)

    def active_slots(self) -> np.ndarray:
        return np.flatnonzero(self.active[: self._slots.used])

    # --- flows in and out --------------------------------------------------------------------

    def _grow(self, slots: int) -> None:
        self.links = extended(self.links, slots, self.sentinel)
        for name in ("weights", "rate_bytes_per_s", "remaining_bytes", "updated_at", "active", "provisional", "tag"):
            setattr(self, name, extended(getattr(self, name), slots))
        self.calendar.grow(slots)

    def add(self, links: np.ndarray, payload_bytes: np.ndarray, weights: np.ndarray, now: float) -> np.ndarray:
        """Start flows (rows of padded ``links``) of ``payload_bytes`` each; returns their slots.

        Their rates are set at the next ``settle``.
        """
        count = links.shape[0]
        slots = self._slots.take(count)
        self.links[slots] = links
        self.weights[slots] = weights
        self.rate_bytes_per_s[slots] = 0.0
        self.remaining_bytes[slots] = payload_bytes
        self.updated_at[slots] = now
        self.active[slots] = True
        self.provisional[slots] = True
        flat = links.ravel()
        _scatter_add(self.link_flows, flat, np.repeat(weights, self.width))
        self._touched[flat] = True
        equal_share = self.capacity_bytes_per_s[links] / np.maximum(self.link_flows[links], EMPTY_LINK_COUNT)
        self._threshold = min(self._threshold, float(equal_share.min()))
        self.num_active += count
        self._changes += count
        self.flows_started += count
        self._new_slots.append(slots)
        self._unsolved.append(slots)
        return slots

    def finish_until(self, instant: float) -> np.ndarray:
        """End every flow that finishes by ``instant`` (within float residue); returns their slots.

        Their links are released at the next ``settle`` that needs the loads (in batched mode most
        completions need nothing more than this).
        """
        slots = self.calendar.pop_until(instant * (1.0 + SIMULTANEOUS_REL))
        if slots.size:
            self.active[slots] = False
            self.num_active -= slots.size
            self._changes += slots.size
            self._finished.append(slots)
        return slots

    def _release_finished(self) -> None:
        """Take the flows ended since the last call off their links and free their slots."""
        if not self._finished:
            return
        if len(self._finished) == 1 and self._finished[0].size == 1:
            self._release_one(int(self._finished.pop()[0]))
            return
        slots = np.concatenate(self._finished)
        self._finished = []
        rates, weights = self.rate_bytes_per_s[slots], self.weights[slots]
        solved = ~self.provisional[slots]
        if solved.any():
            self._threshold = min(self._threshold, float(rates[solved].min()))
        flat = self.links[slots].ravel()
        self._touched[flat] = True
        _scatter_add(self.link_load_bytes_per_s, flat, -np.repeat(rates * weights, self.width))
        _scatter_add(self.link_flows, flat, -np.repeat(weights, self.width))
        idle = flat[self.link_flows[flat] < EMPTY_LINK_COUNT]
        self.link_load_bytes_per_s[idle] = 0.0  # no residue on a link without flows
        self.provisional[slots] = False
        self.rate_bytes_per_s[slots] = 0.0
        self._slots.give_back(slots.tolist())

    def _release_one(self, slot: int) -> None:
        """``_release_finished`` for the common single flow, in scalar steps (no array set-up)."""
        rate, weight = float(self.rate_bytes_per_s[slot]), float(self.weights[slot])
        if not self.provisional[slot]:
            self._threshold = min(self._threshold, rate)
        load, flows = self.link_load_bytes_per_s, self.link_flows
        for link in self.links[slot].tolist():
            self._touched[link] = True
            load[link] -= rate * weight
            flows[link] -= weight
            if flows[link] < EMPTY_LINK_COUNT:
                load[link] = 0.0  # no residue on a link without flows
        self.provisional[slot] = False
        self.rate_bytes_per_s[slot] = 0.0
        self._slots.give_back([slot])

    def next_finish_at(self) -> float:
        return self.calendar.next_at()

    # --- rates -------------------------------------------------------------------------------

    def settle(self, now: float) -> None:
        """Bring rates up to date after the flows started and finished at ``now``."""
        if self._changes == 0:
            return
        if self._changes > self.tolerance * self._active_at_solve:
            self._recompute(now)
        else:
            if self._new_slots or self.observer is not None:
                self._release_finished()
                self._give_provisional_rates(now)
            if self.num_active and not math.isfinite(self.next_finish_at()):
                self._recompute(now)  # nothing would progress before the next recomputation
        if self.observer is not None:
            self.observer(now, self)

    def _recompute(self, now: float) -> None:
        started_at = time.perf_counter()  # not process_time: on some machines each call costs tens of us
        self._release_finished()
        used = self._slots.used
        # Ended flows have been released (rate 0) and the threshold is positive: a rate at or
        # above it marks an active flow; flows started since the last recomputation always count.
        chosen = self.rate_bytes_per_s[:used] >= self._threshold * (1.0 - LEVEL_REL)
        for started in self._unsolved:
            chosen[started] |= self.active[started]
        candidates = np.flatnonzero(chosen)
        search = self.tolerance == 0 and candidates.size >= BFS_MIN_CANDIDATES
        flows = self._connected(candidates) if search else candidates
        if flows.size:
            links, weights, old = self.links[flows], self.weights[flows], self.rate_bytes_per_s[flows]
            rates = self._solve(links, weights, old)
            changed = rates != old
            self._apply(flows[changed], rates[changed], now, links[changed], weights[changed], old[changed])
            self.recomputations += 1
            self.recomputed_flows += flows.size
        for slots in self._unsolved:
            self.provisional[slots] = False
        self._threshold = np.inf
        self._touched[:] = False
        self._changes = 0
        self._new_slots = []
        self._unsolved = []
        self._active_at_solve = self.num_active
        self.recompute_host_s += time.perf_counter() - started_at

    def _solve(self, links: np.ndarray, weights: np.ndarray, rates: np.ndarray) -> np.ndarray:
        """Max-min rates of the flows of ``links``, ``weights`` and current ``rates`` within the capacity the other
        flows leave them.

        A problem much smaller than the cluster is solved over just the links it touches
        (renumbered), others over all links, so the cost follows the problem, not the cluster.
        """
        own_load = np.repeat(rates * weights, self.width)
        if links.size * LOCAL_SOLVE_RATIO < self.capacity_bytes_per_s.shape[0]:
            touched, local = self._renumbered(links)
            own = np.bincount(local.ravel(), weights=own_load, minlength=touched.shape[0])
            available = self.capacity_bytes_per_s[touched] - (self.link_load_bytes_per_s[touched] - own)
            return max_min_rates(local, weights, available)
        own = np.bincount(links.ravel(), weights=own_load, minlength=self.sentinel + 1)
        available = self.capacity_bytes_per_s - (self.link_load_bytes_per_s - own)
        return max_min_rates(links, weights, available)

    def _renumbered(self, links: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct links of ``links`` (ascending) and ``links`` renumbered into them."""
        present = np.zeros(self.sentinel + 1, dtype=bool)
        present[links] = True
        touched = np.flatnonzero(present)
        self._local_index[touched] = np.arange(touched.shape[0])
        return touched, self._local_index[links]

    def _connected(self, candidates: np.ndarray) -> np.ndarray:
        """The candidates reachable from a changed link through links and candidate flows."""
        reached = self._touched.copy()
        reached[self.sentinel] = False
        links = self.links[candidates]
        columns = [np.ascontiguousarray(links[:, j]) for j in range(self.width)]  # column by column: see maxmin
        taken = np.zeros(candidates.shape[0], dtype=bool)
        while True:
            hit = reached[columns[0]]
            for column in columns[1:]:
                hit |= reached[column]
            hit &= ~taken
            if not hit.any():
                return candidates[taken]
            taken |= hit
            reached[links[hit].ravel()] = True
            reached[self.sentinel] = False
            if taken.all():
                return candidates

    def _give_provisional_rates(self, now: float) -> None:
        """New flows share equally what their links have left; nobody else's rate changes."""
        if not self._new_slots:
            return
        slots = np.concatenate(self._new_slots)
        self._new_slots = []
        slots = slots[self.active[slots]]
        if slots.size == 0:
            return
        links, weights = self.links[slots], self.weights[slots]
        touched, local = self._renumbered(links)
        newcomers = np.bincount(local.ravel(), weights=np.repeat(weights, self.width), minlength=touched.shape[0])
        left = np.maximum(self.capacity_bytes_per_s[touched] - self.link_load_bytes_per_s[touched], 0.0)
        share = (left / newcomers)[local]
        provisional = share[:, 0].copy()
        for j in range(1, self.width):
            np.minimum(provisional, share[:, j], out=provisional)
        self._apply(slots, provisional, now, links, weights, self.rate_bytes_per_s[slots])

    def _apply(
        self, slots: np.ndarray, rates: np.ndarray, now: float, links: np.ndarray, weights: np.ndarray, old: np.ndarray
    ) -> None:
        """Set new ``rates`` of ``slots`` (whose ``links``, ``weights`` and ``old`` rates the caller has gathered):
        bring remaining bytes up to ``now``, move link loads, reschedule finishes."""
        remaining = np.maximum(self.remaining_bytes[slots] - old * (now - self.updated_at[slots]), 0.0)
        self.remaining_bytes[slots] = remaining
        self.updated_at[slots] = now
        self.rate_bytes_per_s[slots] = rates
        _scatter_add(self.link_load_bytes_per_s, links.ravel(), np.repeat((rates - old) * weights, self.width))
        moving = rates > 0
        finish_at = np.divide(remaining, rates, out=np.full(rates.shape[0], np.inf), where=moving)
        finish_at[moving] += now
        self.calendar.set(slots, finish_at)
