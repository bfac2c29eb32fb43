"""secmoe-sim: a discrete-event cluster simulator for sectional Mixture-of-Experts layers."""

from importlib.metadata import PackageNotFoundError, version

from secmoe_sim.scenario import Scenario, ScenarioError, load_scenario

try:
    __version__ = version("secmoe-sim")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Scenario", "ScenarioError", "load_scenario", "simulate", "__version__"]


def __getattr__(name: str):
    if name == "simulate":  # imported lazily so that loading a scenario does not import simpy
        from secmoe_sim.simulation import simulate

        return simulate
    raise AttributeError(name)
