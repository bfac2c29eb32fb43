"""The calibration trace: one row per measured op shape, plus metadata, in CSV or Parquet.

Every measurement (microbenchmarks, an imported profiler trace) becomes a :class:`Trace`: a table
whose rows name the op, its primitive and shape, the dtype and device, and the statistics of its
repeated timings, and a metadata mapping (format version, torch version, device name, threads,
date, source). The format is documented in ``docs/calibration.md``; ``FORMAT_VERSION`` changes
whenever a column changes meaning.

Primitives and their shape columns (the others are empty):

=========  ==========================================  =========================================
primitive  shape columns                               what one timing covers
=========  ==========================================  =========================================
gemm       ``m, k, n, count``                          one call: ``count`` GEMMs ``(m,k) @ (k,n)``
attention  ``batch, heads, tokens, head_dim, causal``  one fused scaled-dot-product attention
memory     ``bytes`` (read + written)                  one memory-bound op (copy, softmax, add)
launch     ``count`` (ops), ``m, k, n`` (loop GEMMs)    ``count`` back-to-back tiny ops
comm       ``bytes`` (per peer), ``world_size``        one collective, slowest rank
=========  ==========================================  =========================================

FLOPs and traffic follow :mod:`secmoe_sim.plan.costs` (a multiply-add is 2 FLOP; causal attention counts
half the score matrix; traffic counts each operand once), so a row converts to the
:class:`~secmoe_sim.plan.costs.Kernel` the simulator would time (:func:`row_kernel`).

CSV files start with ``# key: value`` lines (values in JSON) holding the metadata, then the header
and the rows; Parquet files keep the metadata as JSON in the schema under ``secmoe_sim_trace``.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from secmoe_sim.calibrate import CalibrationError
from secmoe_sim.plan.costs import Kernel, attention_flops, attention_traffic_bytes, gemm_flops, gemm_traffic_bytes
from secmoe_sim.spec.units import DTYPE_BYTES

FORMAT_VERSION = 1
CSV_MAGIC = "# secmoe-sim calibration trace"
PARQUET_KEY = b"secmoe_sim_trace"
# The ``path`` of an attention row: torch's fused kernel (unnamed in older traces), or the math path,
# which writes the score matrix out (costs.attention_scores with ``attention: materialized``).
FUSED_PATH, MATH_PATH = "fused", "math"
MICROBENCHMARK_SOURCE = "microbenchmark"  # the source of a row this package timed itself
FUSED_PATHS = ("", FUSED_PATH)

PRIMITIVES = ("gemm", "attention", "memory", "launch", "comm")
SHAPE_COLUMNS = {
    "gemm": ("m", "k", "n", "count"),
    "attention": ("batch", "heads", "tokens", "head_dim", "causal"),
    "memory": ("bytes",),
    "launch": ("count",),
    "comm": ("bytes", "world_size"),
}
TEXT_COLUMNS = ("op", "primitive", "dtype", "device", "path", "source")
NUMBER_COLUMNS = (
    "m",
    "k",
    "n",
    "count",
    "batch",
    "heads",
    "tokens",
    "head_dim",
    "causal",
    "bytes",
    "world_size",
    "flops",
    "traffic_bytes",
)
STAT_COLUMNS = ("repeats", "attempts", "median_s", "p10_s", "p90_s", "mean_s", "min_s", "max_s")
COLUMNS = TEXT_COLUMNS + NUMBER_COLUMNS + STAT_COLUMNS
SPREAD_PERCENTILES = (10, 90)


class TraceError(CalibrationError):
    """A trace file that cannot be read or is not a valid trace (one-line message)."""


@dataclass(frozen=True)
class Trace:
    """Measured op timings (``rows``, the columns of ``COLUMNS``) and what produced them."""

    rows: pd.DataFrame
    metadata: dict = field(default_factory=dict)

    def of(self, primitive: str, dtype: str | None = None) -> pd.DataFrame:
        """The rows of one primitive (and dtype, if given)."""
        selected = self.rows["primitive"] == primitive
        if dtype is not None:
            selected &= self.rows["dtype"] == dtype
        return self.rows[selected]


def sample_statistics(samples_s: np.ndarray, attempts: int = 1) -> dict:
    """Median, 10th/90th percentile, mean, min and max of repeated timings, their count, and how
    many times the shape was measured to get them (more than once: earlier timings looked disturbed)."""
    samples_s = np.asarray(samples_s, dtype=float)
    low, high = np.percentile(samples_s, SPREAD_PERCENTILES)
    return {
        "repeats": len(samples_s),
        "attempts": int(attempts),
        "median_s": float(np.median(samples_s)),
        "p10_s": float(low),
        "p90_s": float(high),
        "mean_s": float(samples_s.mean()),
        "min_s": float(samples_s.min()),
        "max_s": float(samples_s.max()),
    }


def gemm_counts(m: float, k: float, n: float, count: float, dtype: str) -> dict:
    """FLOPs and traffic of ``count`` GEMMs ``(m, k) @ (k, n)`` (:func:`~secmoe_sim.plan.costs.gemm_flops`)."""
    b = DTYPE_BYTES[dtype]
    return {"flops": gemm_flops(m, k, n) * count, "traffic_bytes": gemm_traffic_bytes(m, k, n, b) * count}


def attention_counts(
    batch: float, heads: float, tokens: float, head_dim: float, causal: bool, dtype: str, materialized: bool = False
) -> dict:
    """FLOPs and traffic of ``batch`` sequences' attention over themselves, fused or with the scores
    materialized (:func:`~secmoe_sim.plan.costs.attention_flops`)."""
    width = heads * head_dim
    traffic = attention_traffic_bytes(tokens, tokens, width, heads, materialized, DTYPE_BYTES[dtype])
    return {"flops": attention_flops(tokens, tokens, width, causal) * batch, "traffic_bytes": traffic * batch}


def make_row(op: str, primitive: str, dtype: str, device: str, stats: dict, source: str, path: str = "", **shape) -> dict:
    """One trace row: shape columns from ``shape``, FLOPs and traffic derived from them."""
    row: dict[str, float | str] = {column: np.nan for column in NUMBER_COLUMNS}
    row.update({"op": op, "primitive": primitive, "dtype": dtype, "device": device, "path": path, "source": source})
    row.update({key: float(value) for key, value in shape.items()})
    if primitive == "gemm":
        row.update(gemm_counts(shape["m"], shape["k"], shape["n"], shape["count"], dtype))
    elif primitive == "attention":
        counts = attention_counts(
            shape["batch"], shape["heads"], shape["tokens"], shape["head_dim"], bool(shape["causal"]), dtype, path == MATH_PATH
        )
        row.update(counts)
    elif primitive in ("memory", "comm"):
        row.update({"flops": 0.0, "traffic_bytes": float(shape["bytes"])})
    elif "m" in shape:  # a launch loop of small GEMMs
        row.update(gemm_counts(shape["m"], shape["k"], shape["n"], shape["count"], dtype))
    else:  # a launch loop of tiny ops: its cost is the dispatch, not the work
        row.update({"flops": 0.0, "traffic_bytes": 0.0})
    row.update(stats)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as a trace table with every column, in the documented order."""
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in TEXT_COLUMNS:  # a column empty in every row reads back from CSV as floats (NaN)
        table[column] = ["" if pd.isna(value) else str(value) for value in table[column]]
    for column in NUMBER_COLUMNS + STAT_COLUMNS:
        table[column] = table[column].astype(float)
    table["attempts"] = table["attempts"].fillna(1)
    for column in ("repeats", "attempts"):
        table[column] = table[column].astype(int)
    return table


