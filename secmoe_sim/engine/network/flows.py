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
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable

import numpy as np
import simpy

from secmoe_sim.engine.network.flow_table import FlowTable, RateObserver
from secmoe_sim.engine.network.ports import ArrivalCallback
from secmoe_sim.engine.recorder import Recorder
from secmoe_sim.plan.communication import FREE, MessageCost
from secmoe_sim.plan.topology import Stage, Topology, with_latency_floor
from secmoe_sim.spec.hardware import Cluster


class _Message:
    """A message in flight: which stage it is at, and what to call with ``(src, dst)`` on arrival."""

    __slots__ = ("dst", "label", "notify", "payload_bytes", "post_s", "src", "stage", "stages", "started_at", "wire_bytes")

    def __init__(
        self,
        src: int,
        dst: int,
        payload_bytes: float,
        label: str,
        stages: tuple[Stage, ...],
        notify: ArrivalCallback,
        wire_bytes: float,
        post_s: float,
    ):
        self.src, self.dst, self.payload_bytes, self.label = src, dst, payload_bytes, label
        self.wire_bytes, self.post_s = wire_bytes, post_s
        self.stages, self.stage, self.notify = stages, 0, notify
        self.started_at = 0.0


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
        self._posting_free_at = [0.0] * cluster.num_gpus
        self._posting: dict[int, list[_Message]] = {}
        self._flow_messages: dict[int, list[_Message]] = {}
        self._starts: dict[float, list[_Message]] = {}
        self._ends: dict[float, list[_Message]] = {}
        self._settle_pending = False
        self._timer: simpy.Event | None = None
        self._timer_at = np.inf

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

    def transfer(
        self, src: int, dst: int, payload_bytes: float, label: str, order: tuple[Hashable, ...], cost: MessageCost = FREE
    ) -> simpy.Event:
        """Move ``payload_bytes`` from GPU ``src`` to GPU ``dst`` at the software ``cost`` of its stack; the event
        fires on arrival with ``(src, dst)``."""
        arrived = self.env.event()
        self.send(src, dst, payload_bytes, label, order, cost, arrived.succeed)
        return arrived

    def send(
        self,
        src: int,
        dst: int,
        payload_bytes: float,
        label: str,
        order: tuple[Hashable, ...],
        cost: MessageCost,
        on_arrival: ArrivalCallback,
    ) -> None:
        """``transfer`` without an event: ``on_arrival((src, dst))`` is called at the instant the message arrives."""
        stages = with_latency_floor(self.topology.route(src, dst), cost.latency_floor_s)
        message = _Message(src, dst, payload_bytes, label, stages, on_arrival, payload_bytes * cost.wire_factor, cost.post_s)
        group = self._posting.get(src)
        if group is None and cost.post_s == 0 and self._posting_free_at[src] <= self.env.now:
            message.started_at = self.env.now  # nothing to post, nothing being posted: its bytes start now
            self._at(self.env.now, self._starts, self._start_stages, [message])
            return
        if group is None:
            group = self._posting[src] = []
            closing = self.env.event()
            closing.callbacks.append(lambda _event: self._post(src))
            closing.succeed()  # after every message the sender issues at this instant
        group.append(message)

    def _post(self, src: int) -> None:
        """The sender's group of this instant is complete: its bytes start after posting all of it."""
        group = self._posting.pop(src)
        begins_at = max(self.env.now, self._posting_free_at[src])
        posted_at = begins_at + sum(message.post_s for message in group)
        self._posting_free_at[src] = posted_at
        for message in group:
            message.started_at = begins_at
        self._at(posted_at, self._starts, self._start_stages, group)

    def _at(self, instant: float, batches: dict[float, list[_Message]], handler: Callable, messages: list[_Message]) -> None:
        """Add ``messages`` to the batch handled at ``instant`` (one SimPy timer per instant)."""
        batch = batches.get(instant)
        if batch is None:
            batch = batches[instant] = []
            timer = self.env.timeout(max(instant - self.env.now, 0.0))
            timer.callbacks.append(lambda _event: handler(batches.pop(instant)))
        batch.extend(messages)

    def _start_stages(self, messages: list[_Message]) -> None:
        """Start the current stage of each message: a flow, or straight to its latency if empty."""
        now = self.env.now
        groups: dict[tuple, list[_Message]] = defaultdict(list)
        for message in messages:
            stage = message.stages[message.stage]
            if message.wire_bytes > 0:
                groups[(stage.links, message.wire_bytes)].append(message)
            else:
                self._at(now + stage.latency_s, self._ends, self._end_stages, [message])
        if not groups:
            return
        keys = list(groups)
        rows = np.full((len(keys), self.table.width), self.table.sentinel, dtype=np.int64)  # padded with the sentinel
        lengths = np.array([len(links) for links, _ in keys])
        for length in np.unique(lengths).tolist():
            chosen = np.flatnonzero(lengths == length)
            rows[chosen, :length] = np.array([keys[index][0] for index in chosen.tolist()], dtype=np.int64)
        payload = np.array([size for _, size in keys], dtype=float)
        weights = np.array([len(members) for members in groups.values()], dtype=float)
        slots = self.table.add(rows, payload, weights, now)
        for slot, members in zip(slots.tolist(), groups.values()):
            self._flow_messages[slot] = members
        self._request_settle()

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
        ending: dict[float, list[_Message]] = defaultdict(list)
        for slot in finished.tolist():
            for message in self._flow_messages.pop(slot):
                ending[message.stages[message.stage].latency_s].append(message)
        for latency_s, messages in ending.items():
            self._at(now + latency_s, self._ends, self._end_stages, messages)
        if finished.size:
            self._request_settle()
        else:
            self._arm_timer()

    def _end_stages(self, messages: list[_Message]) -> None:
        """Stages whose latency has passed: start the next stage, or deliver the message."""
        onward = []
        now = self.env.now
        for message in messages:
            message.stage += 1
            if message.stage < len(message.stages):
                onward.append(message)
                continue
            self.recorder.record_transfer(message.src, message.dst, message.label, message.started_at, now, message.payload_bytes)
            message.notify((message.src, message.dst))
        if onward:
            self._start_stages(onward)
