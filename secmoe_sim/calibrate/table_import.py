"""Measured shapes from elsewhere, in and out: a table of timings as a calibration trace, and the
simulator's predicted time for a list of shapes.

``import_table`` reads a CSV of one op class, a row per measured shape: ``m, k, n, time_s`` for GEMMs
(optionally ``count``), ``batch, heads, tokens, head_dim, causal, time_s`` for fused attention,
``bytes, time_s`` for memory-bound ops. Each row becomes a trace row with one timing (its median,
minimum and maximum are that time), so ``fit`` can learn from a published sweep or a vendor table
as from the microbenchmarks. ``predict_shapes`` reads the same shape columns with an ``op`` column
and gives each shape's roofline time on a GPU, and which term bound it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from secmoe_sim.calibrate import CalibrationError
from secmoe_sim.calibrate.trace import SHAPE_COLUMNS, Trace, frame, make_row, row_kernel, sample_statistics
from secmoe_sim.plan.kernel_time import kernel_terms, launch_time_s
from secmoe_sim.spec.hardware import GPU

OPTIONAL_COLUMNS = {"gemm": {"count": 1.0}, "attention": {"causal": 0.0}, "memory": {}}
INTEGER_COLUMNS = ("m", "k", "n", "count", "batch", "heads", "tokens", "head_dim")


def _read(path: Path) -> pd.DataFrame:
    """The table, with each row's line in the file as ``_line`` (``#`` comment and blank lines skipped)."""
    try:
        table = pd.read_csv(path, comment="#")
        text = path.read_text(encoding="utf-8").splitlines()
        kept = [number for number, line in enumerate(text, start=1) if line.split("#")[0].strip()]  # header first
        return table.assign(_line=kept[1 : len(table) + 1])
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CalibrationError(f"{path}: not a readable CSV table ({reason})") from None


def _shapes(path: Path, table: pd.DataFrame, op: str, with_time: bool) -> list[dict]:
    """Each row's shape (and time) as numbers, checked: one-line errors naming the file, row and column."""
    needed = [c for c in SHAPE_COLUMNS[op] if c not in OPTIONAL_COLUMNS[op]] + (["time_s"] if with_time else [])
    absent = [c for c in needed if c not in table.columns]
    if absent:
        raise CalibrationError(f"{path}: a {op} table needs the columns {', '.join(needed)} (missing: {', '.join(absent)})")
    if table.empty:
        raise CalibrationError(f"{path}: the table has no rows")
    rows = []
    for record in table.to_dict("records"):
        index = record["_line"]
        given = {c: record[c] for c in SHAPE_COLUMNS[op] + ("time_s",) if c in record}
        values = {**OPTIONAL_COLUMNS[op], **{c: v for c, v in given.items() if not (c in OPTIONAL_COLUMNS[op] and pd.isna(v))}}
        if isinstance(values.get("causal"), (bool, np.bool_)) or str(values.get("causal")).lower() in ("true", "false"):
            values["causal"] = float(str(values["causal"]).lower() == "true")
        for column, value in values.items():
            number = pd.to_numeric(value, errors="coerce")
            if isinstance(value, bool) or not np.isfinite(number) or number < 0 or (column != "causal" and number == 0):
                raise CalibrationError(f"{path}: line {index}, {column}: expected a positive number, got {value!r}")
            if column in INTEGER_COLUMNS and number != math.floor(number):
                raise CalibrationError(f"{path}: line {index}, {column}: expected a whole number, got {value!r}")
            if column == "causal" and number not in (0, 1):
                raise CalibrationError(f"{path}: line {index}, causal: expected 0 or 1, got {value!r}")
            values[column] = float(number)
        rows.append(values)
    return rows


def import_table(path: Path, op: str, dtype: str, device: str = "unknown") -> Trace:
    """The table as a trace of ``op`` rows in ``dtype`` (one timing each)."""
    shapes = _shapes(path, _read(path), op, with_time=True)
    rows = []
    for shape in shapes:
        time_s = shape.pop("time_s")
        rows.append(
            make_row(f"table.{op}", op, dtype, device, sample_statistics(np.array([time_s])), f"table:{path.name}", **shape)
        )
    metadata = {"device": device, "device_name": device, "dtypes": [dtype], "source": f"imported table {path.name}"}
    return Trace(rows=frame(rows), metadata=metadata)


def predict_shapes(path: Path, gpu: GPU, dtype: str) -> pd.DataFrame:
    """Each shape's predicted time on ``gpu``: the roofline's compute, memory and fixed terms and the attention's
    floor, which of them bound it (``plan.kernel_time.KernelTerms.bound``), and the launch."""
    table = _read(path)
    if "op" not in table.columns:
        raise CalibrationError(f"{path}: the shapes table needs an op column (gemm, attention or memory)")
    blank = table[table["op"].isna()]
    if len(blank):
        raise CalibrationError(f"{path}: line {blank['_line'].iloc[0]}, op: expected gemm, attention or memory, got nothing")
    if dtype not in gpu.peak_flops:
        raise CalibrationError(f"the GPU {gpu.name} has no peak_flops entry for {dtype} (it has: {', '.join(gpu.peak_flops)})")
    results = []
    for key, group in table.groupby("op", sort=False):
        op = str(key)
        if op not in OPTIONAL_COLUMNS:
            raise CalibrationError(f"{path}: op {op!r}: expected gemm, attention or memory")
        for shape in _shapes(path, group.drop(columns="op"), op, with_time=False):
            shape.pop("time_s", None)
            kernel = row_kernel(make_row(f"predict.{op}", op, dtype, gpu.name, {}, "predict", **shape))
            terms = kernel_terms(kernel, gpu, dtype)
            launch_s = launch_time_s(kernel, gpu)
            results.append(
                {
                    "op": op,
                    **{column: shape.get(column) for column in SHAPE_COLUMNS[op]},
                    "flops": kernel.flops,
                    "traffic_bytes": kernel.traffic_bytes,
                    "compute_s": terms.compute_s,
                    "memory_s": terms.memory_s,
                    "fixed_s": terms.fixed_s,
                    "floor_s": terms.floor_s,
                    "kernel_s": terms.time_s,
                    "launch_s": launch_s,
                    "predicted_s": terms.time_s + launch_s,
                    "bound": terms.bound,
                }
            )
    return pd.DataFrame(results)
