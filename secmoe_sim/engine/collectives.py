"""Collectives built from point-to-point transfers: all-to-all(-v) and ring all-reduce.

A collective is a shared object in the programs of all its GPUs. Each GPU runs
``participate(gpu)`` when its program reaches the collective; it returns when that GPU's own sends
have arrived and everything addressed to it has arrived. Peers that arrive later simply send later,
so a slow GPU delays exactly the GPUs waiting for its data.

Every message is announced to the network before the run with an order key
``(collective ordinal, round, src, dst, chunk)``: the ``ordinal`` is the collective's position in
the GPUs' programs, the ``round`` is the shift ``(dst - src) mod n`` inside an all-to-all among
``n`` GPUs, or the step of a ring all-reduce.
"""

from __future__ import annotations

from collections import Counter

import simpy

from secmoe_sim.engine.network import Network
from secmoe_sim.opgraph import AllReduce, AllToAll


class AllToAllRun:
    """Direct all-to-all(-v): every GPU issues all its messages at once."""

    def __init__(self, env: simpy.Environment, network: Network, collective: AllToAll, ordinal: int):
        self.env, self.network, self.collective = env, network, collective
        position = {gpu: index for index, gpu in enumerate(collective.gpus)}
        size = len(collective.gpus)
        chunks: Counter = Counter()
        self._orders = []
        for message in collective.messages:
            pair = (message.src, message.dst)
            shift = (position[message.dst] - position[message.src]) % size
            order = (ordinal, shift, message.src, message.dst, chunks[pair])
            chunks[pair] += 1
            network.expect(message.src, message.dst, order)
            self._orders.append(order)
        self._pending = Counter(m.dst for m in collective.messages)
        self._arrived = {gpu: env.event() for gpu in collective.gpus}
        for gpu in collective.gpus:
            if self._pending[gpu] == 0:
                self._arrived[gpu].succeed()

    def participate(self, gpu: int):
        sends = [
            self.env.process(self._send(m.src, m.dst, m.payload_bytes, order))
            for m, order in zip(self.collective.messages, self._orders)
            if m.src == gpu
        ]
        yield simpy.AllOf(self.env, sends + [self._arrived[gpu]])

    def _send(self, src: int, dst: int, payload_bytes: float, order):
        yield self.network.transfer(src, dst, payload_bytes, self.collective.name, order)
        self._pending[dst] -= 1
        if self._pending[dst] == 0:
            self._arrived[dst].succeed()


class RingAllReduceRun:
    """Ring all-reduce: ``2 (t-1)`` steps (reduce-scatter, then all-gather) of ``bytes / t`` each."""

    def __init__(self, env: simpy.Environment, network: Network, collective: AllReduce, ordinal: int):
        self.env, self.network, self.collective = env, network, collective
        ring = collective.gpus
        self.ordinal = ordinal
        self.steps = 2 * (len(ring) - 1)
        self.chunk_bytes = collective.payload_bytes / len(ring)
        self._right = {gpu: ring[(index + 1) % len(ring)] for index, gpu in enumerate(ring)}
        self._received = {(gpu, step): env.event() for gpu in ring for step in range(self.steps)}
        for gpu in ring:
            for step in range(self.steps):
                network.expect(gpu, self._right[gpu], self._order(gpu, step))

    def _order(self, gpu: int, step: int):
        return (self.ordinal, step, gpu, self._right[gpu], 0)

    def participate(self, gpu: int):
        for step in range(self.steps):
            send = self.env.process(self._send(gpu, step))
            yield simpy.AllOf(self.env, [send, self._received[(gpu, step)]])

    def _send(self, src: int, step: int):
        dst = self._right[src]
        yield self.network.transfer(src, dst, self.chunk_bytes, self.collective.name, self._order(src, step))
        self._received[(dst, step)].succeed()


def start_collective(env: simpy.Environment, network: Network, collective: AllToAll | AllReduce, ordinal: int):
    """The run-time state of one collective of the plan, its messages announced to the network."""
    if isinstance(collective, AllToAll):
        return AllToAllRun(env, network, collective, ordinal)
    return RingAllReduceRun(env, network, collective, ordinal)
