"""The flow-level network: messages become flows that share links max-min fairly.

A message from GPU ``a`` to GPU ``b`` goes through the stages of its route (see
:mod:`secmoe_sim.plan.topology`). Its life:

1. **Posting.** The messages a GPU issues at one instant form one group (an NCCL group of
   sends): the sender spends each message's ``post_s`` posting them (a host-staged library's
   per-message cost; zero for NCCL and GPU-initiated stacks, whose costs are paid at the
   collective's start), then their bytes start together. A group waits for the sender's previous
   group to be posted, and the posting occupies no link. A message with nothing to post, from a
   sender that is posting nothing, starts at once (no group).
2. **Bytes.** Each stage is one flow of the message's *wire bytes* (payload x the stack's wire
   factor: a message that achieves 80% of a link carries 1.25 times its payload) over all of the
   stage's links at once; concurrent flows share every link max-min fairly
   (:mod:`secmoe_sim.engine.network.flow_table`), and rates change only when the set of flows changes.
3. **Latency.** When a stage's last byte has left, the stage ends ``latency`` later; the next stage
   (store-and-forward through host memory) starts then, without a second overhead. A stack's
   latency floor (an NCCL protocol's end-to-end step latency) extends the last stage when the
   route's own latencies sum to less.

An uncontended message therefore takes ``post_s + sum over stages (wire bytes / bandwidth +
latency)`` (the last latency raised to the floor), the same as on the port model, and a zero-byte
message costs its posting and latency only.

One manager drives all flows: it keeps the flow table, one pending timer for the next completion,
and batches of stage starts and stage ends keyed by their instant, so the SimPy event count grows
with the number of distinct instants, not with the number of flows. Rates are recomputed once per
instant, after everything else that happens at that instant. Identical flows (same links, same
bytes, starting at the same instant) are merged into one flow of that weight.

Messages are sent in arrays (``send_many``: one sender's exchange, one instant's ring steps) and
live as rows of a :class:`~secmoe_sim.engine.network.messages.MessageTable`; their routes are built
in arrays (:meth:`~secmoe_sim.plan.topology.Topology.routes`), the messages that arrive at one
instant are recorded in one call and each sender of messages is told once per instant, with the
tags of its messages that arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from functools import partial

import numpy as np
import simpy

from secmoe_sim.engine.network.flow_table import FlowTable, RateObserver
from secmoe_sim.engine.network.messages import MessageTable
from secmoe_sim.engine.network.ports import ArrivalSink
from secmoe_sim.engine.numbering import Numbering
from secmoe_sim.engine.ordering import first_occurrence_groups, lexicographic_order
from secmoe_sim.engine.recorder import Recorder
from secmoe_sim.plan.communication import MessageCosts
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.hardware import Cluster

Batches = dict[float, list[np.ndarray]]


class FlowNetwork:
    """Moves bytes between GPUs as max-min fair flows; see the module docstring."""

    ordered = False  # rates are decided at run time: no order keys, no announcements

    def __init__(
        self,
        env: simpy.Environment,
        cluster: Cluster,
        recorder: Recorder,
        tolerance: float,
        observer: RateObserver | None = None,
        topology: Topology | None = None,
    ):
        self.env = env
        self.cluster = cluster
        self.recorder = recorder
        self.topology = topology or Topology(cluster)
        self.table = FlowTable(self.topology.capacity_bytes_per_s, self.topology.max_stage_links, tolerance, observer)
        self.messages = MessageTable(self.topology.max_stages, self.table.width, self.table.sentinel)
        self._posting_free_at = np.zeros(cluster.num_gpus)
        self._posting: dict[int, list[np.ndarray]] = {}  # a sender's group of this instant, until it closes
        self._starts: Batches = {}
        self._ends: Batches = {}
        self._sinks: Numbering[ArrivalSink] = Numbering()
        self._settle_pending = False
        self._timer: simpy.Event | None = None
        self._timer_at = np.inf
        self._merging = False  # whether any flow has stood for several messages (until then, a flow is its message)

    def statistics(self) -> dict[str, float]:
        """The flow manager's own work: flows started, rate recomputations, host CPU time spent on them."""
        table = self.table
        return {
            "flows": table.flows_started,
            "rate_recomputations": table.recomputations,
            "recomputed_flows": table.recomputed_flows,
            "recompute_host_s": table.recompute_host_s,
        }

    def expect(self, src: int, dst: int, order: tuple[Hashable, ...]) -> None:
        """Part of the network interface; flows need no announcement: rates are decided at run time."""

    def send_many(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        payload_bytes: np.ndarray,
        label: str,
        orders: Sequence[tuple[Hashable, ...]] | None,
        costs: MessageCosts,
        sink: ArrivalSink,
        tags: np.ndarray,
    ) -> None:
        """Send message ``i`` of ``payload_bytes[i]`` from GPU ``src[i]`` to ``dst[i]`` at the software cost
        ``costs`` of its stack; at the instant messages arrive, ``sink`` is called with their ``tags``.
        ``orders`` are ignored (no announcements)."""
        if src.shape[0] == 0:
            return
        routes = self.topology.routes(src, dst, costs.latency_floor_s, self.table.sentinel)
        ids = self.messages.add(
            src,
            dst,
            payload_bytes,
            payload_bytes * costs.wire_factor,
            costs.post_s,
            routes,
            self._sinks.number(sink),
            tags,
            self.recorder.transfer_label(label),
        )
        now = self.env.now
        posting = (costs.post_s != 0) | (self._posting_free_at[src] > now)
        if self._posting:
            posting |= np.isin(src, np.fromiter(self._posting, dtype=np.int64))
        if posting.any():
            posting = np.isin(src, src[posting])  # a sender with anything to post posts all of these in its group
        immediate = ids[~posting]
        if immediate.size:
            self.messages.started_at[immediate] = now  # nothing to post, nothing being posted: the bytes start now
            self._at(now, self._starts, self._start_stages, immediate)
        if immediate.size < ids.size:
            for sender, positions in first_occurrence_groups(src[posting]):
                self._join_group(int(sender), ids[posting][positions])

    def _join_group(self, sender: int, ids: np.ndarray) -> None:
        """Add messages to the sender's group of this instant, opening it if needed."""
        group = self._posting.get(sender)
        if group is None:
            group = self._posting[sender] = []
            closing = self.env.event()
            closing.callbacks.append(partial(self._post, sender))
            closing.succeed()  # after every message the sender issues at this instant
        group.append(ids)

    def _post(self, sender: int, _event: simpy.Event) -> None:
        """The sender's group of this instant is complete: its bytes start after posting all of it."""
        group = self._posting.pop(sender)
        ids = group[0] if len(group) == 1 else np.concatenate(group)
        begins_at = max(self.env.now, float(self._posting_free_at[sender]))
        posted_at = begins_at + float(np.cumsum(self.messages.post_s[ids])[-1])  # summed in order, as one by one
        self._posting_free_at[sender] = posted_at
        self.messages.started_at[ids] = begins_at
        self._at(posted_at, self._starts, self._start_stages, ids)

    def _at(self, instant: float, batches: Batches, handler: Callable[[np.ndarray], None], ids: np.ndarray) -> None:
        """Add messages ``ids`` to the batch handled at ``instant`` (one SimPy timer per instant)."""
        batch = batches.get(instant)
        if batch is None:
            batch = batches[instant] = []
            timer = self.env.timeout(max(instant - self.env.now, 0.0))
            timer.callbacks.append(partial(self._run_batch, batches, instant, handler))
        batch.append(ids)

    @staticmethod
    def _run_batch(batches: Batches, instant: float, handler: Callable[[np.ndarray], None], _event: simpy.Event) -> None:
        batch = batches.pop(instant)
        handler(batch[0] if len(batch) == 1 else np.concatenate(batch))

    def _start_stages(self, ids: np.ndarray) -> None:
        """Start the current stage of each message: a flow, or straight to its latency if empty."""
        now = self.env.now
        messages = self.messages
        wire = messages.wire_bytes[ids]
        empty = wire <= 0
        if empty.any():
            self._after_latency(ids[empty], now)
            ids, wire = ids[~empty], wire[~empty]
            if ids.size == 0:
                return
        links = messages.current_links(ids)
        heads, members, rows, weights = self._merged(ids, links, wire)
        slots = self.table.add(rows, wire[heads], weights, now)
        self.table.tag[slots] = ids[heads]  # a flow is known by its first message; the rest follow it
        if members is not None:  # link each merged flow's messages, in order
            self._merging = True
            ordered = ids[members]
            follows = np.flatnonzero(np.diff(np.repeat(np.arange(weights.shape[0]), weights.astype(np.int64))) == 0)
            messages.next_in_flow[ordered[follows]] = ordered[follows + 1]
        self._request_settle()

    @staticmethod
    def _merged(
        ids: np.ndarray, links: np.ndarray, wire: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """Identical flows (same links, same wire bytes) as one each, in the order they first appear: the position
        of each flow's first message, the positions of all messages grouped by flow (``None``: no two alike),
        each flow's links and its weight (messages)."""
        if ids.shape[0] == 1:
            return np.zeros(1, dtype=np.int64), None, links, np.ones(1)
        wire_rank = np.unique(wire, return_inverse=True)[1]  # equal bytes, equal rank: only equality matters here
        keys = np.column_stack([links, wire_rank])
        order = lexicographic_order(*keys.T)
        sorted_keys = keys[order]
        new = np.ones(order.shape[0], dtype=bool)
        new[1:] = np.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)
        if new.all():
            return np.arange(ids.shape[0]), None, links, np.ones(ids.shape[0])
        group_of_sorted = np.cumsum(new) - 1
        first = order[new]  # lexsort is stable: each flow's first message in the order sent
        rank = np.empty(first.shape[0], dtype=np.int64)
        rank[np.argsort(first)] = np.arange(first.shape[0])
        flow_of = np.empty(ids.shape[0], dtype=np.int64)
        flow_of[order] = rank[group_of_sorted]
        members = np.argsort(flow_of, kind="stable")
        weights = np.bincount(flow_of).astype(float)
        heads = np.sort(first)
        return heads, members, links[heads], weights

    def _after_latency(self, ids: np.ndarray, now: float, at_once: bool = False) -> None:
        """The stages of ``ids`` have sent their last byte at ``now``: each ends after its latency. With ``at_once``,
        stages of no latency end here when nothing else is due at this instant (their timer would be the next
        event; what they set off is scheduled as it would be from there, and no flow changes before it runs)."""
        latency_s = self.messages.current_latency_s(ids)
        for latency, positions in first_occurrence_groups(latency_s):
            if at_once and self._ends_now(float(latency), now):
                self._end_stages(ids[positions])
                continue
            self._at(now + float(latency), self._ends, self._end_stages, ids[positions])

    def _ends_now(self, latency_s: float, now: float) -> bool:
        """Whether a stage whose last byte left at ``now`` can end here rather than by its timer: no latency and
        nothing else due at this instant (the timer would be the next event)."""
        return latency_s == 0 and now not in self._ends and self.env.peek() > now

    def _request_settle(self) -> None:
        """Recompute rates once, after everything else that happens at this instant."""
        if self._settle_pending:
            return
        if self.env.peek() > self.env.now:
            self._settle()  # nothing else is due at this instant
            return
        self._settle_pending = True
        event = self.env.event()
        event.callbacks.append(lambda _event: self._settle())
        event.succeed()

    def _settle(self) -> None:
        self._settle_pending = False
        self.table.settle(self.env.now)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Make sure a timer fires at the next flow completion."""
        next_at = self.table.next_finish_at()
        if next_at < self._timer_at:
            self._timer_at = next_at
            self._timer = self.env.timeout(max(next_at - self.env.now, 0.0))
            self._timer.callbacks.append(self._on_timer)

    def _on_timer(self, event: simpy.Event) -> None:
        if event is self._timer:
            self._timer, self._timer_at = None, np.inf
        now = self.env.now
        finished = self.table.finish_until(now)
        if finished.size == 1 and not self._merging and self._delivered_alone(int(self.table.tag[finished[0]]), now):
            self._request_settle()
        elif finished.size:
            self._after_latency(self._members(finished), now, at_once=True)
            self._request_settle()
        else:
            self._arm_timer()

    def _delivered_alone(self, message: int, now: float) -> bool:
        """The common instant of a large exchange, one message's last byte and nothing else, handled in scalar steps:
        if the message has one stage and no latency and nothing else is due now, deliver it (what ``_after_latency``
        with ``at_once`` and ``_end_stages`` do for it) and say so; otherwise leave it to them."""
        messages = self.messages
        if messages.max_stages > 1 or not self._ends_now(float(messages.latency_s[message, 0]), now):
            return False
        src, dst, label, sink, tag = messages.arrival[message].tolist()
        started_at, payload_bytes = float(messages.started_at[message]), float(messages.payload_bytes[message])
        self.recorder.record_numbered_transfer(src, dst, label, started_at, now, payload_bytes)
        messages.release_one(message)
        self._sinks.values[sink](np.array([tag]))
        return True

    def _members(self, slots: np.ndarray) -> np.ndarray:
        """The messages of flows ``slots``, flow by flow, each flow's in the order they were sent."""
        heads = self.table.tag[slots]
        if not self._merging:
            return heads
        weights = self.table.weights[slots]
        if (weights == 1).all():
            return heads
        counts = weights.astype(np.int64)
        out = np.empty(int(counts.sum()), dtype=np.int64)
        position = np.cumsum(counts) - counts
        current, left = heads, counts
        while current.size:
            out[position] = current
            more = left > 1
            current, position, left = self.messages.next_in_flow[current[more]], position[more] + 1, left[more] - 1
        return out

    def _end_stages(self, ids: np.ndarray) -> None:
        """Stages whose latency has passed: start the next stage, or deliver the message."""
        messages = self.messages
        onward = None
        if messages.max_stages > 1:  # routes of one stage (NVSwitch and full-mesh clusters) skip the bookkeeping
            messages.stage[ids] += 1
            onward = messages.stage[ids] < messages.stages[ids]
        delivered = ids if onward is None else ids[~onward]
        if delivered.size:
            src, dst, label, sinks, tags = messages.arrival[delivered].T
            self.recorder.record_transfers(
                src,
                dst,
                label,
                messages.started_at[delivered],
                self.env.now,
                messages.payload_bytes[delivered],
            )
            messages.release(delivered)
            for sink, positions in first_occurrence_groups(sinks):
                self._sinks.values[int(sink)](tags[positions])
        if onward is not None and onward.any():
            self._start_stages(ids[onward])
