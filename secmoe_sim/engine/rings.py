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

import numpy as np
import simpy

from secmoe_sim.engine.network import Network
from secmoe_sim.engine.ordering import distinct_in_first_order, tallied_by_last_occurrence
from secmoe_sim.plan.communication import CollectiveCost, collective_kind, ring_channels, ring_steps
from secmoe_sim.plan.steps import RingCollective
from secmoe_sim.plan.topology import Topology


class RingRun:
    """The run-time state of one ring collective, all of its channels.

    The steps are driven by arrivals, in arrays: the messages that arrive at one instant mark their
    chunks received, and every GPU that can now send its next chunk of a channel sends it, all in
    one call to the network. Message ``(channel, position, step)`` (the sender's position in the
    collective) carries the tag ``(channel * members + position) * steps + step``.
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
        self.members, self.channels = members, len(rings)
        self.steps = ring_steps(collective_kind(collective), members)
        self.chunk_bytes = collective.payload_bytes / (members * len(rings))
        self._gpus = np.asarray(collective.gpus, dtype=np.int64)
        self._position = {gpu: index for index, gpu in enumerate(collective.gpus)}
        right_position = np.empty((self.channels, members), dtype=np.int64)  # by channel and position
        classes = []
        for channel, ring in enumerate(rings):
            positions = np.array([self._position[gpu] for gpu in ring], dtype=np.int64)
            right_position[channel, positions] = np.roll(positions, -1)
            classes.append(topology.link_classes(self._gpus, self._gpus[right_position[channel]]))
        self._right_position = right_position
        # by channel * members + position
        self._costs = cost.messages(np.full(self.channels * members, self.chunk_bytes), np.concatenate(classes))
        self._received = np.zeros(self.channels * members * self.steps, dtype=bool)  # indexed by the receiver's tag
        self._next_step = np.zeros(self.channels * members, dtype=np.int64)  # by channel * members + position
        self._started = np.zeros(members, dtype=bool)
        # a GPU is done when its own sends have landed and its last chunk of every channel has arrived
        self._pending = np.full(members, self.channels * (self.steps + 1) if self.steps else 0, dtype=np.int64)
        self._done = [env.event() for _ in range(members)]
        if network.ordered:
            for channel in range(self.channels):
                for position, gpu in enumerate(collective.gpus):
                    for step in range(self.steps):
                        network.expect(gpu, self._right_gpu(channel, position), self._order(channel, position, step))

    def _right_gpu(self, channel: int, position: int) -> int:
        return int(self._gpus[self._right_position[channel, position]])

    def _order(self, channel: int, position: int, step: int) -> tuple:
        gpu = self.collective.gpus[position]
        return (self.ordinal, channel, step, gpu, self._right_gpu(channel, position), 0)

    def participate(self, gpu: int):
        if self.start_s > 0:
            yield self.env.timeout(self.start_s)
        position = self._position[gpu]
        self._started[position] = True
        self._post(np.arange(self.channels, dtype=np.int64) * self.members + position)
        if self._pending[position] == 0:  # a ring of one GPU: nothing to send or wait for
            return
        yield self._done[position]

    def _post(self, lanes: np.ndarray) -> None:
        """For each lane (``channel * members + position``, distinct), send every step its GPU can: the next,
        once the chunk before it has arrived, in rounds until none can."""
        steps = self.steps
        while lanes.size:
            step = self._next_step[lanes]
            ready = (step < steps) & ((step == 0) | self._received[lanes * steps + np.maximum(step - 1, 0)])
            lanes, step = lanes[ready], step[ready]
            if lanes.size == 0:
                return
            channel, position = np.divmod(lanes, self.members)
            sources = self._gpus[position]
            targets = self._gpus[self._right_position[channel, position]]
            orders = None
            if self.network.ordered:
                orders = [self._order(c, p, k) for c, p, k in zip(channel.tolist(), position.tolist(), step.tolist())]
            payload = np.full(lanes.shape[0], self.chunk_bytes)
            tags = lanes * steps + step
            self.network.send_many(
                sources, targets, payload, self.collective.name, orders, self._costs.take(lanes), self._arrived, tags
            )
            self._next_step[lanes] = step + 1

    def _arrived(self, tags: np.ndarray) -> None:
        """Chunks ``tags`` have reached their receivers: mark them, count the senders' sends and the receivers'
        last chunks done, and let the receivers that have started send on."""
        lanes, step = np.divmod(tags, self.steps)
        channel, sender = np.divmod(lanes, self.members)
        receiver = self._right_position[channel, sender]
        receiver_lanes = channel * self.members + receiver
        self._received[receiver_lanes * self.steps + step] = True
        last = step == self.steps - 1
        settled = np.column_stack([sender, np.where(last, receiver, -1)]).ravel()  # in message order: sender, receiver
        positions, counts = tallied_by_last_occurrence(settled[settled >= 0])
        self._pending[positions] -= counts
        for position in positions[self._pending[positions] == 0].tolist():
            self._done[position].succeed()
        started = self._started[receiver]
        if started.any():
            self._post(distinct_in_first_order(receiver_lanes[started]))
