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

from functools import partial

import numpy as np
import simpy

from secmoe_sim.engine.network import Network
from secmoe_sim.plan.communication import CollectiveCost, MessageCost, ring_channels
from secmoe_sim.plan.steps import AllReduce, RingCollective
from secmoe_sim.plan.topology import Topology


class RingRun:
    """The run-time state of one ring collective, all of its channels.

    The steps are driven by arrivals, not by a process per GPU and channel: each message's arrival
    callback marks its chunk received and posts whatever the receiver can now send, so a million
    ring messages cost a million callbacks rather than a million process resumptions and events.
    """

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
        self._position = {gpu: index for index, gpu in enumerate(collective.gpus)}
        self._right: list[list[int]] = []  # by channel, by position: the right neighbour
        self._cost: list[list[MessageCost]] = []
        for ring in rings:
            right = dict(zip(ring, ring[1:] + ring[:1]))
            sources = np.asarray(ring, dtype=np.int64)
            classes = topology.link_classes(sources, np.roll(sources, -1))
            costs = dict(zip(ring, cost.messages(np.full(len(ring), self.chunk_bytes), classes)))
            self._right.append([right[gpu] for gpu in collective.gpus])
            self._cost.append([costs[gpu] for gpu in collective.gpus])
        channels = len(rings)
        # received[(channel * members + position) * steps + step]: that chunk has reached the GPU
        self._received = bytearray(channels * members * self.steps)
        self._next_step = [[0] * members for _ in range(channels)]  # the next step each GPU sends, by channel
        self._started = [False] * members
        # a GPU is done when its own sends have landed and its last chunk of every channel has arrived
        self._pending = [channels * (self.steps + 1) if self.steps else 0] * members
        self._done = [env.event() for _ in range(members)]
        self._arrival = [[partial(self._arrived, channel, step) for step in range(self.steps)] for channel in range(channels)]
        if network.ordered:
            for channel in range(channels):
                for gpu in collective.gpus:
                    for step in range(self.steps):
                        network.expect(gpu, self._right[channel][self._position[gpu]], self._order(channel, gpu, step))

    def _order(self, channel: int, gpu: int, step: int) -> tuple:
        if not self.network.ordered:
            return ()
        return (self.ordinal, channel, step, gpu, self._right[channel][self._position[gpu]], 0)

    def participate(self, gpu: int):
        if self.start_s > 0:
            yield self.env.timeout(self.start_s)
        position = self._position[gpu]
        self._started[position] = True
        for channel in range(len(self._right)):
            self._post(channel, position)
        if self._pending[position] == 0:  # a ring of one GPU: nothing to send or wait for
            return
        yield self._done[position]

    def _post(self, channel: int, position: int) -> None:
        """Send every step of ``channel`` the GPU at ``position`` can: the next, once the chunk before it has arrived."""
        steps, next_steps = self.steps, self._next_step[channel]
        step = next_steps[position]
        base = (channel * len(self._started) + position) * steps
        gpu = self.collective.gpus[position]
        right, cost = self._right[channel][position], self._cost[channel][position]
        while step < steps and (step == 0 or self._received[base + step - 1]):
            order = self._order(channel, gpu, step)
            self.network.send(gpu, right, self.chunk_bytes, self.collective.name, order, cost, self._arrival[channel][step])
            step += 1
        next_steps[position] = step

    def _arrived(self, channel: int, step: int, endpoints: tuple[int, int]) -> None:
        """The step-``step`` chunk of ``channel`` from ``src`` has reached ``dst``: both may move on."""
        src, dst = endpoints
        receiver = self._position[dst]
        self._received[(channel * len(self._started) + receiver) * self.steps + step] = 1
        self._settle(self._position[src])
        if step == self.steps - 1:
            self._settle(receiver)
        if self._started[receiver]:
            self._post(channel, receiver)

    def _settle(self, position: int) -> None:
        self._pending[position] -= 1
        if self._pending[position] == 0:
            self._done[position].succeed()
