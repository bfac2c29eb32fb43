"""An op's time on a GPU: the roofline estimate, its terms, and the host's time to issue it.

``time = launches x host time per launch`` on the host, and on the device
``max(fixed time + max(FLOPs / (peak x efficiency(shape)), bytes / memory bandwidth), floor)``: the
efficiency and fixed time of GEMMs and attention from the GPU's shape models
(:mod:`secmoe_sim.spec.kernel_efficiency`) when it has them, else its efficiency table; the floor is
attention's per-head floor. The counts the time is taken of are :mod:`.costs`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from secmoe_sim.plan.costs import BACKWARD_GEMMS_PER_GEMM, Kernel
from secmoe_sim.spec.hardware import GPU
from secmoe_sim.spec.units import CAUSAL_MASK_FRACTION

MATERIALIZED_ATTENTION_GEMMS = 2  # the math path's batched GEMMs: Q K^T and P V


class KernelTimer(Protocol):
    """Where op times come from: the roofline estimate, or measured timings replayed."""

    def kernel_time_s(self, kernel: Kernel) -> float:
        """Execution time of all of a kernel's launches, launch overhead excluded."""

    def launch_time_s(self, kernel: Kernel) -> float:
        """Host time to issue all of a kernel's launches (framework dispatch and driver launch)."""


@dataclass(frozen=True)
class RooflineTimer:
    """The cost model's own timing: roofline execution, and the host's issue time per launch."""

    gpu: GPU
    dtype: str

    def kernel_time_s(self, kernel: Kernel) -> float:
        return kernel_time_s(kernel, self.gpu, self.dtype)

    def launch_time_s(self, kernel: Kernel) -> float:
        return launch_time_s(kernel, self.gpu)


@dataclass(frozen=True)
class KernelTerms:
    """The terms of an op's roofline time (seconds): ``max(fixed + max(compute, memory), floor)``."""

    compute_s: float
    memory_s: float
    fixed_s: float = 0.0
    floor_s: float = 0.0

    @property
    def time_s(self) -> float:
        return max(self.fixed_s + max(self.compute_s, self.memory_s), self.floor_s)

    @property
    def bound(self) -> str:
        """Which term decides the time: ``compute``, ``memory``, ``fixed`` (the kernels' fixed time exceeds
        their work) or ``floor`` (attention's per-head floor)."""
        if self.floor_s > self.fixed_s + max(self.compute_s, self.memory_s):
            return "floor"
        if self.fixed_s > max(self.compute_s, self.memory_s):
            return "fixed"
        return "compute" if self.compute_s >= self.memory_s else "memory"


def kernel_time_s(kernel: Kernel, gpu: GPU, dtype: str) -> float:
    """Roofline time of a kernel, launch overhead excluded (:func:`kernel_terms`)."""
    return kernel_terms(kernel, gpu, dtype).time_s


def kernel_terms(kernel: Kernel, gpu: GPU, dtype: str) -> KernelTerms:
    """The terms of a kernel's roofline time, launch overhead excluded.

    ``max(FLOPs / (peak * efficiency), bytes / memory bandwidth)``. The efficiency of a GEMM, and of
    an attention, comes from the GPU's shape models when it has them (:func:`shape_priced`, which
    adds the kernels' fixed time); otherwise it is looked up at the FLOPs of one launch (``flops /
    launches``) in the GPU's table (attention: its attention table when it has one). An attention
    kernel takes at least ``batch x heads`` times the GPU's ``attention_floor_per_head``.
    """
    priced = shape_priced(kernel, gpu)
    if priced is None:
        fixed_s, efficiency = 0.0, gpu.efficiency(kernel.flops / kernel.launches, kernel.primitive)
    else:
        fixed_s, efficiency = priced
    floor_s = 0.0
    if kernel.primitive == "attention" and gpu.attention_floor_per_head > 0:
        dims = kernel.dims()
        floor_s = dims.get("batch", 1.0) * dims.get("heads", 1.0) * gpu.attention_floor_per_head
    return KernelTerms(
        compute_s=kernel.flops / (gpu.peak_for(dtype) * efficiency) if kernel.flops > 0 else 0.0,  # an expert no token chose
        memory_s=kernel.traffic_bytes / gpu.memory_bandwidth,
        fixed_s=fixed_s,
        floor_s=floor_s,
    )


def shape_priced(kernel: Kernel, gpu: GPU) -> tuple[float, float] | None:
    """The fixed time of the op's kernels and their efficiency by the GPU's shape models, or None when
    no shape model covers the op.

    The op runs as identical kernels: its launches, times the GEMMs of each (an FFN's two; a GEMM
    backward's two, grad-input and grad-weight, of the same narrowest dimension and FLOPs). Each
    pays the model's ``fixed_time``; the efficiency is evaluated at one kernel's shape. Materialized
    attention takes the GPU's model of the math path when it has one (a calibration measured it);
    otherwise it runs as the math path does, two batched GEMMs, ``Q K^T`` and ``P V``, over every head
    (the whole score matrix, masked or not) and a softmax whose bytes are in the traffic, priced by
    the GEMM model.
    """
    dims = kernel.dims()
    gemm = gpu.gemm_shape_efficiency
    if kernel.primitive == "gemm" and gemm is not None:
        gemms = dims.get("count", 1.0) * (BACKWARD_GEMMS_PER_GEMM if kernel.is_backward else 1.0)
        efficiency = float(gemm.efficiency(dims["m"] / kernel.launches, dims["k"], dims["n"]))
        return kernel.launches * gemms * gemm.fixed_time, efficiency
    if kernel.primitive != "attention":
        return None
    tokens = dims["tokens"]
    context = dims.get("context", tokens)
    if dims.get("materialized"):
        measured = gpu.materialized_attention_shape_efficiency
        if measured is not None:
            efficiency = float(measured.efficiency(dims["head_dim"], tokens, context, bool(dims.get("causal"))))
            return kernel.launches * measured.fixed_time, efficiency
        if gemm is None:
            return None
        instances = dims["batch"] * dims["heads"] / kernel.launches
        efficiency = float(gemm.efficiency(tokens, dims["head_dim"], context, instances))
        # causal: the FLOP count is CAUSAL_MASK_FRACTION of the scores, the GEMMs compute them all and mask
        causal_share = CAUSAL_MASK_FRACTION if dims.get("causal") else 1.0
        return kernel.launches * MATERIALIZED_ATTENTION_GEMMS * gemm.fixed_time, efficiency * causal_share
    fused = gpu.attention_shape_efficiency
    if fused is None:
        return None
    return kernel.launches * fused.fixed_time, float(
        fused.efficiency(dims["head_dim"], tokens, context, bool(dims.get("causal")))
    )


def launch_time_s(kernel: Kernel, gpu: GPU) -> float:
    """Host time to issue all of a kernel's launches: per launch, the framework's dispatch and the driver's launch."""
    return kernel.launches * host_time_per_launch_s(gpu)


def host_time_per_launch_s(gpu: GPU) -> float:
    """The host's time to issue one op: ``host_overhead_per_op + kernel_launch_overhead``."""
    return gpu.host_overhead_per_op + gpu.kernel_launch_overhead
