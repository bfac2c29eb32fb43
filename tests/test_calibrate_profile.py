"""The profiler importer on a trace recorded here with torch.profiler, and on a GPU-shaped trace."""

import json

import pytest

from secmoe_sim.calibrate.profile_import import import_profile
from secmoe_sim.calibrate.trace import TraceError
from secmoe_sim.cli import main

pytestmark = pytest.mark.slow  # torch, Dask or subprocesses: the full suite runs it, `-m "not slow"` does not

LOOPS = 3


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile

    a, b = torch.randn(64, 128), torch.randn(128, 256)
    linear = torch.nn.Linear(128, 32)
    q = torch.randn(2, 4, 64, 16)
    left, right = torch.randn(3, 8, 16), torch.randn(3, 16, 4)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as recorded:
        for _ in range(LOOPS):
            c = a @ b
            linear(a)
            torch.bmm(left, right)
            torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
            torch.softmax(c, -1)
            c + c
    path = tmp_path_factory.mktemp("profile") / "cpu.json"
    recorded.export_chrome_trace(str(path))
    return path


def test_cpu_profile_becomes_trace_rows(cpu_profile):
    trace = import_profile(cpu_profile)
    rows = trace.rows.set_index("op")
    assert trace.metadata["device"] == "cpu" and trace.metadata["source"] == "profile"
    assert rows.loc["mm", ["m", "k", "n", "count"]].tolist() == [64, 128, 256, 1]
    assert rows.loc["addmm", ["m", "k", "n"]].tolist() == [64, 128, 32]
    assert rows.loc["bmm", ["m", "k", "n", "count"]].tolist() == [8, 16, 4, 3]
    attention = trace.of("attention").iloc[0]
    assert attention[["batch", "heads", "tokens", "head_dim", "causal"]].tolist() == [2, 4, 64, 16, 1]
    assert rows.loc["_softmax", "bytes"] == 2 * 64 * 256 * 4 and rows.loc["add", "bytes"] == 3 * 64 * 256 * 4
    assert (trace.of("gemm")["repeats"] == LOOPS).all() and (trace.rows["dtype"] == "fp32").all()
    assert "matmul" not in rows.index and "linear" not in rows.index  # composites dispatch to counted ops


def _event(name, cat, ts, dur, external, **args):
    return {
        "ph": "X",
        "cat": cat,
        "name": name,
        "pid": 1,
        "tid": 1,
        "ts": ts,
        "dur": dur,
        "args": {"External id": external, **args},
    }


def test_gpu_profile_times_ops_by_their_kernels(tmp_path):
    bf16 = "c10::BFloat16"
    events = [
        _event("aten::linear", "cpu_op", 0, 50, 1, **{"Input Dims": [[64, 128], [32, 128], [32]], "Input type": [bf16] * 3}),
        _event(
            "aten::addmm",
            "cpu_op",
            5,
            40,
            2,
            **{"Input Dims": [[32], [64, 128], [128, 32], [], []], "Input type": [bf16, bf16, bf16, "Scalar", "Scalar"]},
        ),
        _event("cudaLaunchKernel", "cuda_runtime", 10, 6, 2, correlation=100),
        _event(
            "aten::_scaled_dot_product_flash_attention",
            "cpu_op",
            60,
            40,
            3,
            **{
                "Input Dims": [[2, 4, 128, 64]] * 3 + [[], [], [], []],
                "Input type": [bf16] * 3 + ["Scalar"] * 4,
                "Concrete Inputs": ["", "", "", "0.", "False", "False", ""],
            },
        ),
        _event("aten::_flash_attention_forward", "cpu_op", 65, 30, 4),
        _event("cudaLaunchKernel", "cuda_runtime", 70, 4, 4, correlation=101),
        _event("sm90_gemm_bf16", "kernel", 100, 20, 2, correlation=100),
        _event("flash_fwd_kernel", "kernel", 130, 30, 4, correlation=101),
        _event("orphan_kernel", "kernel", 170, 5, 99, correlation=102),
    ]
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps({"traceEvents": events, "deviceProperties": [{"name": "NVIDIA H200"}]}))
    trace = import_profile(path)
    rows = trace.rows.set_index("op")
    assert trace.metadata["device"] == "cuda" and trace.metadata["device_name"] == "NVIDIA H200"
    assert rows.loc["addmm", "median_s"] == pytest.approx(20e-6) and rows.loc["addmm", "dtype"] == "bf16"
    assert rows.loc["_scaled_dot_product_flash_attention", "median_s"] == pytest.approx(30e-6)
    assert rows.loc["_scaled_dot_product_flash_attention", "causal"] == 0
    assert rows.loc["cudaLaunchKernel", "primitive"] == "launch" and rows.loc["cudaLaunchKernel", "median_s"] == pytest.approx(
        5e-6
    )
    assert trace.metadata["kernels_unattributed"] == 1


def test_import_profile_command(cpu_profile, tmp_path, capsys):
    out = tmp_path / "imported.parquet"
    assert main(["import-profile", str(cpu_profile), "--out", str(out)]) == 0
    assert out.is_file() and "imported" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [("{", "not a JSON Chrome trace"), ("[]", "no traceEvents"), ('{"traceEvents": []}', "record_shapes=True")],
)
def test_bad_profiles_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(TraceError, match=message):
        import_profile(path)
    assert main(["import-profile", str(path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
