"""The capacity-1 port network: every link carries one message at a time, in a fixed order.

Every link on a message's stage (a GPU's egress or ingress, a shared host bridge, a NIC) is a port
that carries one message at a time and serves its messages in a fixed order known before the layer
starts: collective by collective, and inside an all-to-all by shift (``(dst - src) mod group
size``, the peer order NCCL uses for grouped point-to-point calls), so that a uniform all-to-all
among ``n`` GPUs runs as ``n - 1`` contention-free rounds. A message's stage starts when it has
been issued and it is next in line on every port of the stage; it holds them for ``latency +
wire bytes / bandwidth`` (plus the message's posting cost on its first stage), ``bandwidth`` being
the slowest link of the stage; a stack's latency floor extends the last stage.

Because every start time is a maximum of earlier finish times plus durations (a max-plus system
with a fixed order), shortening any duration, e.g. with more bandwidth, never delays anything; a
greedy "first free port" policy would not have that property. Concurrent messages never share a
link's bandwidth: that is what the flow network (:mod:`secmoe_sim.engine.network.flows`) models.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from functools import partial

import numpy as np
import simpy

from secmoe_sim.engine.recorder import Recorder
from secmoe_sim.plan.communication import FREE, MessageCost, MessageCosts
from secmoe_sim.plan.topology import Topology, with_latency_floor
from secmoe_sim.spec.hardware import Cluster

OrderKey = tuple[Hashable, ...]
ArrivalSink = Callable[[np.ndarray], object]
"""Called with the tags of a sender's messages that arrived at the current instant (``Network.send_many``)."""


def _tell(sink: ArrivalSink, tags: np.ndarray, _event: simpy.Event) -> None:
    sink(tags)


class PortNetwork:
    """The ports of a cluster and the ordered queues of messages on them."""

    ordered = True  # every message is announced with its order key before the run

    def __init__(self, env: simpy.Environment, cluster: Cluster, recorder: Recorder, topology: Topology | None = None):
        self.env = env
        self.cluster = cluster
        self.recorder = recorder
        self.topology = topology or Topology(cluster)
        self._expected: dict[int, list[OrderKey]] = defaultdict(list)
        self._queues: dict[int, list[OrderKey]] = {}
        self._head: dict[int, int] = defaultdict(int)
        self._running: set[int] = set()
        self._issued: dict[OrderKey, tuple[tuple[int, ...], simpy.Event]] = {}
        self._announced: set[OrderKey] = set()

    def statistics(self) -> dict[str, float]:
        """The port model does no rate computation: nothing to report."""
        return {}

    def expect(self, src: int, dst: int, order: OrderKey) -> None:
        """Announce, before the run, a message that will be sent; ``order`` ranks it on its ports."""
        for index, stage in enumerate(self.topology.route(src, dst)):
            stage_key = order + (index,)
            if stage_key in self._announced:
                raise ValueError(f"two messages share the order key {order}")
            self._announced.add(stage_key)
            for port in stage.links:
                self._expected[port].append(stage_key)

    def transfer(
        self, src: int, dst: int, payload_bytes: float, label: str, order: OrderKey, cost: MessageCost = FREE
    ) -> simpy.Event:
        """Move ``payload_bytes`` from GPU ``src`` to GPU ``dst`` at the software ``cost`` of its stack; the event
        fires on arrival with ``(src, dst)``."""
        return self.env.process(self._transfer(src, dst, payload_bytes, label, order, cost))

    def send_many(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        payload_bytes: np.ndarray,
        label: str,
        orders: Sequence[OrderKey] | None,
        costs: MessageCosts,
        sink: ArrivalSink,
        tags: np.ndarray,
    ) -> None:
        """``transfer`` for each message ``i`` (its order key ``orders[i]``); ``sink`` is called with a message's
        tag when it arrives."""
        if orders is None:
            raise ValueError("the port network needs the order key of every message")
        for index in range(src.shape[0]):
            cost = costs.of(index)
            arrived = self.transfer(int(src[index]), int(dst[index]), float(payload_bytes[index]), label, orders[index], cost)
            arrived.callbacks.append(partial(_tell, sink, tags[index : index + 1]))

    def _transfer(self, src: int, dst: int, payload_bytes: float, label: str, order: OrderKey, cost: MessageCost):
        started_at: float | None = None
        wire_bytes = payload_bytes * cost.wire_factor
        for index, stage in enumerate(with_latency_floor(self.topology.route(src, dst), cost.latency_floor_s)):
            stage_key = order + (index,)
            yield self._issue(stage_key, stage.links)
            if started_at is None:
                started_at = self.env.now
            overhead_s = cost.post_s if index == 0 else 0.0
            yield self.env.timeout(overhead_s + stage.latency_s + wire_bytes / stage.bandwidth_bytes_per_s)
            self._release(stage.links)
        assert started_at is not None  # every route has at least one stage
        self.recorder.record_transfer(src, dst, label, started_at, self.env.now, payload_bytes)
        return src, dst

    def _queue(self, port: int) -> list[OrderKey]:
        queue = self._queues.get(port)
        if queue is None:
            queue = self._queues[port] = sorted(self._expected.pop(port, []))
        return queue

    def _is_next(self, key: OrderKey, ports: tuple[int, ...]) -> bool:
        for port in ports:
            queue = self._queue(port)
            if port in self._running or self._head[port] >= len(queue) or queue[self._head[port]] != key:
                return False
        return True

    def _issue(self, key: OrderKey, ports: tuple[int, ...]) -> simpy.Event:
        if key not in self._announced:
            raise RuntimeError(f"message {key} was not announced to the network with expect()")
        started = self.env.event()
        self._issued[key] = (ports, started)
        self._start_if_next(key)
        return started

    def _start_if_next(self, key: OrderKey) -> None:
        ports, started = self._issued[key]
        if self._is_next(key, ports):
            del self._issued[key]
            self._running.update(ports)
            started.succeed()

    def _release(self, ports: tuple[int, ...]) -> None:
        """Free ``ports``; start the message next in line on each of them if it is ready."""
        self._running.difference_update(ports)
        for port in ports:
            self._head[port] += 1
        for port in ports:
            queue = self._queue(port)
            if self._head[port] < len(queue) and queue[self._head[port]] in self._issued:
                self._start_if_next(queue[self._head[port]])
