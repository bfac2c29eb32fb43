"""The trace format: CSV and Parquet round trips, metadata, and one-line errors on bad files."""

import pandas as pd
import pytest
from calibration_fixtures import synthetic_trace

from secmoe_sim.calibrate.trace import COLUMNS, FORMAT_VERSION, TraceError, read_trace, row_kernel, write_trace
from secmoe_sim.plan.costs import qkv_projection


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_keeps_rows_and_metadata(tmp_path, suffix):
    trace = synthetic_trace()
    path = write_trace(trace, tmp_path / f"trace{suffix}")
    back = read_trace(path)
    assert back.metadata == trace.metadata
    assert list(back.rows.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(back.rows, trace.rows)


def test_csv_starts_with_versioned_metadata(tmp_path):
    path = write_trace(synthetic_trace(), tmp_path / "trace.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "# secmoe-sim calibration trace"
    assert f"# format_version: {FORMAT_VERSION}" in lines


def test_row_kernel_matches_the_cost_model():
    gemm = synthetic_trace().of("gemm")
    row = gemm[gemm["n"] == 3 * gemm["k"]].iloc[0]  # a QKV projection: (m, w) @ (w, 3w)
    kernel = row_kernel(row)
    reference = qkv_projection(row["m"], row["k"], 4)  # fp32: 4 bytes per element
    assert kernel.flops == pytest.approx(reference.flops) and kernel.traffic_bytes == pytest.approx(reference.traffic_bytes)
    assert kernel.primitive == "gemm" and kernel.dims()["m"] == row["m"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("not a trace\n", "not a secmoe-sim trace"),
        ("# secmoe-sim calibration trace\n# format_version: 99\nop\n", "format_version 99"),
        ("# secmoe-sim calibration trace\n# format_version: 1\nop,primitive\nmm,gemm\n", "lacks columns"),
    ],
)
def test_bad_trace_is_one_line_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TraceError, match=message) as error:
        read_trace(path)
    assert "\n" not in str(error.value)


def test_missing_trace_file(tmp_path):
    with pytest.raises(TraceError, match="no such trace file"):
        read_trace(tmp_path / "absent.csv")


def test_unknown_primitive_is_rejected(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(write_trace(synthetic_trace(), tmp_path / "ok.csv").read_text().replace("mm,gemm", "mm,magic", 1))
    with pytest.raises(TraceError, match="unknown primitive"):
        read_trace(path)
