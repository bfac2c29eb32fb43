"""Moving bytes between GPUs: the one interface the collectives use, and the choice of model.

Both network models implement :class:`Network`: ``expect`` announces a message before the run
(the port model needs the order of every port's messages in advance; the flow model ignores it)
and ``transfer`` moves the bytes, returning an event that fires when they have arrived (its
value is the pair ``(src, dst)``); ``send`` does the same with a callback instead of an event. Which model
runs is a scenario option (``network.model``): ``flows`` (max-min fair sharing of links,
:mod:`secmoe_sim.engine.network.flows`) or ``ports`` (capacity-1 ordered ports, :mod:`secmoe_sim.engine.network.ports`).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

import simpy

from secmoe_sim.engine.network.flow_table import RateObserver
from secmoe_sim.engine.network.flows import FlowNetwork
from secmoe_sim.engine.network.ports import ArrivalCallback, PortNetwork
from secmoe_sim.engine.recorder import Recorder
from secmoe_sim.plan.communication import FREE, MessageCost
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.network import NetworkOptions

OrderKey = tuple[Hashable, ...]


class Network(Protocol):
    """What a collective needs from the network."""

    ordered: bool
    """Whether messages must be announced with ``expect`` and carry order keys (the port model).
    Where false, collectives may skip building keys for a million messages and pass ``()``."""

    def expect(self, src: int, dst: int, order: OrderKey) -> None:
        """Announce, before the run, a message from ``src`` to ``dst`` ranked by ``order``."""

    def transfer(
        self, src: int, dst: int, payload_bytes: float, label: str, order: OrderKey, cost: MessageCost = FREE
    ) -> simpy.Event:
        """Move ``payload_bytes`` from GPU ``src`` to GPU ``dst`` at its stack's software ``cost`` (default: none);
        the event fires on arrival, its value ``(src, dst)``."""

    def send(
        self,
        src: int,
        dst: int,
        payload_bytes: float,
        label: str,
        order: OrderKey,
        cost: MessageCost,
        on_arrival: ArrivalCallback,
    ) -> None:
        """``transfer`` without an event, for collectives that post millions of messages: ``on_arrival((src, dst))``
        is called at the instant the message arrives."""

    def statistics(self) -> dict[str, float]:
        """Counters of the model's own work (the benchmark reports them)."""


def build_network(
    env: simpy.Environment,
    cluster: Cluster,
    recorder: Recorder,
    options: NetworkOptions,
    observer: RateObserver | None = None,
    topology: Topology | None = None,
) -> Network:
    """The network model ``options`` asks for, over ``topology`` (default: the cluster's, unchanged);
    ``observer`` sees every rate change of the flow model."""
    if options.model == "ports":
        return PortNetwork(env, cluster, recorder, topology)
    tolerance = options.tolerance if options.mode == "batched" else 0.0
    return FlowNetwork(env, cluster, recorder, tolerance, observer, topology)
