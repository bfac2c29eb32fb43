"""The run-time side of a plan's collectives: one shared object per collective, its messages announced.

A collective appears in the programs of all its GPUs. Each GPU runs ``participate(gpu)`` when its
program reaches the collective; it returns when that GPU's part is done. All-to-alls run with the
scenario's algorithm (:mod:`secmoe_sim.engine.all_to_all`); all-reduce, all-gather and
reduce-scatter run as rings (:mod:`secmoe_sim.engine.rings`). ``ordinal`` is the collective's
position in the GPUs' programs, the first element of its messages' order keys.
"""

from __future__ import annotations

import simpy

from secmoe_sim.engine.all_to_all import AllToAllRun, start_all_to_all
from secmoe_sim.engine.network import Network
from secmoe_sim.engine.rings import RingRun
from secmoe_sim.plan.steps import AllToAll, Collective
from secmoe_sim.spec.hardware import Cluster


def start_collective(
    env: simpy.Environment, network: Network, collective: Collective, ordinal: int, cluster: Cluster, all_to_all: str
) -> AllToAllRun | RingRun:
    """The run-time state of one collective of the plan."""
    if isinstance(collective, AllToAll):
        return start_all_to_all(env, network, collective, ordinal, cluster, all_to_all)
    return RingRun(env, network, collective, ordinal)
