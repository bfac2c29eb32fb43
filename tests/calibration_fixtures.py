"""Synthetic calibration traces generated from a known hardware model (no torch needed)."""

from __future__ import annotations

import numpy as np

from secmoe_sim.calibrate.trace import Trace, frame, make_row, row_kernel, sample_statistics
from secmoe_sim.plan.kernel_time import RooflineTimer
from secmoe_sim.spec.hardware import GPU
from secmoe_sim.spec.kernel_efficiency import AttentionShapeEfficiency, GemmShapeEfficiency

LAUNCH_S = 5e-6
BANDWIDTH = 2e11
PEAK = 1e12
ALPHA_S = 20e-6
BETA = 1e10
LOOP_OPS = 20
REPEATS = 25


def known_gpu() -> GPU:
    """The model the synthetic traces are generated from."""
    return GPU(
        name="synthetic",
        peak_flops={"fp32": PEAK},
        memory_bandwidth=BANDWIDTH,
        memory_capacity=1e10,
        kernel_launch_overhead=LAUNCH_S,
        compute_efficiency=0.9,
        gemm_shape_efficiency=GemmShapeEfficiency(peak=0.9, half_dim=24, half_flops=2e6, fixed_time=2e-6),
        attention_shape_efficiency=AttentionShapeEfficiency(
            peak=0.6, head_dim_granule=8, half_head_dim=16, half_context=64, causal_block=64, fixed_time=1e-6
        ),
    )


def _stats(time_s: float, rng: np.random.Generator, noise: float) -> dict:
    return sample_statistics(time_s * np.exp(noise * rng.standard_normal(REPEATS)))


def synthetic_trace(noise: float = 0.01, seed: int = 0, gpu: GPU | None = None) -> Trace:
    """GEMM, attention, memory, launch and all-to-all rows timed by the known model (or ``gpu``), with noise."""
    rng = np.random.default_rng(seed)
    gpu = gpu or known_gpu()
    timer = RooflineTimer(gpu, "fp32")
    rows = []

    def timed(op, primitive, **shape):
        row = make_row(op, primitive, "fp32", "cpu", {}, "synthetic", **shape)
        kernel = row_kernel(row)
        exact_s = timer.launch_time_s(kernel) + timer.kernel_time_s(kernel)
        return make_row(op, primitive, "fp32", "cpu", _stats(exact_s, rng, noise), "synthetic", **shape)

    for width in (16, 64, 256, 1024):
        for m in (64, 256, 1024, 4096):
            for k, n in ((width, width), (width, 3 * width)):
                if 2 * m * k * n <= 3e10:
                    rows.append(timed("mm", "gemm", m=m, k=k, n=n, count=1))
    for tokens in (64, 256, 1024):
        for head_dim in (4, 32, 128):
            for instances in (1, 8):
                for causal in (0, 1):
                    rows.append(
                        timed("sdpa", "attention", batch=instances, heads=1, tokens=tokens, head_dim=head_dim, causal=causal)
                    )
    for elements in (2**12, 2**16, 2**20, 2**24):
        rows.append(timed("copy", "memory", bytes=2 * 4 * elements))
    rows.append(
        make_row("tiny_add", "launch", "fp32", "cpu", _stats(LOOP_OPS * LAUNCH_S, rng, noise), "synthetic", count=LOOP_OPS)
    )
    for size in (16, 1024, 65536, 2**22, 2**24):
        rows.append(
            make_row(
                "all_to_all",
                "comm",
                "fp32",
                "cpu",
                _stats(ALPHA_S + size / BETA, rng, noise),
                "synthetic",
                path="gloo:loopback",
                bytes=size,
                world_size=2,
            )
        )
    metadata = {
        "device": "cpu",
        "device_name": "synthetic",
        "device_memory_bytes": 1e10,
        "comm_world_size": 2,
        "source": "synthetic",
        "created_at": "2026-01-01T00:00:00+00:00",
    }
    return Trace(rows=frame(rows), metadata=metadata)
