"""Moving bytes between GPUs: the one function the layer code uses for every message.

This is the capacity-1 port model: every port on a message's route is a ``simpy.Resource`` of
capacity 1; a message acquires the ports of a hop (in a global order, so no two messages can
deadlock), holds them for ``latency + bytes / bandwidth`` (plus the per-message software overhead on
its first hop), and releases them.
"""

from __future__ import annotations

from functools import lru_cache

import simpy

from secmoe_sim.engine.recorder import Recorder, Row
from secmoe_sim.topology import Hop, route
from secmoe_sim.hardware import Cluster


class Network:
    """The ports of a cluster and the transfers that queue on them."""

    def __init__(self, env: simpy.Environment, cluster: Cluster, recorder: Recorder):
        self.env = env
        self.cluster = cluster
        self.recorder = recorder
        self._ports: dict[str, simpy.Resource] = {}
        self._route = lru_cache(maxsize=None)(lambda src, dst: route(cluster, src, dst))

    def _port(self, name: str) -> simpy.Resource:
        port = self._ports.get(name)
        if port is None:
            port = self._ports[name] = simpy.Resource(self.env, capacity=1)
        return port

    def transfer(self, src: int, dst: int, payload_bytes: float, label: str) -> simpy.Process:
        """Start moving ``payload_bytes`` from GPU ``src`` to GPU ``dst``; the process ends on arrival."""
        return self.env.process(self._transfer(src, dst, payload_bytes, label))

    def _transfer(self, src: int, dst: int, payload_bytes: float, label: str):
        started_at = None
        for index, hop in enumerate(self._route(src, dst)):
            requests = yield from self._acquire(hop)
            if started_at is None:
                started_at = self.env.now
            overhead_s = self.cluster.message_overhead if index == 0 else 0.0
            yield self.env.timeout(overhead_s + hop.latency_s + payload_bytes / hop.bandwidth_bytes_per_s)
            for name, request in requests:
                self._ports[name].release(request)
        self.recorder.record(
            Row(gpu=src, stream="comm", kind="transfer", label=label, started_at=started_at,
                finished_at=self.env.now, bytes=payload_bytes, src=src, dst=dst)
        )

    def _acquire(self, hop: Hop):
        requests = []
        for name in sorted(hop.ports):
            request = self._port(name).request()
            yield request
            requests.append((name, request))
        return requests
