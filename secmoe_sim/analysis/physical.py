"""The overhead a sectional layer's exchanges must cost on given hardware, without simulating them.

For one plan (an entry, placement and E), each all-to-all (scatter, gather, and their backward) is
a set of messages. From the hardware description alone (:mod:`secmoe_sim.plan.topology`) it costs
at least:

* ``K``: the collective's start cost by its communication stack (an NCCL protocol's launch, a
  GPU-initiated kernel and its per-peer set-up; :mod:`secmoe_sim.plan.communication`);
* ``M``: the messages the busiest GPU posts, each paying the stack's serial per-message cost ``o``
  at its sender (host-staged ``message_overhead``, NCCL's all-to-all ``peer_overhead``; zero for a
  GPU-initiated kernel);
* ``T``: the time of the busiest link, wire bytes (payload over the stack's size-dependent
  efficiency) over capacity, with every message's bytes on every link of its route (a shared PCIe
  host bridge carries its whole socket's cross-switch traffic; groups that cross nodes put their
  inter-node bytes on the NICs);
* ``L``: the longest route's latency, raised to the stack's per-message latency floor.

Per layer, summed over the collectives: ``overhead = K + o M + T + L`` on the critical GPU (the
per-device view) and ``G`` times that in the total view. With the busiest GPU's kernels by the cost
model (its own sequences, idle GPUs included when ``E`` exceeds the sequences) this predicts the
layer's wall-clock, ``compute + K + o M + T + L``, and its GPU-seconds, ``G`` times that. On an NVSwitch node with groups of
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

from secmoe_sim.plan.communication import price_collective
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.kernel_time import RooflineTimer
from secmoe_sim.plan.steps import AllToAll, LayerPlan, flat_steps
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.communication import Communication


@dataclass(frozen=True)
class ExchangeCost:
    """The bounds of one plan's exchanges, per layer (every collective summed)."""

    messages: float  # posted by the busiest GPU
    traffic_s: float  # the busiest link's bytes / capacity, per collective, summed
    latency_s: float  # the longest route's latency (at least the stack's floor), per collective, summed
    message_overhead_s: float  # o: the stack's serial per-message software cost
    num_gpus: int
    compute_s: float = 0.0  # the busiest GPU's kernels and launches by the cost model (no exchange)
    start_s: float = 0.0  # K: the stack's start cost of every collective, summed

    @property
    def per_device_s(self) -> float:
        """``K + o M + T + L``: the overhead the critical GPU cannot avoid."""
        return self.start_s + self.message_overhead_s * self.messages + self.traffic_s + self.latency_s

    @property
    def layer_s(self) -> float:
        """The layer's wall-clock by this bound: the busiest GPU's compute, then its exchanges' overhead."""
        return self.compute_s + self.per_device_s


def exchange_cost(plan: LayerPlan, communication: Communication | None = None) -> ExchangeCost:
    """The bounds of every all-to-all of ``plan`` on its cluster's links, with the stacks of
    ``communication`` (default: the cluster's)."""
    stacks = communication if communication is not None else plan.cluster.stack_settings()
    topology = Topology(plan.cluster)
    capacity = topology.capacity_bytes_per_s
    collectives = {step.key: step for program in plan.programs for step in flat_steps(program) if isinstance(step, AllToAll)}
    posted: dict[int, float] = defaultdict(float)
    traffic_s = latency_s = start_s = post_s = 0.0
    for collective in collectives.values():
        messages = collective.messages
        if not len(messages):
            continue
        cost = price_collective(stacks, collective, topology)
        start_s += cost.start_s
        load = np.zeros(topology.num_links)
        longest_s = 0.0
        classes = topology.link_classes(messages.src, messages.dst)
        priced = cost.messages(messages.payload_bytes, classes)
        rows = zip(
            messages.src.tolist(), messages.dst.tolist(), messages.payload_bytes.tolist(), *(column.tolist() for column in priced)
        )
        for src, dst, size, message_post_s, floor_s, wire_factor in rows:
            posted[src] += 1
            post_s = max(post_s, message_post_s)
            stages = topology.route(src, dst)
            for stage in stages:
                load[list(stage.links)] += size * wire_factor
            longest_s = max(longest_s, sum(stage.latency_s for stage in stages), floor_s)
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
        message_overhead_s=post_s,
        num_gpus=plan.cluster.num_gpus,
        compute_s=compute_s,
        start_s=start_s,
    )
