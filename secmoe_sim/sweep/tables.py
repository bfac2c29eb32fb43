"""Tables derived from a sweep's results, for its plots: best E per point, speedup over token MoE.

All functions take the merged ``results.parquet`` table (one row per point, architecture entry and
E) and the metadata of its directory; none simulates anything.
"""

from __future__ import annotations

import pandas as pd

from secmoe_sim.sweep.spec import SweepError

SECTIONAL, TOKEN_MOE = "sectional_moe", "token_moe"
SAME_GPUS_MODE = "fixed_cluster"  # the sectional sweep mode that keeps the token MoE's GPUs


def axis_columns(metadata: dict) -> list[str]:
    return [axis["path"] for axis in metadata["axes"]]


def written_labels(metadata: dict) -> dict[str, dict]:
    """Axis path -> {value in the results: value as written in the sweep file}, for tick labels."""
    return {
        axis["path"]: {resolved: str(written) for written, resolved in zip(axis["values"], axis["resolved"])}
        for axis in metadata["axes"]
    }


def best_experts(results: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Per point, sectional entry and placement: the simulated best E (lowest wall-clock) beside the analytical E_opt.

    ``largest_experts`` is the largest E simulated there: a best E equal to it is an optimum at the
    edge of the feasible range, which more experts might still improve on.
    """
    sectional = results[results["architecture"] == SECTIONAL]
    if "placement" in sectional.columns:  # one panel per entry and placement: "sectional [replicated]"
        sectional = sectional.assign(label=sectional["label"].astype(str) + " [" + sectional["placement"].astype(str) + "]")
    by_entry = sectional.groupby(["point_id", "label"], sort=False)
    best = sectional.loc[by_entry["wall_clock_s"].idxmin()]
    best = best.assign(largest_experts=by_entry["num_experts"].max().loc[list(zip(best["point_id"], best["label"]))].to_numpy())
    columns = [
        "point_id",
        *axes,
        "label",
        "sweep_mode",
        "num_gpus",
        "num_experts",
        "largest_experts",
        "wall_clock_s",
        "oom",
        "e_opt_analytical",
        "e_opt_analytical_feasible",
    ]
    return best[[c for c in columns if c in best.columns]].rename(columns={"num_experts": "best_experts"}).reset_index(drop=True)


def speedup_over_token_moe(results: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Per point: token-MoE wall-clock / best sectional wall-clock (above 1: the sectional layer is faster).

    The sectional side is the best (entry, E) among the ``fixed_cluster`` entries, which run on the
    same GPUs as the token MoE; only when a sweep has no such entry do ``expert_per_gpu`` entries
    (E GPUs) stand in, and ``sectional_sweep_mode`` says so. Empty without token-MoE entries.
    """
    sectional = results[results["architecture"] == SECTIONAL]
    same_gpus = sectional[sectional["sweep_mode"] == SAME_GPUS_MODE]
    sectional = same_gpus if not same_gpus.empty else sectional
    token = results[results["architecture"] == TOKEN_MOE]
    if token.empty or sectional.empty:
        return pd.DataFrame(columns=["point_id", *axes, "speedup"])
    best_sectional = sectional.loc[sectional.groupby("point_id", sort=False)["wall_clock_s"].idxmin()]
    best_token = token.loc[token.groupby("point_id", sort=False)["wall_clock_s"].idxmin()]
    table = best_sectional[["point_id", *axes, "label", "sweep_mode", "num_experts", "wall_clock_s"]].rename(
        columns={
            "label": "sectional_label",
            "sweep_mode": "sectional_sweep_mode",
            "num_experts": "sectional_experts",
            "wall_clock_s": "sectional_wall_clock_s",
        }
    )
    table = table.merge(
        best_token[["point_id", "label", "wall_clock_s"]].rename(
            columns={"label": "token_label", "wall_clock_s": "token_wall_clock_s"}
        ),
        on="point_id",
    )
    table["speedup"] = table["token_wall_clock_s"] / table["sectional_wall_clock_s"]
    return table.reset_index(drop=True)


def plane_axes(metadata: dict, x: str | None, y: str | None) -> tuple[str, str | None]:
    """The heatmap's axes: the given ones, checked, or the first column of the first two grid dimensions."""
    columns = axis_columns(metadata)
    for name, given in (("--x", x), ("--y", y)):
        if given is not None and given not in columns:
            raise SweepError(name, "", f"{given!r} is not an axis of this sweep (axes: {', '.join(columns)})")
    grid = metadata["grid"]
    x = x or grid[0][0]
    if y is None:
        y = next((dimension[0] for dimension in grid if x not in dimension), None)
    if y is not None and _dimension(grid, x) == _dimension(grid, y):
        raise SweepError("--y", "", f"{x} and {y} are zipped together: a heatmap needs two independent axes")
    return x, y


def fix_other_axes(table: pd.DataFrame, metadata: dict, x: str, y: str | None, at: dict[str, object]) -> tuple[pd.DataFrame, str]:
    """Rows of the plane of ``x`` and ``y``: every other grid dimension at the value in ``at``
    (axis path -> value in the results), else at its first value. Returns the rows and a caption."""
    labels = written_labels(metadata)
    fixed = []
    for dimension in metadata["grid"]:
        if x in dimension or (y is not None and y in dimension):
            continue
        column = next((c for c in dimension if c in at), dimension[0])
        value = at.get(column, next(iter(labels[column])))
        table = table[table[column] == value]
        fixed.append(f"{column} = {labels[column].get(value, value)}")
    return table, ", ".join(fixed)


def parse_at(metadata: dict, assignments: list[str]) -> dict[str, object]:
    """``PATH=VALUE`` options (VALUE as written in the sweep file) -> {axis path: value in the results}."""
    labels = written_labels(metadata)
    chosen: dict[str, object] = {}
    for assignment in assignments:
        path, separator, text = assignment.partition("=")
        if not separator or path not in labels:
            raise SweepError("--at", "", f"{assignment!r}: expected AXIS=VALUE with an axis of this sweep ({', '.join(labels)})")
        matches = [resolved for resolved, written in labels[path].items() if written == text.strip()]
        if not matches:
            raise SweepError("--at", "", f"{text!r} is not a value of {path} (values: {', '.join(labels[path].values())})")
        chosen[path] = matches[0]
    return chosen


def _dimension(grid: list[list[str]], column: str) -> int:
    return next(index for index, dimension in enumerate(grid) if column in dimension)
