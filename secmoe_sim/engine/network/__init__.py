"""Moving bytes between GPUs: the one interface the collectives use, and the choice of model.

Both network models implement :class:`Network`: ``expect`` announces a message before the run
(the port model needs the order of every port's messages in advance; the flow model ignores it)
and ``send_many`` moves the bytes of many messages, telling their sender, with the tags it gave
them, when they have arrived. Which model
runs is a scenario option (``network.model``): ``flows`` (max-min fair sharing of links,
:mod:`secmoe_sim.engine.network.flows`) or ``ports`` (capacity-1 ordered ports, :mod:`secmoe_sim.engine.network.ports`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Protocol

import numpy as np
import simpy

from secmoe_sim.engine.network.flow_table import RateObserver
from secmoe_sim.engine.network.flows import FlowNetwork
from secmoe_sim.engine.network.ports import ArrivalSink, PortNetwork
from secmoe_sim.engine.recorder import Recorder
from secmoe_sim.plan.communication import MessageCosts
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
        """Move ``payload_bytes[i]`` from GPU ``src[i]`` to GPU ``dst[i]`` at its stack's software cost ``costs``
        (arrays, one entry per message), ranked by ``orders[i]`` where the network is ``ordered`` (else
        ``orders`` may be ``None``); at each instant at which some arrive, ``sink`` is called with their ``tags``."""

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