def row_kernel(row) -> Kernel:
    """The simulator's kernel for a gemm, attention or memory row (one launch)."""
    primitive = row["primitive"]
    shape = tuple((name, float(row[name])) for name in SHAPE_COLUMNS[primitive])
    if primitive == "attention" and row["path"] == MATH_PATH:
        shape += (("materialized", 1.0),)
    return Kernel(
        name=str(row["op"]),
        group="calibration",
        flops=float(row["flops"]),
        traffic_bytes=float(row["traffic_bytes"]),
        primitive=primitive,
        shape=shape,
    )


def shape_class_rows(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each op class a shape model is fitted to: the GEMMs, the fused attention (path ``fused``, or unnamed
    in older traces; causal or not) and the math path's attention (path ``math``)."""
    attention = rows[rows["primitive"] == "attention"]
    return {
        "gemm": rows[rows["primitive"] == "gemm"],
        "attention": attention[attention["path"].isin(FUSED_PATHS)],
        "attention:math": attention[attention["path"] == MATH_PATH],
    }


def launch_overhead_s(trace: Trace) -> float | None:
    """Per-op dispatch time: median over the single tiny-op ``launch`` rows, or None without any."""
    tiny = trace.rows[(trace.rows["primitive"] == "launch") & trace.rows["m"].isna()]
    if tiny.empty:
        return None
    return float(np.median(tiny["median_s"] / tiny["count"]))


# --- files ------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (how fitted hardware files and reports name their trace)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_trace(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` as CSV (``.csv``) or Parquet (``.parquet``), metadata included."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format_version": FORMAT_VERSION, **trace.metadata}
    table = frame(trace.rows.to_dict("records"))
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrow = pa.Table.from_pandas(table, preserve_index=False)
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), PARQUET_KEY: json.dumps(metadata).encode()})
        pq.write_table(arrow, path)
    elif path.suffix == ".csv":
        header = [CSV_MAGIC] + [f"# {key}: {json.dumps(value)}" for key, value in metadata.items()]
        path.write_text("\n".join(header) + "\n" + table.to_csv(index=False), encoding="utf-8")
    else:
        raise TraceError(f"{path}: a trace file ends in .csv or .parquet")
    return path


