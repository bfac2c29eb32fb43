"""A reference torch implementation of the sectional layer, to time on a real device.

It computes what :mod:`secmoe_sim.plan.steps` simulates for one device (docs/model.md), in eager
torch, forward only:

* optional pre-expert block at full width ``d``, pre-norm as the cost model's blocks
  (``plan.costs.attention_sublayer``, ``ffn_sublayer``): layer norm, fused QKV projection, rotary
  embedding of queries and keys (``layer.rotary``), scaled-dot-product attention over ``h`` heads,
  out-projection, residual add; with ``pre_expert.ffn`` a layer norm, the FFN (``gelu``) and a
  residual add; then mean pooling of every ``r`` tokens (sequence reduction ``N -> N/r``;
  ``causal_mean`` shifts the windows);
* ``E`` experts, one per section of width ``w = d / E``: expert ``e`` takes features
  ``[e w, (e+1) w)`` of every token and runs the same block at width ``w`` over ``max(1, h // E)``
  heads, without its out-projection when ``section_out_projection`` is false; experts run one after
  another (the simulator's ``grouped_kernels: false``);
* concatenation of the sections back to width ``d``; optional full-width mixing projection; with
  ``upsample``, each output repeated ``r`` times and the pre-expert block's output added back.

Attention takes torch's default fused path, or the math path (scores written out) when the layer
says ``attention: materialized``. Norms have no affine weights and projections no biases, as in the
cost model. Weights are random with ``1/sqrt(fan_in)`` scale so activations stay of order one in any
dtype. torch is needed only when a layer is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secmoe_sim.calibrate import require_torch
from secmoe_sim.spec.workload import Layer, SectionalMoEArchitecture

ROTARY_BASE = 10000.0  # the angle base of rotary embeddings (Su et al. 2021, RoFormer)


@dataclass
class _Block:
    """Weights of one attention block (and its FFN) at one width."""

    qkv: object
    out: object | None
    heads: int
    ffn_in: object = None
    ffn_out: object = None


class SectionalLayer:
    """The sectional layer with ``num_experts`` sections, on one device, in one dtype."""

    def __init__(self, layer: Layer, arch: SectionalMoEArchitecture, num_experts: int, device, dtype):
        self.torch = require_torch()
        self.layer, self.arch, self.num_experts = layer, arch, num_experts
        self.device, self.dtype = device, dtype
        d, heads = layer.d_model, layer.heads
        self.width = d // num_experts
        self.pre = self._block(d, heads, arch.pre_expert.ffn) if arch.pre_expert.enabled else None
        self.reduction = arch.pre_expert.sequence_reduction if arch.pre_expert.enabled else 1
        expert_heads = max(1, heads // num_experts)
        self.experts = [
            self._block(self.width, expert_heads, arch.section_ffn, arch.section_out_projection) for _ in range(num_experts)
        ]
        self.mix = self._weight(d, d) if arch.mixing else None

    def _weight(self, fan_in: int, fan_out: int):
        return self.torch.randn(fan_in, fan_out, device=self.device, dtype=self.dtype) / math.sqrt(fan_in)

    def _block(self, width: int, heads: int, with_ffn: bool, out_projection: bool = True) -> _Block:
        hidden = int(self.layer.ffn_multiplier * width)
        return _Block(
            qkv=self._weight(width, 3 * width),
            out=self._weight(width, width) if out_projection else None,
            heads=heads,
            ffn_in=self._weight(width, hidden) if with_ffn else None,
            ffn_out=self._weight(hidden, width) if with_ffn else None,
        )

    def input(self):
        """A batch of the layer's input: ``(batch, seq_len, d_model)``."""
        layer = self.layer
        return self.torch.randn(layer.batch, layer.seq_len, layer.d_model, device=self.device, dtype=self.dtype)

    def _attention_block(self, x, block: _Block):
        """The pre-norm block of ``plan.costs.attention_sublayer`` (and ``ffn_sublayer``) on ``x``."""
        torch = self.torch
        batch, tokens, width = x.shape
        qkv = torch.matmul(torch.nn.functional.layer_norm(x, (width,)), block.qkv)
        q, k, v = qkv.view(batch, tokens, 3, block.heads, width // block.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.layer.rotary:
            q, k = self._rotated(q), self._rotated(k)
        attended = self._attention(q, k, v).transpose(1, 2).reshape(batch, tokens, width)
        y = x + (torch.matmul(attended, block.out) if block.out is not None else attended)
        if block.ffn_in is not None:
            hidden = torch.nn.functional.gelu(torch.matmul(torch.nn.functional.layer_norm(y, (width,)), block.ffn_in))
            y = y + torch.matmul(hidden, block.ffn_out)
        return y

    def _attention(self, q, k, v):
        """Scaled-dot-product attention on torch's default path, or the math path for ``materialized``."""
        attend = self.torch.nn.functional.scaled_dot_product_attention
        if self.layer.attention == "materialized":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.MATH):
                return attend(q, k, v, is_causal=self.layer.causal)
        return attend(q, k, v, is_causal=self.layer.causal)

    def _rotated(self, x):
        """Rotary position embedding of ``x`` (batch, heads, tokens, head_dim): pairs of features rotated by
        position-dependent angles (the ``rotary`` op of the cost model)."""
        torch = self.torch
        tokens, head_dim = x.shape[-2], x.shape[-1]
        half = head_dim // 2
        frequencies = ROTARY_BASE ** (-torch.arange(half, device=x.device, dtype=torch.float32) / max(half, 1))
        angles = torch.arange(tokens, device=x.device, dtype=torch.float32)[:, None] * frequencies[None, :]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        first, second = x[..., :half], x[..., half : 2 * half]
        rotated = torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
        return rotated if 2 * half == head_dim else torch.cat([rotated, x[..., 2 * half :]], dim=-1)

    def _pooled(self, x):
        """``N -> N / r``: the mean of every window of ``r`` tokens; ``causal_mean`` windows end at the pooled
        position (shifted by ``r - 1``, the first window zero-padded), so no later token leaks backwards."""
        batch, tokens, width = x.shape
        r = self.reduction
        if self.arch.pre_expert.pooling == "causal_mean":
            x = self.torch.nn.functional.pad(x, (0, 0, r - 1, 0))[:, :tokens]
        return x.reshape(batch, tokens // r, r, width).mean(dim=2)

    def forward(self, x):
        """The layer's output for input ``x`` of shape ``(batch, seq_len, d_model)``."""
        residual = None
        if self.pre is not None:
            x = residual = self._attention_block(x, self.pre)
            if self.reduction > 1:
                x = self._pooled(x)
        w = self.width
        sections = [self._attention_block(x[..., e * w : (e + 1) * w], block) for e, block in enumerate(self.experts)]
        y = self.torch.cat(sections, dim=-1)
        if self.mix is not None:
            y = self.torch.matmul(y, self.mix)
        if residual is not None and self.arch.pre_expert.upsample:
            y = y.repeat_interleave(self.reduction, dim=1) + residual
        return y
