"""A reference torch implementation of the sectional layer, to time on a real device.

It computes what :mod:`secmoe_sim.plan.steps` simulates for one device (docs/model.md), in eager
torch, forward only:

* optional pre-expert block at full width ``d``: fused QKV projection, scaled-dot-product
  attention over ``h`` heads, out-projection, optional FFN (``gelu``, ``pre_expert.ffn``), then mean
  pooling of every ``r`` tokens (sequence reduction ``N -> N/r``; ``causal_mean`` shifts the windows);
* ``E`` experts, one per section of width ``w = d / E``: expert ``e`` takes features
  ``[e w, (e+1) w)`` of every token and runs its own fused QKV projection, attention over
  ``max(1, h // E)`` heads, out-projection and optional FFN; experts run one after another (the
  simulator's ``grouped_kernels: false``);
* concatenation of the sections back to width ``d``; optional full-width mixing projection; with
  ``upsample``, each output repeated ``r`` times and the pre-expert block's output added back.

Norms, residuals and biases are left out, as in the cost model. Weights are random with
``1/sqrt(fan_in)`` scale so activations stay of order one in any dtype. torch is needed only when a
layer is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secmoe_sim.calibrate import require_torch
from secmoe_sim.spec.workload import Layer, SectionalMoEArchitecture


@dataclass
class _Block:
    """Weights of one attention block (and its FFN) at one width."""

    qkv: object
    out: object
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
        self.experts = [self._block(self.width, max(1, heads // num_experts), arch.section_ffn) for _ in range(num_experts)]
        self.mix = self._weight(d, d) if arch.mixing else None

    def _weight(self, fan_in: int, fan_out: int):
        return self.torch.randn(fan_in, fan_out, device=self.device, dtype=self.dtype) / math.sqrt(fan_in)

    def _block(self, width: int, heads: int, with_ffn: bool) -> _Block:
        hidden = int(self.layer.ffn_multiplier * width)
        return _Block(
            qkv=self._weight(width, 3 * width),
            out=self._weight(width, width),
            heads=heads,
            ffn_in=self._weight(width, hidden) if with_ffn else None,
            ffn_out=self._weight(hidden, width) if with_ffn else None,
        )

    def input(self):
        """A batch of the layer's input: ``(batch, seq_len, d_model)``."""
        layer = self.layer
        return self.torch.randn(layer.batch, layer.seq_len, layer.d_model, device=self.device, dtype=self.dtype)

    def _attention_block(self, x, block: _Block):
        torch = self.torch
        batch, tokens, width = x.shape
        qkv = torch.matmul(x, block.qkv)
        q, k, v = qkv.view(batch, tokens, 3, block.heads, width // block.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.layer.causal)
        y = torch.matmul(attended.transpose(1, 2).reshape(batch, tokens, width), block.out)
        if block.ffn_in is not None:
            y = torch.matmul(torch.nn.functional.gelu(torch.matmul(y, block.ffn_in)), block.ffn_out)
        return y

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
