"""Moving bytes between GPUs: the one function the layer code uses for every message.

This is the capacity-1 port model. Every port on a message's route (a GPU's egress or ingress, a
shared host bridge, a NIC) carries one message at a time. A message waits until *all* ports of its
hop are free and then takes them together (no port is held while waiting for another, so there is
neither deadlock nor head-of-line blocking); it holds them for ``latency + bytes / bandwidth``, plus
the per-message software overhead on its first hop. Among waiting messages whose ports have all
become free, the one that asked first goes first.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

import simpy

from secmoe_sim.engine.recorder import Recorder, Row
from secmoe_sim.hardware import Cluster
from secmoe_sim.topology import route


@dataclass
class _Waiter:
    order: int
    ports: tuple[str, ...]
    granted_event: simpy.Event
    granted: bool = field(default=False)


class Network:
    """The ports of a cluster and the transfers that queue on them."""

    def __init__(self, env: simpy.Environment, cluster: Cluster, recorder: Recorder):
        self.env = env
        self.cluster = cluster
        self.recorder = recorder
        self._busy: set[str] = set()
        self._waiting: dict[str, list[_Waiter]] = defaultdict(list)
        self._arrival = itertools.count()
        self._route = lru_cache(maxsize=None)(lambda src, dst: route(cluster, src, dst))

    def transfer(self, src: int, dst: int, payload_bytes: float, label: str) -> simpy.Process:
        """Start moving ``payload_bytes`` from GPU ``src`` to GPU ``dst``; the process ends on arrival."""
        return self.env.process(self._transfer(src, dst, payload_bytes, label))

    def _transfer(self, src: int, dst: int, payload_bytes: float, label: str):
        started_at = None
        for index, hop in enumerate(self._route(src, dst)):
            yield self._acquire(hop.ports)
            if started_at is None:
                started_at = self.env.now
            overhead_s = self.cluster.message_overhead if index == 0 else 0.0
            yield self.env.timeout(overhead_s + hop.latency_s + payload_bytes / hop.bandwidth_bytes_per_s)
            self._release(hop.ports)
        self.recorder.record(
            Row(gpu=src, stream="comm", kind="transfer", label=label, started_at=started_at,
                finished_at=self.env.now, bytes=payload_bytes, src=src, dst=dst)
        )

    def _acquire(self, ports: tuple[str, ...]) -> simpy.Event:
        waiter = _Waiter(next(self._arrival), ports, self.env.event())
        if self._busy.isdisjoint(ports):
            self._grant(waiter)
        else:
            for port in ports:
                self._waiting[port].append(waiter)
        return waiter.granted_event

    def _grant(self, waiter: _Waiter) -> None:
        waiter.granted = True
        self._busy.update(waiter.ports)
        waiter.granted_event.succeed()

    def _release(self, ports: tuple[str, ...]) -> None:
        """Free ``ports`` and start the waiting messages that can now run, oldest first.

        Only messages waiting on a freed port can have become runnable, so only those are checked.
        """
        self._busy.difference_update(ports)
        candidates: dict[int, _Waiter] = {}
        for port in ports:
            queue = self._waiting.get(port)
            if queue:
                queue[:] = [w for w in queue if not w.granted]
                candidates.update((w.order, w) for w in queue)
        for order in sorted(candidates):
            waiter = candidates[order]
            if self._busy.isdisjoint(waiter.ports):
                self._grant(waiter)
