"""The overhead a sectional layer's exchanges must cost on given hardware, without simulating them.

For one plan (an entry, placement and E), each all-to-all (scatter, gather, and their backward) is
a set of messages. From the hardware description alone (:mod:`secmoe_sim.plan.topology`) it costs
at least:

* ``M``: the messages the busiest GPU posts, each paying ``message_overhead`` at its sender;
* ``T``: the time of the busiest link, bytes over capacity, with every message's bytes on every
  link of its route (a shared PCIe host bridge carries its whole socket's cross-switch traffic;
  groups that cross nodes put their inter-node bytes on the NICs);
* ``L``: the longest route's latency.

Per layer, summed over the collectives: ``overhead = o M + T + L`` on the critical GPU (the
per-device view) and ``G`` times that in the total view. With the busiest GPU's kernels by the cost
model (its own sequences, idle GPUs included when ``E`` exceeds the sequences) this predicts the
layer's wall-clock, ``compute + o M + T + L``, and its GPU-seconds, ``G`` times that. On an NVSwitch node with groups of
``m = min(E, g)`` GPUs this is ``n_c [(m - 1) o + (m - 1)/m V / B + L]`` for ``n_c`` collectives of
``V`` section bytes a GPU owns on ports of ``B`` per direction (docs/model.md, section 6), and zero
for ``replicated`` placement. It is a bound the simulated flows can only meet or exceed (they also
wait for each other's posting and share links max-min fairly), and the ``physical`` overhead form
fits its ``M`` and ``T`` to the simulated overhead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from secmoe_sim.plan.costs import Kernel, RooflineTimer
from secmoe_sim.plan.steps import AllToAll, LayerPlan, flat_steps
from secmoe_sim.plan.topology import Topology


@dataclass(frozen=True)
class ExchangeCost:
    """The bounds of one plan's exchanges, per layer (every collective summed)."""

    messages: float  # posted by the busiest GPU
    traffic_s: float  # the busiest link's bytes / capacity, per collective, summed
    latency_s: float  # the longest route's latency, per collective, summed
    message_overhead_s: float  # o: the hardware's per-message software cost
    num_gpus: int
    compute_s: float = 0.0  # the busiest GPU's kernels and launches by the cost model (no exchange)

    @property
    def per_device_s(self) -> float:
        """``o M + T + L``: the overhead the critical GPU cannot avoid."""
        return self.message_overhead_s * self.messages + self.traffic_s + self.latency_s

    @property
    def layer_s(self) -> float:
        """The layer's wall-clock by this bound: the busiest GPU's compute, then its exchanges' overhead."""
        return self.compute_s + self.per_device_s


def exchange_cost(plan: LayerPlan) -> ExchangeCost:
    """The bounds of every all-to-all of ``plan`` on its cluster's links."""
    topology = Topology(plan.cluster)
    capacity = topology.capacity_bytes_per_s
    collectives = {step.key: step for program in plan.programs for step in flat_steps(program) if isinstance(step, AllToAll)}
    posted: dict[int, float] = defaultdict(float)
    traffic_s = latency_s = 0.0
    for collective in collectives.values():
        messages = collective.messages
        if not len(messages):
            continue
        load = np.zeros(topology.num_links)
        longest_s = 0.0
        for src, dst, size in zip(messages.src.tolist(), messages.dst.tolist(), messages.payload_bytes.tolist()):
            posted[src] += 1
            stages = topology.route(src, dst)
            for stage in stages:
                load[list(stage.links)] += size
            longest_s = max(longest_s, sum(stage.latency_s for stage in stages))
        traffic_s += float(np.max(load / capacity))
        latency_s += longest_s
    timer = RooflineTimer(plan.cluster.gpu, plan.dtype)
    compute_s = max(
        sum(timer.kernel_time_s(k) + timer.launch_time_s(k) for k in flat_steps(program) if isinstance(k, Kernel))
        for program in plan.programs
    )
    return ExchangeCost(
        messages=max(posted.values(), default=0.0),
        traffic_s=traffic_s,
        latency_s=latency_s,
        message_overhead_s=plan.cluster.message_overhead,
        num_gpus=plan.cluster.num_gpus,
        compute_s=compute_s,
    )
