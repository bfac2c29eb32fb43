"""Which rows may be compared, and the comparison: every configuration against dense on its own GPUs.

Rows of one scenario share ``d``, ``N``, ``B``, the GPU model and the fabric; their parameters, FLOPs
per token and GPU counts differ. A wall-clock comparison is made only between rows on the same GPU
count: each best row is set against the fastest dense entry simulated on the same number of GPUs
(the scenario's own dense entries, or the ``dense@<G>gpu`` rows re-simulated for ``expert_per_gpu``
entries). Rows on other GPU counts are also compared in GPU-seconds, which is what they cost.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from secmoe_sim.simulation import best_rows

DENSE, SECTIONAL, TOKEN_MOE = "dense", "sectional_moe", "token_moe"


def fastest_dense(summary: pd.DataFrame, num_gpus: int) -> pd.Series | None:
    """The dense row with the lowest wall-clock on ``num_gpus`` GPUs, or None if there is none."""
    dense = summary[(summary["architecture"] == DENSE) & (summary["num_gpus"] == num_gpus)]
    if dense.empty:
        return None
    return dense.iloc[int(dense["wall_clock_s"].to_numpy().argmin())]


def comparison_table(summary: pd.DataFrame, scenario_gpus: int) -> pd.DataFrame:
    """The best row of every (entry, placement), each with the fastest dense row on its own GPUs.

    Added columns: ``same_gpus_as_scenario``; ``reference`` (that dense row's label, empty without
    one), ``reference_wall_clock_s`` and ``reference_gpu_seconds``; ``speedup_vs_dense`` (reference
    wall-clock / this wall-clock: above 1 the row is faster). Baselines re-simulated on other GPU
    counts appear only as references.
    """
    best = best_rows(summary[summary["role"] != "same_gpus"])
    references = [fastest_dense(summary, int(gpus)) for gpus in best["num_gpus"]]
    reference_wall = np.array([np.nan if r is None else float(r["wall_clock_s"]) for r in references])
    return best.assign(
        same_gpus_as_scenario=best["num_gpus"].to_numpy() == scenario_gpus,
        reference=["" if r is None else str(r["label"]) for r in references],
        reference_wall_clock_s=reference_wall,
        reference_gpu_seconds=[np.nan if r is None else float(r["gpu_seconds"]) for r in references],
        speedup_vs_dense=reference_wall / best["wall_clock_s"].to_numpy(dtype=float),
    )
