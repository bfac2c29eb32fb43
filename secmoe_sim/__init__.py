"""secmoe-sim: a discrete-event cluster simulator for sectional Mixture-of-Experts layers.

The public names for scripts and notebooks: :func:`load_scenario`, :class:`Scenario`,
:func:`simulate` and :class:`ScenarioError`. The package root only re-exports them; no module of
the package imports the root (``tests/test_layers.py`` checks it), so importing a layer never
drags the others in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secmoe_sim.errors import ScenarioError
from secmoe_sim.spec.loading import load_scenario
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.version import __version__

if TYPE_CHECKING:
    from secmoe_sim.simulation import simulate

__all__ = ["Scenario", "ScenarioError", "__version__", "load_scenario", "simulate"]


def __getattr__(name: str) -> Any:
    if name == "simulate":  # imported lazily so that loading a scenario does not import simpy
        from secmoe_sim.simulation import simulate

        return simulate
    raise AttributeError(name)
