"""How well a fitted hardware file predicts its own trace: the error table per op class.

Each op class keeps every fourth shape (ordered by size) out of its fit; the table reports, per
class, the error of the *simulator's own* prediction (through ``plan.kernel_time.kernel_time_s``) on the
fitted shapes and on the held-out ones (MAPE and the worst error). Section loops (``launch``) are
never fitted: their whole class is a held-out check of the launch overhead plus the GEMM model on
tiny section GEMMs. The shape models are also checked across shape families (``gemm:cross_family``,
``attention:cross_family``, ``attention:math:cross_family``): each family (GEMMs by narrowest
dimension, attention by head width) is predicted by a fit that never saw it, and the class's
held-out columns pool those predictions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from secmoe_sim.calibrate import shape_fit
from secmoe_sim.calibrate.fitting import split_heldout
from secmoe_sim.calibrate.link_fit import AlphaBeta
from secmoe_sim.calibrate.shape_fit import ShapeContext, shaped_gpu
from secmoe_sim.calibrate.trace import Trace, row_kernel, shape_class_rows
from secmoe_sim.plan.costs import linear
from secmoe_sim.plan.kernel_time import RooflineTimer
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.units import DTYPE_BYTES, PERCENT


def predicted_s(rows: pd.DataFrame, cluster: Cluster, launch_s: float) -> np.ndarray:
    """The simulator's time for gemm, attention, memory and launch rows on ``cluster``, with ``launch_s``
    per op: the dispatch the trace's timings include (``calibrate.fit``'s launch)."""
    gpu = cluster.gpu
    times = []
    for _, row in rows.iterrows():
        timer = RooflineTimer(gpu, row["dtype"])
        if row["primitive"] == "launch":
            per_op = launch_s
            if not np.isnan(row["m"]):  # a loop of small section GEMMs: each one a launch and a kernel
                section = linear("section", "calibration", row["m"], row["k"], row["n"], DTYPE_BYTES[row["dtype"]])
                per_op += timer.kernel_time_s(section)
            times.append(row["count"] * per_op)
        else:
            kernel = row_kernel(row)
            times.append(kernel.launches * launch_s + timer.kernel_time_s(kernel))
    return np.array(times)


def error_row(op_class: str, fitted: pd.DataFrame, held: pd.DataFrame, fitted_error: np.ndarray, held_error: np.ndarray) -> dict:
    def mape(errors):
        return float(np.mean(np.abs(errors)) * PERCENT) if len(errors) else np.nan

    def worst(errors):
        return float(errors[np.argmax(np.abs(errors))] * PERCENT) if len(errors) else np.nan

    return {
        "op_class": op_class,
        "fitted_shapes": len(fitted),
        "heldout_shapes": len(held),
        "mape_fitted_pct": mape(fitted_error),
        "mape_heldout_pct": mape(held_error),
        "worst_heldout_pct": worst(held_error),
        "worst_fitted_pct": worst(fitted_error),
    }


def error_table(trace: Trace, cluster: Cluster, links: tuple[AlphaBeta, ...], context: ShapeContext) -> pd.DataFrame:
    """Per op class: the relative error ``predicted / measured - 1`` on fitted and held-out shapes.

    Section loops (``launch``) are never fitted: their whole class is a held-out check of the
    launch overhead plus the GEMM model on tiny section GEMMs. The ``:cross_family`` classes hold
    out whole shape families (:func:`cross_family_errors`).
    """
    rows = trace.rows
    table = []
    shaped = shape_class_rows(rows)
    for op_class, members in [*shaped.items(), ("memory", rows[rows["primitive"] == "memory"])]:
        fitted, held = split_heldout(members, "traffic_bytes" if op_class == "memory" else "flops")
        if len(fitted):
            errors = [_errors(part, cluster, context.launch_s) for part in (fitted, held)]
            table.append(error_row(op_class, fitted, held, *errors))
    for op_class, members in shaped.items():
        held_errors = cross_family_errors(trace, members, op_class, cluster, context)
        if held_errors is not None:
            table.append(error_row(f"{op_class}:cross_family", members.iloc[0:0], members, np.array([]), held_errors))
    launch = rows[rows["primitive"] == "launch"]
    fitted, held = launch[launch["m"].isna()], launch[launch["m"].notna()]
    if len(launch):
        errors = [_errors(part, cluster, context.launch_s) for part in (fitted, held)]
        table.append(error_row("launch", fitted, held, *errors))
    comm = rows[rows["primitive"] == "comm"]
    for link in links:
        fitted, held = split_heldout(comm[(comm["op"] == link.op) & (comm["path"] == link.path)], "bytes")
        errors = [link.time_s(part["bytes"].to_numpy()) / part["median_s"].to_numpy() - 1 for part in (fitted, held)]
        table.append(error_row(f"comm:{link.op}", fitted, held, *errors))
    return pd.DataFrame(table)


def _errors(rows: pd.DataFrame, cluster: Cluster, launch_s: float) -> np.ndarray:
    return predicted_s(rows, cluster, launch_s) / rows["median_s"].to_numpy() - 1


def cross_family_errors(
    trace: Trace, members: pd.DataFrame, op_class: str, cluster: Cluster, context: ShapeContext
) -> np.ndarray | None:
    """The error of every row of ``members`` (the rows of ``op_class``: ``gemm``, ``attention`` or
    ``attention:math``) predicted by a fit that left its whole shape family out (None with fewer than
    two families). The refit is the calibration's own (same launch, bandwidth, floor and priors; the
    other classes fitted on all their rows), the prediction the simulator's."""
    families = shape_fit.gemm_families(members) if op_class == "gemm" else shape_fit.attention_families(members)
    if len(set(families)) < 2:
        return None
    classes = shape_class_rows(trace.rows)

    def predicted_without(held: np.ndarray) -> np.ndarray:
        fits = context.fit({**classes, op_class: members[~held]})
        datasheet_peak = cluster.gpu.peak_for(fits.gemm.reference_dtype)  # the full fit's peak: same times
        refitted = cluster.model_copy(update={"gpu": shaped_gpu(cluster.gpu, fits, datasheet_peak)})
        return predicted_s(members[held], refitted, context.launch_s)

    return shape_fit.held_out_by_family(families, predicted_without) / members["median_s"].to_numpy() - 1
