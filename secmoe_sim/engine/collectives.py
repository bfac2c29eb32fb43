"""Collectives built from point-to-point transfers: all-to-all(-v) and ring all-reduce.

A collective is a shared object in the programs of all its GPUs. Each GPU runs
``participate(gpu)`` when its program reaches the collective; it returns when that GPU's own sends
have arrived and everything addressed to it has arrived. Peers that arrive later simply send later,
so a slow GPU delays exactly the GPUs waiting for its data.
"""

from __future__ import annotations

from collections import Counter

import simpy

from secmoe_sim.engine.network import Network
from secmoe_sim.opgraph import AllReduce, AllToAll


class AllToAllRun:
    """Direct all-to-all(-v): every GPU sends all its messages at once."""

    def __init__(self, env: simpy.Environment, network: Network, collective: AllToAll):
        self.env, self.network, self.collective = env, network, collective
        self._pending = Counter(m.dst for m in collective.messages)
        self._arrived = {gpu: env.event() for gpu in collective.gpus}
        for gpu in collective.gpus:
            if self._pending[gpu] == 0:
                self._arrived[gpu].succeed()

    def participate(self, gpu: int):
        sends = [
            self.env.process(self._send(m.src, m.dst, m.payload_bytes)) for m in self.collective.messages if m.src == gpu
        ]
        yield simpy.AllOf(self.env, sends + [self._arrived[gpu]])

    def _send(self, src: int, dst: int, payload_bytes: float):
        yield self.network.transfer(src, dst, payload_bytes, self.collective.name)
        self._pending[dst] -= 1
        if self._pending[dst] == 0:
            self._arrived[dst].succeed()


class RingAllReduceRun:
    """Ring all-reduce: ``2 (t-1)`` steps (reduce-scatter, then all-gather) of ``bytes / t`` each."""

    def __init__(self, env: simpy.Environment, network: Network, collective: AllReduce):
        self.env, self.network, self.collective = env, network, collective
        ranks = len(collective.gpus)
        self.steps = 2 * (ranks - 1)
        self.chunk_bytes = collective.payload_bytes / ranks
        self._received = {(gpu, step): env.event() for gpu in collective.gpus for step in range(self.steps)}

    def participate(self, gpu: int):
        ring = self.collective.gpus
        right = ring[(ring.index(gpu) + 1) % len(ring)]
        for step in range(self.steps):
            send = self.env.process(self._send(gpu, right, step))
            yield simpy.AllOf(self.env, [send, self._received[(gpu, step)]])

    def _send(self, src: int, dst: int, step: int):
        yield self.network.transfer(src, dst, self.chunk_bytes, self.collective.name)
        self._received[(dst, step)].succeed()


def start_collective(env: simpy.Environment, network: Network, collective: AllToAll | AllReduce):
    """The run-time state of one collective of the plan."""
    if isinstance(collective, AllToAll):
        return AllToAllRun(env, network, collective)
    return RingAllReduceRun(env, network, collective)