def read_trace(path: str | Path) -> Trace:
    """Read and check a trace written by :func:`write_trace`; raises :class:`TraceError` (one line)."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    try:
        if path.suffix == ".parquet":
            table, metadata = _read_parquet(path)
        else:
            table, metadata = _read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise TraceError(f"{path}: cannot read trace: {' '.join(str(error).split())}") from None
    return _checked(path, table, metadata)


def _read_csv(path: Path) -> tuple[pd.DataFrame, dict]:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or lines[0] != CSV_MAGIC:
        raise TraceError(f"{path}: not a secmoe-sim trace (the first line must be {CSV_MAGIC!r})")
    metadata = {}
    body_start = 1
    for body_start, line in enumerate(lines[1:], start=1):
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        metadata[key] = json.loads(value)
    return pd.read_csv(io.StringIO("\n".join(lines[body_start:]))), metadata


def _read_parquet(path: Path) -> tuple[pd.DataFrame, dict]:
    import pyarrow.parquet as pq

    arrow = pq.read_table(path)
    raw = (arrow.schema.metadata or {}).get(PARQUET_KEY)
    if raw is None:
        raise TraceError(f"{path}: not a secmoe-sim trace (no {PARQUET_KEY.decode()} metadata)")
    return arrow.to_pandas(), json.loads(raw)


def _checked(path: Path, table: pd.DataFrame, metadata: dict) -> Trace:
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise TraceError(f"{path}: trace format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise TraceError(f"{path}: trace lacks columns {', '.join(missing)}")
    table = frame(table[list(COLUMNS)].to_dict("records"))
    unknown = sorted(set(table["primitive"]) - set(PRIMITIVES))
    if unknown:
        raise TraceError(f"{path}: unknown primitive(s) {', '.join(unknown)} (known: {', '.join(PRIMITIVES)})")
    bad = table[~(table["median_s"] > 0)]
    if not bad.empty:
        raise TraceError(f"{path}: row {int(bad.index[0]) + 1} ({bad['op'].iloc[0]}) has no positive median_s")
    for primitive, columns in SHAPE_COLUMNS.items():
        rows = table[table["primitive"] == primitive]
        for column in columns:
            if not rows.empty and not (rows[column] > 0).all() and column != "causal":
                index = rows.index[~(rows[column] > 0)][0]
                raise TraceError(f"{path}: row {int(index) + 1} ({primitive}) needs a positive {column}")
    metadata = {key: value for key, value in metadata.items() if key != "format_version"}
    return Trace(rows=table, metadata=metadata)
