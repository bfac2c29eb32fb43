"""One layer on the simulated cluster: a process per GPU walking its program of the op graph.

Each GPU has a host that issues its ops, a compute stream (kernels, at the roofline time or a
replayed one) and a communication stream (collectives). A GPU's program is sequential: the compute
stream waits while the GPU takes part in a collective.

The host walks the same program ahead of the GPU: it spends an op's issue time (the timer's
``launch_time_s``: framework dispatch and driver launch per launch; one launch for a collective)
and hands it over; it runs at most ``launch_queue_depth`` ops ahead of the GPU, waiting for the op
that many places back to finish. The GPU starts an op when it is free and the op has been issued.
When kernels are long the host runs ahead and its time is hidden; when they are short the GPU
waits for it, and that wait is the row's ``launch_s`` (``host_wait`` rows before collectives), the
exposed host time. Host rows (``stream == "host"``) show every issue. The layer ends when the last
GPU finishes (a barrier).
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd
import simpy

from secmoe_sim.engine.collectives import start_collective
from secmoe_sim.engine.network import build_network
from secmoe_sim.engine.network.flow_table import RateObserver
from secmoe_sim.engine.recorder import Recorder, Row
from secmoe_sim.errors import SimulationError
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.kernel_time import KernelTimer, RooflineTimer, host_time_per_launch_s
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


# A run allocates millions of small objects (events, messages, rows) that stay alive until it ends.
# CPython's default first-generation threshold (700 allocations) makes the cycle collector walk that
# growing set again and again: half of the CPU of a 256-rank ring all-reduce. A run collects 100x
# less often; the threshold is restored afterwards (docs/model.md, section 4).
RUN_GC_THRESHOLD = 70_000


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the first-generation collection threshold to :data:`RUN_GC_THRESHOLD` for the duration."""
    previous = gc.get_threshold()
    gc.set_threshold(max(RUN_GC_THRESHOLD, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


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
    with fewer_collections():
        return _run(plan, timer, network, observer, faults, communication)


def _run(
    plan: LayerPlan,
    timer: KernelTimer | None,
    network: NetworkOptions | None,
    observer: RateObserver | None,
    faults: Sequence,
    communication: Communication | None,
) -> SimulationRun:
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
    issued = [[env.event() for _ in program] for program in plan.programs]
    done = [[env.event() for _ in program] for program in plan.programs]
    depth = plan.cluster.gpu.launch_queue_depth
    per_call_s = host_time_per_launch_s(plan.cluster.gpu)

    def issue_time_s(gpu: int, step) -> float:
        """The host's time to issue one program step: its kernels' launches, one call per collective."""
        if isinstance(step, Kernel):
            return timer.launch_time_s(step) * slowdown[gpu]
        if isinstance(step, Pipeline):
            return (sum(timer.launch_time_s(k) for k in step.kernels) + per_call_s * len(step.collectives())) * slowdown[gpu]
        return per_call_s * slowdown[gpu]

    def host_process(gpu: int):
        for index, step in enumerate(plan.programs[gpu]):
            if index >= depth:
                yield done[gpu][index - depth]
            started_at = env.now
            cost_s = issue_time_s(gpu, step)
            if not math.isfinite(cost_s) or cost_s < 0:
                raise SimulationError(f"issuing {step.name!r} on GPU {gpu} takes {cost_s} s")
            if cost_s > 0:
                yield env.timeout(cost_s)
            recorder.record(
                Row(gpu=gpu, stream="host", kind="issue", label=step.name, started_at=started_at, finished_at=env.now)
            )
            issued[gpu][index].succeed()

    def run_kernel(gpu: int, kernel: Kernel, started_at: float | None = None):
        """The kernel on the compute stream; ``started_at`` is when the GPU became free for it, before it was issued."""
        started_at = env.now if started_at is None else started_at
        duration_s = timer.kernel_time_s(kernel) * slowdown[gpu]
        if not math.isfinite(duration_s) or duration_s < 0:
            raise SimulationError(f"kernel {kernel.name!r} on GPU {gpu} has a duration of {duration_s} s")
        yield env.timeout(duration_s)
        launch_s = max(0.0, env.now - started_at - duration_s)
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
        for index, step in enumerate(plan.programs[gpu]):
            free_at = env.now
            yield issued[gpu][index]
            if isinstance(step, Kernel):
                yield from run_kernel(gpu, step, free_at)
            else:
                if env.now > free_at:
                    recorder.record(
                        Row(
                            gpu=gpu,
                            stream="compute",
                            kind="host_wait",
                            label=step.name,
                            started_at=free_at,
                            finished_at=env.now,
                            launch_s=env.now - free_at,
                        )
                    )
                if isinstance(step, Pipeline):
                    yield from run_pipeline(gpu, step)
                else:
                    yield from run_collective(gpu, step)
            done[gpu][index].succeed()
        finished_at[gpu] = env.now

    for gpu in range(len(plan.programs)):
        env.process(host_process(gpu))
        env.process(gpu_process(gpu))
    num_events = 0
    while env.peek() != float("inf"):
        env.step()
        num_events += 1
    stuck = [gpu for gpu, events in enumerate(done) if events and not events[-1].triggered]
    if stuck:
        raise SimulationError(f"GPU {stuck[0]} never finished its program ({len(stuck)} GPUs stuck): the plan deadlocks")
    return SimulationRun(
        plan=plan,
        timeline=recorder.frame(),
        finished_at=tuple(finished_at),
        num_events=num_events,
        network_statistics=links.statistics(),
    )
