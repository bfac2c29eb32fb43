"""secmoe-sim: a discrete-event cluster simulator for sectional Mixture-of-Experts layers.

The public names for scripts and notebooks (docs/api.md): :func:`load_scenario`, :class:`Scenario`
(:meth:`Scenario.with_values` changes fields with validation), :func:`simulate`,
:func:`write_outputs`, :func:`plot`, :func:`chrome_trace` and :class:`ScenarioError`. The package
root only re-exports them, lazily (importing the package, or ``secmoe_sim.cli`` for ``--help``,
loads none of the models, numpy, the engine or matplotlib); no module of
the package imports the root (``tests/test_layers.py`` checks it), so importing a layer never drags
the others in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secmoe_sim.errors import ScenarioError
from secmoe_sim.version import __version__

if TYPE_CHECKING:
    from secmoe_sim.report.outputs import run_figure as plot
    from secmoe_sim.report.outputs import run_trace as chrome_trace
    from secmoe_sim.report.outputs import write_run_outputs as write_outputs
    from secmoe_sim.simulation import simulate
    from secmoe_sim.spec.loading import load_scenario
    from secmoe_sim.spec.scenario import Scenario

__all__ = ["Scenario", "ScenarioError", "__version__", "chrome_trace", "load_scenario", "plot", "simulate", "write_outputs"]

_LAZY = {
    "load_scenario": ("secmoe_sim.spec.loading", "load_scenario"),
    "Scenario": ("secmoe_sim.spec.scenario", "Scenario"),
    "simulate": ("secmoe_sim.simulation", "simulate"),
    "write_outputs": ("secmoe_sim.report.outputs", "write_run_outputs"),
    "plot": ("secmoe_sim.report.outputs", "run_figure"),
    "chrome_trace": ("secmoe_sim.report.outputs", "run_trace"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:  # imported on first use, so that loading a scenario does not import simpy or matplotlib
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(name)
