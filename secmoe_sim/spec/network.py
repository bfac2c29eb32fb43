"""Network options of a scenario: which network model moves the bytes and which all-to-all algorithm runs.

The models themselves live in :mod:`secmoe_sim.engine.network` (docs/model.md, section 4).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from secmoe_sim.spec.base import StrictModel


class NetworkOptions(StrictModel):
    """How the simulated network moves bytes (docs/model.md, section 4)."""

    model: Literal["flows", "ports"] = Field(
        default="flows",
        description="flows: concurrent messages share every link max-min fairly; "
        "ports: capacity-1 ports, one message per link at a time in a fixed order",
    )
    mode: Literal["exact", "batched"] = Field(
        default="exact",
        description="flows only. exact: rates recomputed whenever a flow starts or finishes; "
        "batched: only once `tolerance` of the active flows have started or finished (large clusters)",
    )
    tolerance: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="batched mode: fraction of the active flows that start or finish before rates are recomputed (0 is exact)",
    )
    all_to_all: Literal["direct", "pairwise", "hierarchical"] = Field(
        default="direct",
        description="all-to-all algorithm: direct (every pair at once), pairwise (G-1 rounds, i -> i+r), "
        "hierarchical (intra-node exchange by local rank, then one inter-node exchange per node pair and local rank)",
    )
