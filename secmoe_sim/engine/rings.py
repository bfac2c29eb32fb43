"""Ring collectives: all-reduce, all-gather and reduce-scatter over the GPUs in ring order.

With ``t`` GPUs and ``payload_bytes`` per GPU, every step moves one chunk of ``payload_bytes / t``
from each GPU to its right neighbour, and a GPU starts step ``s + 1`` when its own step-``s`` chunk
has arrived and its left neighbour's has reached it. Reduce-scatter and all-gather take ``t - 1``
steps; all-reduce is the two in sequence, ``2 (t - 1)`` steps. Each message is announced to the
network with the order key ``(ordinal, 0, step, src, dst, 0)``. Every GPU pays the collective's
start cost (its stack's launch) before the first step; every step's message carries its stack's
cost by chunk size and link class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from secmoe_sim.engine.network import Network
from secmoe_sim.plan.communication import CollectiveCost
from secmoe_sim.plan.steps import AllReduce, RingCollective
from secmoe_sim.plan.topology import Topology


class RingRun:
    """The run-time state of one ring collective."""

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
        ring = collective.gpus
        self.ordinal = ordinal
        self.start_s = cost.start_s
        self.steps = (2 if isinstance(collective, AllReduce) else 1) * (len(ring) - 1)
        self.chunk_bytes = collective.payload_bytes / len(ring)
        self._right = {gpu: ring[(index + 1) % len(ring)] for index, gpu in enumerate(ring)}
        sources = np.asarray(ring, dtype=np.int64)
        classes = topology.link_classes(sources, np.roll(sources, -1))
        sizes = np.full(len(ring), self.chunk_bytes)
        self._cost = dict(zip(ring, cost.messages(sizes, classes)))
        self._received = {(gpu, step): env.event() for gpu in ring for step in range(self.steps)}
        for gpu in ring:
            for step in range(self.steps):
                network.expect(gpu, self._right[gpu], self._order(gpu, step))

    def _order(self, gpu: int, step: int):
        return (self.ordinal, 0, step, gpu, self._right[gpu], 0)

    def _arrival_callback(self, gpu: int, step: int) -> Callable[[simpy.Event], None]:
        """Mark ``gpu``'s step-``step`` chunk as received when the transfer's event fires."""

        def arrived(_event: simpy.Event) -> None:
            self._received[(gpu, step)].succeed()

        return arrived

    def participate(self, gpu: int):
        if self.start_s > 0:
            yield self.env.timeout(self.start_s)
        cost = self._cost[gpu]
        for step in range(self.steps):
            right = self._right[gpu]
            sent = self.network.transfer(gpu, right, self.chunk_bytes, self.collective.name, self._order(gpu, step), cost)
            sent.callbacks.append(self._arrival_callback(right, step))
            yield simpy.AllOf(self.env, [sent, self._received[(gpu, step)]])
