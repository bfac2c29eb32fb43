"""Ring collectives: all-reduce, all-gather and reduce-scatter over the GPUs in ring order.

The buffer is split between the collective's channels (:func:`~secmoe_sim.plan.communication.ring_channels`:
one ring inside a node; across nodes one ring per GPU of a node, each entering and leaving every
node through a different GPU and so a different NIC, as NCCL builds them). With ``t`` GPUs,
``payload_bytes`` per GPU and ``c`` channels, every step moves one chunk of ``payload_bytes / (t c)``
from each GPU to its right neighbour on every channel. A GPU sends its step-``s + 1`` chunk of a
channel as soon as its left neighbour's step-``s`` chunk has reached it (the data it forwards or
reduces); sends do not wait for their own arrival (NCCL keeps several steps in flight per
connection), so the critical path is the chain of hops around the ring, each at its own link's
latency. A GPU's part ends when its last chunk has arrived and its own sends have landed.
Reduce-scatter and all-gather take ``t - 1`` steps; all-reduce is the two in sequence, ``2 (t - 1)``
steps. Each message is announced to the network with the order key ``(ordinal, channel, step, src,
dst, 0)``. Every GPU pays the collective's
start cost (its stack's launch) before the first step; every step's message carries its stack's
cost by chunk size and link class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from secmoe_sim.engine.network import Network
from secmoe_sim.plan.communication import CollectiveCost, MessageCost, ring_channels
from secmoe_sim.plan.steps import AllReduce, RingCollective
from secmoe_sim.plan.topology import Topology


class RingRun:
    """The run-time state of one ring collective, all of its channels."""

    def __init__(
        self,
        env: simpy.Environment,
        network: Network,
        collective: RingCollective,
        ordinal: int,
        topology: Topology,
        cost: CollectiveCost,
    ):
        self.env, self.network, self.collective = env, network, collective
        self.ordinal = ordinal
        self.start_s = cost.start_s
        rings = ring_channels(collective.gpus, topology)
        members = len(collective.gpus)
        self.steps = (2 if isinstance(collective, AllReduce) else 1) * (members - 1)
        self.chunk_bytes = collective.payload_bytes / (members * len(rings))
        self._right: list[dict[int, int]] = []
        self._cost: list[dict[int, MessageCost]] = []
        for ring in rings:
            self._right.append({gpu: ring[(index + 1) % len(ring)] for index, gpu in enumerate(ring)})
            sources = np.asarray(ring, dtype=np.int64)
            classes = topology.link_classes(sources, np.roll(sources, -1))
            self._cost.append(dict(zip(ring, cost.messages(np.full(len(ring), self.chunk_bytes), classes))))
        self._received = {
            (channel, gpu, step): env.event()
            for channel in range(len(rings))
            for gpu in collective.gpus
            for step in range(self.steps)
        }
        for channel, right in enumerate(self._right):
            for gpu in collective.gpus:
                for step in range(self.steps):
                    network.expect(gpu, right[gpu], self._order(channel, gpu, step))

    def _order(self, channel: int, gpu: int, step: int):
        return (self.ordinal, channel, step, gpu, self._right[channel][gpu], 0)

    def _arrival_callback(self, channel: int, gpu: int, step: int) -> Callable[[simpy.Event], None]:
        """Mark ``gpu``'s step-``step`` chunk of ``channel`` as received when the transfer's event fires."""

        def arrived(_event: simpy.Event) -> None:
            self._received[(channel, gpu, step)].succeed()

        return arrived

    def participate(self, gpu: int):
        if self.start_s > 0:
            yield self.env.timeout(self.start_s)
        if len(self._right) == 1:
            yield from self._channel(0, gpu)
        else:
            yield simpy.AllOf(self.env, [self.env.process(self._channel(channel, gpu)) for channel in range(len(self._right))])

    def _channel(self, channel: int, gpu: int):
        right, cost = self._right[channel][gpu], self._cost[channel][gpu]
        sends = []
        for step in range(self.steps):
            if step > 0:
                yield self._received[(channel, gpu, step - 1)]
            order = self._order(channel, gpu, step)
            sent = self.network.transfer(gpu, right, self.chunk_bytes, self.collective.name, order, cost)
            sent.callbacks.append(self._arrival_callback(channel, right, step))
            sends.append(sent)
        yield simpy.AllOf(self.env, [*sends, self._received[(channel, gpu, self.steps - 1)]])
