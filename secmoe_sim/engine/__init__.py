"""The SimPy engine: a cluster of GPUs with compute and communication streams, a network, collectives.

``run_plan(plan, passes)`` simulates one :class:`~secmoe_sim.plan.steps.LayerPlan` in a fresh
``simpy.Environment`` and returns the recorded rows; the engine does no file IO and no plotting.
"""

from secmoe_sim.engine.layer import SimulationRun, run_plan
from secmoe_sim.engine.recorder import Row

__all__ = ["Row", "SimulationRun", "run_plan"]
