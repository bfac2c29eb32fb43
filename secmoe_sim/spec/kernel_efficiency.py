"""How close a GEMM or a fused-attention kernel of a given *shape* comes to the GPU's peak FLOP/s.

A FLOPs-keyed efficiency (``GPU.efficiency_table``) cannot tell a skinny GEMM from a square one of
the same FLOPs, nor a 16-wide attention head from a 128-wide one of the same work; these models
can (docs/model.md, section 2.1). Both are products of saturating factors, each with one physical
reason, and a fixed device time per kernel:

GEMM ``(m, k) @ (k, n)``, ``F = 2 m k n`` FLOPs, ``d = min(m, k, n)``::

    efficiency = peak x d / (d + half_dim) x F / (F + half_flops)
                      x m / (m + half_m) x k / (k + half_k) x n / (n + half_n)

``d / (d + half_dim)``: a narrow dimension leaves the tensor-core tiles part empty (narrow ``m`` or
``n``) or the K loop too short to hide its prologue and epilogue (narrow ``k``);
``F / (F + half_flops)``: too little work to fill every multiprocessor (wave quantisation, averaged);
the per-dimension factors (0 by default: off) for libraries whose blocking penalises each dimension
on its own (a CPU's register blocking over rows, its K loop, its column panels). A fit uses either
the narrowest-dimension form or the per-dimension one (``calibrate.shape_fit``).

Fused attention over ``heads`` heads of width ``h`` and ``C`` keys, ``h`` padded up to the kernel's
``head_dim_granule`` (FlashAttention-2 runs widths below 32 in its 32-wide kernel)::

    efficiency = peak x h / pad(h) x pad(h) / (pad(h) + half_head_dim) x C / (C + half_context)

and a causal kernel computes the key blocks on or below the diagonal, ``1/2 + causal_block / (2 N)``
of the full score matrix, where the FLOP count (``plan.costs``) says ``1/2``.

The kernel time (:func:`secmoe_sim.plan.kernel_time.kernel_time_s`) is ``fixed_time + max(FLOPs /
(peak FLOP/s x efficiency), bytes / memory bandwidth)`` per kernel, so arithmetic intensity enters
through the memory term; an attention kernel takes at least ``batch x heads`` times the GPU's
``attention_floor_per_head``.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from secmoe_sim.spec.base import StrictModel
from secmoe_sim.spec.units import CAUSAL_MASK_FRACTION, FLOPS_PER_MULTIPLY_ADD, SECOND_FACTORS, Duration

MAX_SHAPE = 1e15  # elements or FLOPs: a bound that keeps a mistyped number out
MAX_FIXED_TIME_S = 10 * SECOND_FACTORS["ms"]  # a kernel's fixed cost above this is a unit typo (5 for 5 us), not a machine
Value = float | np.ndarray  # one shape, or an array of shapes (the calibration fit)


def _saturation(value: Value, half: float) -> Value:
    """``value / (value + half)``: 1/2 at ``half``, towards 1 far above it; 1 when ``half`` is 0 (no such effect)."""
    if half <= 0:
        return np.ones_like(value, dtype=float)
    return value / (value + half)


class GemmShapeEfficiency(StrictModel):
    """GEMM efficiency by shape; see the module docstring."""

    peak: float = Field(gt=0, le=1, description="fraction of peak FLOP/s that large, square GEMMs reach")
    half_dim: float = Field(
        ge=0, le=MAX_SHAPE, description="the smallest of m, k, n at which a GEMM reaches half of `peak` (elements)"
    )
    half_flops: float = Field(ge=0, le=MAX_SHAPE, description="FLOPs of one GEMM at which it reaches half its rate")
    half_m: float = Field(default=0.0, ge=0, le=MAX_SHAPE, description="rows m at which a GEMM reaches half (0: no such factor)")
    half_k: float = Field(default=0.0, ge=0, le=MAX_SHAPE, description="reduction length k at which it reaches half (0: none)")
    half_n: float = Field(default=0.0, ge=0, le=MAX_SHAPE, description="columns n at which it reaches half (0: none)")
    fixed_time: Duration = Field(
        default=0.0, le=MAX_FIXED_TIME_S, description="device time of one GEMM kernel on top of its work, seconds"
    )

    def efficiency(self, m: Value, k: Value, n: Value, batch: Value = 1.0) -> Value:
        """Fraction of peak FLOP/s one kernel of ``batch`` GEMMs ``(m, k) @ (k, n)`` reaches (a batched
        GEMM fills the device with all of its work; its tiles are as narrow as one GEMM's)."""
        flops = FLOPS_PER_MULTIPLY_ADD * m * k * n * batch
        narrowest = np.minimum(np.minimum(m, k), n)
        each = _saturation(m, self.half_m) * _saturation(k, self.half_k) * _saturation(n, self.half_n)
        return self.peak * _saturation(narrowest, self.half_dim) * _saturation(flops, self.half_flops) * each


class AttentionShapeEfficiency(StrictModel):
    """Fused-attention efficiency by head width, context length and the causal mask; see the module docstring."""

    peak: float = Field(gt=0, le=1, description="fraction of peak FLOP/s that wide heads over long contexts reach")
    head_dim_granule: int = Field(
        default=1, ge=1, le=1024, description="the kernel's head width step: narrower heads run padded up to it"
    )
    half_head_dim: float = Field(ge=0, le=MAX_SHAPE, description="padded head width at which a head reaches half of `peak`")
    half_context: float = Field(ge=0, le=MAX_SHAPE, description="keys per query at which a kernel reaches half of `peak`")
    causal_block: float = Field(
        default=0.0,
        ge=0,
        le=MAX_SHAPE,
        description="key block of a causal kernel (tokens): the diagonal blocks are computed whole",
    )
    fixed_time: Duration = Field(
        default=0.0, le=MAX_FIXED_TIME_S, description="device time of one attention kernel on top of its work, seconds"
    )

    def padded_head_dim(self, head_dim: Value) -> Value:
        return np.ceil(head_dim / self.head_dim_granule) * self.head_dim_granule

    def efficiency(self, head_dim: Value, tokens: Value, context: Value, causal: Value | bool) -> Value:
        """Fraction of peak FLOP/s of the counted FLOPs (causal: half the score matrix) one kernel reaches."""
        padded = self.padded_head_dim(head_dim)
        value = self.peak * head_dim / padded * _saturation(padded, self.half_head_dim) * _saturation(context, self.half_context)
        # of the score matrix, when causal: its triangle plus half of each diagonal block, at most all of it
        computed = CAUSAL_MASK_FRACTION + np.minimum(self.causal_block / (2.0 * tokens), 1.0 - CAUSAL_MASK_FRACTION)
        return value * np.where(causal, CAUSAL_MASK_FRACTION / computed, 1.0)
