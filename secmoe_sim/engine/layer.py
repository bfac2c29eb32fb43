"""One layer on the simulated cluster: a process per GPU walking its program of the op graph.

Each GPU has a compute stream (kernels: launch overhead, then the roofline time of the kernel) and
a communication stream (collectives). A GPU's program is sequential: the compute stream waits
while the GPU takes part in a collective. The layer ends when the last GPU finishes (a barrier).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import simpy

from secmoe_sim.engine.collectives import start_collective
from secmoe_sim.engine.network import build_network
from secmoe_sim.engine.network.flow_table import RateObserver
from secmoe_sim.engine.recorder import Recorder, Row
from secmoe_sim.plan.costs import Kernel, KernelTimer, RooflineTimer
from secmoe_sim.plan.steps import LayerPlan, Pipeline
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.communication import Communication
from secmoe_sim.spec.faults import compute_slowdown, link_capacity_factors
from secmoe_sim.spec.network import NetworkOptions


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
    communication: Communication | None = None,
) -> SimulationRun:
    """Simulate ``plan`` in a fresh environment.

    Op times come from ``timer`` (default: the roofline); ``network`` chooses the network model and
    the all-to-all algorithm (default: max-min fair flows, exact, direct); ``observer`` is called
    at every rate change of the flow network (the invariant tests use it); ``faults`` slow GPUs
    down and degrade links (:mod:`secmoe_sim.spec.faults`); ``communication`` names the stack of each
    collective kind (default: the cluster's, :meth:`~secmoe_sim.spec.hardware.Cluster.stack_settings`).
    """
    timer = timer or RooflineTimer(plan.cluster.gpu, plan.dtype)
    options = network or NetworkOptions()
    stacks = communication if communication is not None else plan.cluster.stack_settings()
    env = simpy.Environment()
    recorder = Recorder()
    topology = Topology(plan.cluster, link_capacity_factors(faults, plan.cluster))
    links = build_network(env, plan.cluster, recorder, options, observer, topology)
    slowdown = compute_slowdown(faults, plan.cluster)
    collectives = {}
    for program in plan.programs:
        ordinal = 0
        for step in program:
            for collective in step.collectives() if isinstance(step, Pipeline) else [step]:
                if isinstance(collective, Kernel):
                    continue
                if collective.key not in collectives:
                    collectives[collective.key] = start_collective(
                        env, links, collective, ordinal, topology, options.all_to_all, stacks
                    )
                ordinal += 1
    finished_at = [0.0] * len(plan.programs)

    def run_kernel(gpu: int, kernel: Kernel):
        started_at = env.now
        launch_s = timer.launch_time_s(kernel) * slowdown[gpu]
        yield env.timeout(launch_s + timer.kernel_time_s(kernel) * slowdown[gpu])
        recorder.record(
            Row(
                gpu=gpu,
                stream="compute",
                kind="kernel",
                label=kernel.name,
                started_at=started_at,
                finished_at=env.now,
                launch_s=launch_s,
                flops=kernel.flops,
                bytes=kernel.traffic_bytes,
                group=kernel.group,
            )
        )

    def run_collective(gpu: int, collective):
        started_at = env.now
        yield from collectives[collective.key].participate(gpu)
        recorder.record(
            Row(gpu=gpu, stream="comm", kind="collective", label=collective.name, started_at=started_at, finished_at=env.now)
        )

    def run_pipeline(gpu: int, pipeline: Pipeline):
        """Communication and compute streams as two processes, chunk by chunk (:class:`~secmoe_sim.plan.steps.Pipeline`)."""
        dispatched = [env.event() for _ in pipeline.chunks]
        computed = [env.event() for _ in pipeline.chunks]

        def communication():
            for index, phase in pipeline.communication_order():
                if phase == "combine":
                    yield computed[index]
                collective = getattr(pipeline.chunks[index], phase)
                if collective is not None:
                    yield from run_collective(gpu, collective)
                if phase == "dispatch":
                    dispatched[index].succeed()

        def compute():
            for index, chunk in enumerate(pipeline.chunks):
                yield dispatched[index]
                for kernel in chunk.kernels:
                    yield from run_kernel(gpu, kernel)
                computed[index].succeed()

        yield simpy.AllOf(env, [env.process(communication()), env.process(compute())])

    def gpu_process(gpu: int):
        for step in plan.programs[gpu]:
            if isinstance(step, Kernel):
                yield from run_kernel(gpu, step)
            elif isinstance(step, Pipeline):
                yield from run_pipeline(gpu, step)
            else:
                yield from run_collective(gpu, step)
        finished_at[gpu] = env.now

    for gpu in range(len(plan.programs)):
        env.process(gpu_process(gpu))
    num_events = 0
    while env.peek() != float("inf"):
        env.step()
        num_events += 1
    return SimulationRun(
        plan=plan,
        timeline=recorder.frame(),
        finished_at=tuple(finished_at),
        num_events=num_events,
        network_statistics=links.statistics(),
    )
