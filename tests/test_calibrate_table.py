"""Measured tables in (import-table), predicted times out (predict), and fitting a partial trace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from secmoe_sim.calibrate import CalibrationError
from secmoe_sim.calibrate.fit import DEFAULT_BASE_HARDWARE, fit_trace
from secmoe_sim.calibrate.table_import import import_table, predict_shapes
from secmoe_sim.calibrate.trace import read_trace
from secmoe_sim.cli import main
from secmoe_sim.spec.loading import load_cluster, load_scenario
from secmoe_sim.spec.units import FLOPS_PER_MULTIPLY_ADD

GEMMS = "m,k,n,time_s\n4096,4096,4096,0.000185\n8192,8192,8192,0.00141\n2048,2048,2048,0.0000300\n8192,1024,1024,0.0000301\n"


def test_a_gemm_table_becomes_trace_rows_with_its_times(tmp_path):
    table = tmp_path / "gemms.csv"
    table.write_text(GEMMS)
    trace = import_table(table, "gemm", "bf16")
    rows = trace.rows
    assert list(rows["primitive"].unique()) == ["gemm"] and len(rows) == 4
    assert rows["median_s"].tolist() == pytest.approx([0.000185, 0.00141, 0.0000300, 0.0000301])
    assert rows["flops"].iloc[0] == FLOPS_PER_MULTIPLY_ADD * 4096**3 and (rows["count"] == 1).all()


def test_a_partial_trace_fits_without_base_and_says_what_it_borrowed(tmp_path, capsys):
    table = tmp_path / "gemms.csv"
    table.write_text(GEMMS)
    assert main(["import-table", str(table), "--op", "gemm", "--out", str(tmp_path / "t.csv")]) == 0
    trace = read_trace(tmp_path / "t.csv")
    result = fit_trace(trace)
    default = load_cluster(DEFAULT_BASE_HARDWARE)
    assert result.warnings and "memory bandwidth" in result.warnings[0] and DEFAULT_BASE_HARDWARE in result.warnings[0]
    assert result.cluster.gpu.memory_bandwidth == default.gpu.memory_bandwidth
    assert result.cluster.intra_node == default.intra_node
    fitted = result.cluster.gpu
    assert fitted.peak_flops["bf16"] == pytest.approx(FLOPS_PER_MULTIPLY_ADD * 8192**3 / 0.00141, rel=0.05)
    capsys.readouterr()
    assert main(["fit", str(tmp_path / "t.csv"), "--out", str(tmp_path / "hw.yaml")]) == 0
    assert "warning: no --base" in capsys.readouterr().err
    assert load_cluster(tmp_path / "hw.yaml").gpu.peak_flops == fitted.peak_flops


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("m,k,time_s\n1,2,3\n", "missing: n"),
        ("m,k,n,time_s\n4096,4096,4096,-1\n", "line 2, time_s: expected a positive number"),
        ("m,k,n,time_s\n4096,4096.5,4096,1\n", "line 2, k: expected a whole number"),
        ("m,k,n,time_s\n", "no rows"),
        ("m,k,n,time_s\nx,1,1,1\n", "line 2, m: expected a positive number, got 'x'"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path, capsys, text, fragment):
    table = tmp_path / "bad.csv"
    table.write_text(text)
    assert main(["import-table", str(table), "--op", "gemm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "bad.csv" in err


def test_predict_gives_the_roofline_terms_and_the_bound(tmp_path, capsys):
    shapes = tmp_path / "shapes.csv"
    shapes.write_text("op,m,k,n,bytes\ngemm,4096,4096,4096,\ngemm,64,12288,12288,\nmemory,,,,1e9\n")
    gpu = load_scenario("h100-nvlink-8").hardware.gpu
    table = predict_shapes(shapes, gpu, "bf16")
    assert table["bound"].tolist() == ["compute", "memory", "memory"]
    assert np.allclose(table["kernel_s"], table["fixed_s"] + table[["compute_s", "memory_s"]].max(axis=1))
    assert table["floor_s"].tolist() == [0.0, 0.0, 0.0]  # only attention has a floor
    assert table["memory_s"].iloc[2] == pytest.approx(1e9 / gpu.memory_bandwidth)
    assert main(["predict", "h100-hgx", "--shapes", str(shapes), "--out", str(tmp_path / "p.csv")]) == 0
    assert "compute" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "p.csv")["predicted_s"].to_numpy() == pytest.approx(table["predicted_s"].to_numpy())


def test_predict_reports_the_attention_floor_that_binds_many_narrow_heads(tmp_path):
    shapes = tmp_path / "shapes.csv"
    shapes.write_text("op,batch,heads,tokens,head_dim,causal\nattention,1,64,16,4,false\n")
    floored = load_scenario("h100-nvlink-8").hardware.gpu.model_copy(update={"attention_floor_per_head": 1e-5})
    row = predict_shapes(shapes, floored, "bf16").iloc[0]
    assert row["floor_s"] == pytest.approx(64 * 1e-5)  # batch x heads x the floor per head
    assert row["bound"] == "floor" and row["kernel_s"] == row["floor_s"]


def test_predict_refuses_an_unknown_op(tmp_path):
    shapes = tmp_path / "shapes.csv"
    shapes.write_text("op,bytes\nconv,1e6\n")
    with pytest.raises(CalibrationError, match="op 'conv'"):
        predict_shapes(shapes, load_scenario("h100-nvlink-8").hardware.gpu, "bf16")


def test_errors_name_the_file_line_past_comments_and_other_ops(tmp_path):
    table = tmp_path / "commented.csv"
    table.write_text("# a vendor sweep\nm,k,n,time_s\n\n4096,4096,4096,1e-4\n# the next row is wrong\n8,8,8,0\n")
    with pytest.raises(CalibrationError, match=r"line 6, time_s"):
        import_table(table, "gemm", "bf16")
    shapes = tmp_path / "shapes.csv"
    shapes.write_text(
        "op,m,k,n,batch,heads,tokens,head_dim\ngemm,64,64,64,,,,\nattention,,,,1,8,1024,64\nattention,,,,1,0,1024,64\n"
    )
    with pytest.raises(CalibrationError, match=r"line 4, heads"):
        predict_shapes(shapes, load_scenario("h100-nvlink-8").hardware.gpu, "bf16")


def test_optional_columns_default_when_blank_and_causal_reads_booleans(tmp_path):
    table = tmp_path / "gemms.csv"
    table.write_text("m,k,n,count,time_s\n64,64,64,,1e-5\n64,64,64,4,3e-5\n")
    assert import_table(table, "gemm", "bf16").rows["count"].tolist() == [1, 4]
    attention = tmp_path / "attention.csv"
    attention.write_text("batch,heads,tokens,head_dim,causal,time_s\n1,8,1024,64,true,1e-4\n1,8,1024,64,False,2e-4\n")
    assert import_table(attention, "attention", "bf16").rows["causal"].tolist() == [1, 0]


def test_an_imported_table_keeps_its_kernel_times_when_fitted_without_base(tmp_path):
    """The default base lends memory, fabric and node shape, never a host time to subtract from kernel times."""
    table = tmp_path / "gemms.csv"
    table.write_text(GEMMS)
    result = fit_trace(import_table(table, "gemm", "bf16"))
    assert result.cluster.gpu.host_overhead_per_op == 0 and "time per op is 0" in result.warnings[0]
