"""The run-time side of a plan's collectives: one shared object per collective, its messages announced.

A collective appears in the programs of all its GPUs. Each GPU runs ``participate(gpu)`` when its
program reaches the collective; it returns when that GPU's part is done. All-to-alls run with the
scenario's algorithm (:mod:`secmoe_sim.engine.all_to_all`); all-reduce, all-gather and
reduce-scatter run as rings (:mod:`secmoe_sim.engine.rings`). ``ordinal`` is the collective's
position in the GPUs' programs, the first element of its messages' order keys.

The communication stack prices each collective (:func:`secmoe_sim.plan.communication.price_collective`):
every participant pays the collective's start cost before it posts anything, and each message
carries its stack's per-message cost to the network.
"""

from __future__ import annotations

import simpy

from secmoe_sim.engine.all_to_all import AllToAllRun, start_all_to_all
from secmoe_sim.engine.network import Network
from secmoe_sim.engine.rings import RingRun
from secmoe_sim.plan.communication import price_collective
from secmoe_sim.plan.steps import AllToAll, Collective
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.communication import Communication


def start_collective(
    env: simpy.Environment,
    network: Network,
    collective: Collective,
    ordinal: int,
    topology: Topology,
    all_to_all: str,
    communication: Communication,
) -> AllToAllRun | RingRun:
    """The run-time state of one collective of the plan, priced by the stack ``communication`` names."""
    cost = price_collective(communication, collective, topology)
    if isinstance(collective, AllToAll):
        return start_all_to_all(env, network, collective, ordinal, topology, all_to_all, cost)
    return RingRun(env, network, collective, ordinal, topology, cost)
