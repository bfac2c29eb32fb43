"""One layer on the simulated cluster: a process per GPU walking its program of the op graph.

Each GPU has a compute stream (kernels: launch overhead, then the roofline time of the kernel) and
a communication stream (collectives). A GPU's program is sequential: the compute stream waits
while the GPU takes part in a collective. The layer ends when the last GPU finishes (a barrier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd
import simpy

from secmoe_sim.costs import Kernel, KernelTimer, RooflineTimer
from secmoe_sim.engine.collectives import start_collective
from secmoe_sim.engine.flow_table import RateObserver
from secmoe_sim.engine.network import build_network
from secmoe_sim.engine.recorder import Recorder, Row
from secmoe_sim.faults import compute_slowdown, link_capacity_factors
from secmoe_sim.opgraph import LayerPlan
from secmoe_sim.scenario import NetworkOptions
from secmoe_sim.topology import Topology


@dataclass(frozen=True)
class SimulationRun:
    """What one simulated layer produced: every row, each GPU's finish instant, the event count,
    and the network model's own counters (flows, rate recomputations and their host time)."""

    plan: LayerPlan
    timeline: pd.DataFrame
    finished_at: tuple[float, ...]
    num_events: int
    network_statistics: dict[str, float] = field(default_factory=dict)


def run_plan(
    plan: LayerPlan,
    timer: KernelTimer | None = None,
    network: NetworkOptions | None = None,
    observer: RateObserver | None = None,
    faults: Sequence = (),
) -> SimulationRun:
    """Simulate ``plan`` in a fresh environment.

    Op times come from ``timer`` (default: the roofline); ``network`` chooses the network model and
    the all-to-all algorithm (default: max-min fair flows, exact, direct); ``observer`` is called
    at every rate change of the flow network (the invariant tests use it); ``faults`` slow GPUs
    down and degrade links (:mod:`secmoe_sim.faults`).
    """
    timer = timer or RooflineTimer(plan.cluster.gpu, plan.dtype)
    options = network or NetworkOptions()
    env = simpy.Environment()
    recorder = Recorder()
    topology = Topology(plan.cluster, link_capacity_factors(faults, plan.cluster))
    links = build_network(env, plan.cluster, recorder, options, observer, topology)
    slowdown = compute_slowdown(faults, plan.cluster)
    collectives = {}
    for program in plan.programs:
        ordinal = 0
        for step in program:
            if isinstance(step, Kernel):
                continue
            if step.key not in collectives:
                collectives[step.key] = start_collective(env, links, step, ordinal, plan.cluster, options.all_to_all)
            ordinal += 1
    finished_at = [0.0] * len(plan.programs)

    def gpu_process(gpu: int):
        for step in plan.programs[gpu]:
            started_at = env.now
            if isinstance(step, Kernel):
                launch_s = timer.launch_time_s(step) * slowdown[gpu]
                yield env.timeout(launch_s + timer.kernel_time_s(step) * slowdown[gpu])
                recorder.record(
                    Row(gpu=gpu, stream="compute", kind="kernel", label=step.name, started_at=started_at,
                        finished_at=env.now, launch_s=launch_s, flops=step.flops, bytes=step.traffic_bytes, group=step.group)
                )
            else:
                yield from collectives[step.key].participate(gpu)
                recorder.record(
                    Row(gpu=gpu, stream="comm", kind="collective", label=step.name, started_at=started_at, finished_at=env.now)
                )
        finished_at[gpu] = env.now

    for gpu in range(len(plan.programs)):
        env.process(gpu_process(gpu))
    num_events = 0
    while env.peek() != float("inf"):
        env.step()
        num_events += 1
    return SimulationRun(
        plan=plan, timeline=recorder.frame(), finished_at=tuple(finished_at), num_events=num_events,
        network_statistics=links.statistics(),
    )
