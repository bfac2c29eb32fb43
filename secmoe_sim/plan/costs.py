"""Per-op FLOP, memory-traffic and footprint counts, and parameters (an op's time: :mod:`.kernel_time`).

One multiply-add counts as 2 FLOP. Counts are per *sequence* of ``tokens`` tokens at ``width``
features unless said otherwise; the op graph (:mod:`secmoe_sim.plan.steps`) multiplies them by the
number of sequences a GPU works on, except the weights: one kernel over many sequences reads its
weights once (``weight_bytes``, the weight term of the traffic, is not multiplied; copies of an op
over several experts each read their own). Memory traffic counts bytes read plus bytes written
once each (no other cache reuse). Weights of norms and biases are left out of parameter counts (they are
O(d), against O(d^2) for the projections).

Formulas (``N`` tokens, ``C`` keys each attends to: ``N``, or the KV cache in decode; ``w`` width,
``h`` heads, ``f`` FFN multiplier, ``b`` bytes per element):

=================  ============================  ==========================================
op                 FLOPs                         memory traffic (bytes)
=================  ============================  ==========================================
qkv projection     ``2*3*N*w^2``                 ``(N*w + 3*w^2 + 3*N*w) * b``
attention scores   ``2*2*N*C*w`` (x1/2 causal)   flash: ``(2*N + 2*C)*w*b``; materialized: ``+ 4*h*N*C*b``
out projection     ``2*N*w^2``                   ``(2*N*w + w^2) * b``
FFN                ``2*2*f*N*w^2``               ``(2*N*w + 2*f*w^2 + 2*f*N*w) * b``
sequence reduce    ``N*w`` (mean pooling)        ``(N + N/r) * w * b``
upsample+residual  ``N*w`` (one add per element) ``(N/r + 2*N) * w * b``: read N/r, read N, write N
mixing projection  ``2*N*w^2``                   ``(2*N*w + w^2) * b``
router             ``2*N*w*E``                   ``(N*w + w*E + N*E) * b``
top-k              ``N*E`` comparisons           ``(N*E + 2*N*k) * b``
combine (sum)      ``N*k*w``                     ``(N*k*w + N*w) * b``
layer norm         ``5*N*w``                     ``2*N*w * b``: read and write
residual add       ``N*w``                       ``3*N*w * b``: read two, write one
activation (GELU)  ``8*N*f*w``                   ``2*N*f*w * b``
rotary (q and k)   ``6*N*w``                     ``5*N*w * b``: q and k read and written, cos/sin read
=================  ============================  ==========================================

A block is pre-norm: ``norm, qkv, [rotary], attention, out projection, residual`` and, with its FFN,
``norm, FFN GEMMs, activation, residual``. The elementwise ops are memory-bound; their labels
(``norm``, ``residual``, ``activation``, ``rotary``) say what they are in ``timeline.csv``. The
FLOP counts of the elementwise ops are per element: a norm's mean, variance, normalisation, scale
and shift; GELU's tanh approximation (a cube, two multiplies, an add, a tanh counted as 3, a multiply).
An op's backward counts twice its forward's FLOPs and traffic, fused attention's 2.5 times
(:func:`backward_factor`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from secmoe_sim.spec.units import CAUSAL_MASK_FRACTION, DTYPE_BYTES, FLOPS_PER_MULTIPLY_ADD
from secmoe_sim.spec.workload import Layer

ELEMENTWISE = "elementwise"  # the group of an expert's norms, residuals, activations and rotary
BACKWARD_GEMMS_PER_GEMM = 2  # a linear op's backward: the gradients with respect to its input and its weight
BACKWARD_FLOP_FACTOR = float(BACKWARD_GEMMS_PER_GEMM)  # each as many FLOPs as the forward GEMM
BACKWARD_SUFFIX = ".backward"  # an op's backward is named as its forward with this suffix
# Fused attention's backward: five matmuls against the forward's two, the scores recomputed, so 2.5x the
# forward's FLOPs (Dao 2023, "FlashAttention-2", section 3.2; the paper counts its backward this way).
ATTENTION_BACKWARD_FLOP_FACTOR = 2.5


def backward_factor(primitive: str) -> float:
    """FLOPs (and traffic) of an op's backward over its forward's: 2.5 for attention, 2 otherwise."""
    return ATTENTION_BACKWARD_FLOP_FACTOR if primitive == "attention" else BACKWARD_FLOP_FACTOR


def pass_factor(primitive: str, has_backward: bool) -> float:
    """An op's FLOPs (and traffic) in a pass over its forward's: 1, plus its backward's when the pass has one."""
    return 1 + (backward_factor(primitive) if has_backward else 0.0)


def pass_flops(kernels: list[Kernel], has_backward: bool) -> float:
    """FLOPs of ``kernels`` forward, and backward too when ``has_backward``."""
    return sum(k.flops * pass_factor(k.primitive, has_backward) for k in kernels)


@dataclass(frozen=True)
class Kernel:
    """One op of the layer on one GPU: a kernel, or ``launches`` identical kernels back to back.

    ``group`` names the cost-model term the op belongs to (``pre``, ``projection``, ``scores``,
    ``ffn``, ``router``, ``mix``), which is how the analytical model sums the simulated work.
    ``primitive`` and ``shape`` say which measurable primitive the op is (``gemm``: ``m, k, n``
    and ``count`` GEMMs of that shape; ``attention``: ``batch, heads, tokens, head_dim, causal``;
    ``memory``: ``bytes`` moved), so measured timings can replace the roofline estimate. The first
    shape entry is the one that grows with the data (rows, sequences, bytes).
    """

    name: str
    group: str
    flops: float
    traffic_bytes: float
    activation_bytes: float = 0.0
    workspace_bytes: float = 0.0
    launches: int = 1
    primitive: str = "memory"
    shape: tuple[tuple[str, float], ...] = ()
    is_backward: bool = False
    weight_bytes: float = 0.0  # the part of traffic_bytes that reads the op's weights
    saved_bytes: float = 0.0  # inputs the backward pass reads, kept from the forward (Korthikanti et al. 2022)
    cache_bytes: float = 0.0  # decode: the KV cache this op attends to, resident in memory

    def scaled(self, factor: float, weight_copies: float = 1.0) -> Kernel:
        """The same op over ``factor`` times as much data (more sequences in one kernel), whose weights
        are read once per copy: ``weight_copies`` distinct weight sets (experts run as one op), 1 by default."""
        shape = self.shape
        if shape:
            (first, value), *rest = shape
            shape = ((first, value * factor), *rest)
        activations = self.traffic_bytes - self.weight_bytes
        weights = self.weight_bytes * weight_copies
        return replace(
            self,
            flops=self.flops * factor,
            traffic_bytes=activations * factor + weights,
            weight_bytes=weights,
            activation_bytes=self.activation_bytes * factor,
            workspace_bytes=self.workspace_bytes * factor,
            saved_bytes=self.saved_bytes * factor,
            cache_bytes=self.cache_bytes * factor,
            shape=shape,
        )

    def sharded(self, parts: int) -> Kernel:
        """One of ``parts`` tensor-parallel shards: GEMM columns, attention heads or bytes split."""
        split = {"gemm": "n", "attention": "heads", "memory": "bytes"}[self.primitive]
        return replace(
            self,
            flops=self.flops / parts,
            traffic_bytes=self.traffic_bytes / parts,
            weight_bytes=self.weight_bytes / parts,
            activation_bytes=self.activation_bytes / parts,
            workspace_bytes=self.workspace_bytes / parts,
            saved_bytes=self.saved_bytes / parts,
            cache_bytes=self.cache_bytes / parts,
            shape=tuple((key, value / parts if key == split else value) for key, value in self.shape),
        )

    def backward(self) -> Kernel:
        """The backward op: :func:`backward_factor` times the FLOPs and traffic of the forward op."""
        factor = backward_factor(self.primitive)
        return replace(
            self,
            name=f"{self.name}{BACKWARD_SUFFIX}",
            flops=self.flops * factor,
            traffic_bytes=self.traffic_bytes * factor,
            weight_bytes=self.weight_bytes * factor,
            activation_bytes=0.0,
            saved_bytes=0.0,
            cache_bytes=0.0,
            is_backward=True,
        )

    def dims(self) -> dict[str, float]:
        """The primitive's shape as a dict."""
        return dict(self.shape)


# --- per-sequence op counts -------------------------------------------------------------------


def _gemm(m: float, k: float, n: float, count: int = 1) -> dict:
    return {"primitive": "gemm", "shape": (("m", m), ("k", k), ("n", n), ("count", count))}


def gemm_flops(m: float, k: float, n: float) -> float:
    """FLOPs of one GEMM ``(m, k) @ (k, n)``."""
    return FLOPS_PER_MULTIPLY_ADD * m * k * n


def gemm_traffic_bytes(m: float, k: float, n: float, b: int) -> float:
    """Bytes one GEMM moves: both operands read and the output written, once each."""
    return (m * k + k * n + m * n) * b


def attention_flops(tokens: float, context: float, width: float, causal: bool) -> float:
    """FLOPs of one sequence's attention, ``QK^T`` and ``PV`` over all heads; the causal mask halves them
    (:data:`CAUSAL_MASK_FRACTION`) only when queries and keys are the same tokens."""
    mask_fraction = CAUSAL_MASK_FRACTION if causal and context == tokens else 1.0
    return 2 * FLOPS_PER_MULTIPLY_ADD * tokens * context * width * mask_fraction


def attention_traffic_bytes(tokens: float, context: float, width: float, heads: float, materialized: bool, b: int) -> float:
    """Bytes one sequence's attention moves: Q read and O written, K and V read; with the scores
    materialized, four passes over the ``heads x tokens x context`` scores too (``QK^T`` written, read
    and written by the softmax, read for ``PV``)."""
    scores_passes = 4 * heads * tokens * context if materialized else 0.0
    return ((2 * tokens + 2 * context) * width + scores_passes) * b


def memory_op(
    name: str, group: str, flops: float, traffic_bytes: float, activation_bytes: float = 0.0, saved_bytes: float = 0.0
) -> Kernel:
    """A memory-bound op (norm, residual, activation, pooling, softmax, gather): timed by its bytes moved,
    the measurable ``memory`` primitive."""
    shape = (("bytes", traffic_bytes),)
    return Kernel(name, group, flops, traffic_bytes, activation_bytes, saved_bytes=saved_bytes, primitive="memory", shape=shape)


def linear(name: str, group: str, tokens: float, width: float, outputs: float, b: int) -> Kernel:
    """A ``tokens x width`` input times a ``width x outputs`` weight (one GEMM): it reads the input and
    its weights once, writes its output, and keeps its input for the backward."""
    return Kernel(
        name,
        group,
        gemm_flops(tokens, width, outputs),
        gemm_traffic_bytes(tokens, width, outputs, b),
        activation_bytes=tokens * outputs * b,
        weight_bytes=width * outputs * b,
        saved_bytes=tokens * width * b,
        **_gemm(tokens, width, outputs),
    )


def qkv_projection(tokens: float, width: float, b: int) -> Kernel:
    return linear("qkv", "projection", tokens, width, 3 * width, b)


def attention_scores(tokens: float, width: float, heads: int, layer: Layer, b: int, context: float | None = None) -> Kernel:
    """QK^T, softmax and the weighted sum over V, fused (flash) or with the score matrix written out.

    ``tokens`` queries attend to ``context`` keys (default: the queries themselves). In decode one
    query per sequence reads the whole KV cache (``2 context width`` values), which it holds as
    ``cache_bytes``; the causal mask halves the work only when queries and keys are the same tokens.
    """
    context = tokens if context is None else context
    materialized = layer.attention == "materialized"
    flops = attention_flops(tokens, context, width, layer.causal)
    traffic = attention_traffic_bytes(tokens, context, width, heads, materialized, b)
    scores_bytes = heads * tokens * context * b
    workspace = 0.0
    activation = tokens * width * b
    saved = 3 * tokens * width * b  # Q, K, V (fused attention recomputes the scores in its backward)
    if materialized:
        workspace = scores_bytes
        activation += scores_bytes
        saved += scores_bytes  # the softmax output
    shape: tuple[tuple[str, float], ...] = (
        ("batch", 1),
        ("heads", heads),
        ("tokens", tokens),
        ("head_dim", width / heads),
        ("causal", int(layer.causal and context == tokens)),  # a decode query sees every cached key: no mask
    )
    if context != tokens:
        shape += (("context", context),)
    if materialized:
        shape += (("materialized", 1),)
    return Kernel(
        "attention",
        "scores",
        flops,
        traffic,
        activation_bytes=activation,
        workspace_bytes=workspace,
        saved_bytes=saved,
        cache_bytes=2 * context * width * b if layer.decoding else 0.0,
        primitive="attention",
        shape=shape,
    )


def out_projection(tokens: float, width: float, b: int) -> Kernel:
    return linear("out_proj", "projection", tokens, width, width, b)


def ffn(tokens: float, width: float, multiplier: float, b: int, group: str = "ffn") -> Kernel:
    hidden = multiplier * width
    return Kernel(
        "ffn",
        group,
        2 * gemm_flops(tokens, width, hidden),  # (N, w) @ (w, h) and (N, h) @ (h, w): equal FLOPs and bytes
        2 * gemm_traffic_bytes(tokens, width, hidden, b),
        activation_bytes=(tokens * hidden + tokens * width) * b,
        workspace_bytes=tokens * hidden * b,
        weight_bytes=2 * width * hidden * b,
        saved_bytes=(tokens * width + tokens * hidden) * b,  # the inputs of both GEMMs
        **_gemm(tokens, width, hidden, count=2),
    )


def sequence_reduction(tokens: float, reduction: int, width: float, b: int) -> Kernel:
    traffic = (tokens + tokens / reduction) * width * b
    return memory_op("seq_reduce", "pre", tokens * width, traffic, activation_bytes=tokens / reduction * width * b)


def upsample_residual(tokens: float, reduction: int, width: float, b: int) -> Kernel:
    """``N / r`` outputs repeated ``r`` times back to ``N`` tokens and added to the ``N``-token residual."""
    traffic = (tokens / reduction + 2 * tokens) * width * b
    return memory_op("upsample_residual", "pre", tokens * width, traffic, activation_bytes=tokens * width * b)


def mixing_projection(tokens: float, width: float, b: int) -> Kernel:
    return linear("mix", "mix", tokens, width, width, b)


def router(tokens: float, width: float, num_experts: int, b: int) -> Kernel:
    return linear("router", "router", tokens, width, num_experts, b)


def top_k(tokens: float, num_experts: int, k: int, b: int) -> Kernel:
    traffic = (tokens * num_experts + 2 * tokens * k) * b
    return memory_op("top_k", "router", tokens * num_experts, traffic, saved_bytes=tokens * num_experts * b)


def combine(tokens: float, k: int, width: float, b: int) -> Kernel:
    traffic = (tokens * k * width + tokens * width) * b
    saved = (tokens * k * width + tokens * k) * b  # the expert outputs and the gates
    return memory_op("combine", "router", tokens * k * width, traffic, activation_bytes=tokens * width * b, saved_bytes=saved)


def layer_norm(tokens: float, width: float, b: int, group: str = "pre") -> Kernel:
    traffic = 2 * tokens * width * b
    return memory_op(
        "norm", group, 5 * tokens * width, traffic, activation_bytes=tokens * width * b, saved_bytes=tokens * width * b
    )


def residual_add(tokens: float, width: float, b: int, group: str = "pre") -> Kernel:
    traffic = 3 * tokens * width * b
    return memory_op("residual", group, tokens * width, traffic, activation_bytes=tokens * width * b)


def activation(tokens: float, hidden: float, b: int, group: str = "ffn") -> Kernel:
    traffic = 2 * tokens * hidden * b
    return memory_op(
        "activation", group, 8 * tokens * hidden, traffic, activation_bytes=tokens * hidden * b, saved_bytes=tokens * hidden * b
    )


def rotary(tokens: float, width: float, b: int, group: str = "pre") -> Kernel:
    traffic = 5 * tokens * width * b
    return memory_op("rotary", group, 6 * tokens * width, traffic)


def attention_sublayer(
    tokens: float,
    width: float,
    heads: int,
    layer: Layer,
    group: str,
    out_projection_too: bool = True,
    context: float | None = None,
) -> list[Kernel]:
    """Pre-norm attention on one sequence: norm, QKV, [rotary], attention over ``context`` keys
    (default: the tokens themselves), [out-projection], residual."""
    b = DTYPE_BYTES[layer.dtype]
    kernels = [layer_norm(tokens, width, b, group), qkv_projection(tokens, width, b)]
    if layer.rotary:
        kernels.append(rotary(tokens, width, b, group))
    kernels.append(attention_scores(tokens, width, heads, layer, b, context))
    if out_projection_too:
        kernels.append(out_projection(tokens, width, b))
    kernels.append(residual_add(tokens, width, b, group))
    return kernels


def ffn_sublayer(tokens: float, width: float, multiplier: float, b: int, group: str) -> list[Kernel]:
    """Pre-norm FFN on one sequence: norm, the two GEMMs, the activation between them, residual."""
    return [
        layer_norm(tokens, width, b, group),
        ffn(tokens, width, multiplier, b, group=group),
        activation(tokens, multiplier * width, b, group),
        residual_add(tokens, width, b, group),
    ]


def attention_block(
    tokens: float, width: float, heads: int, layer: Layer, with_ffn: bool, context: float | None = None
) -> list[Kernel]:
    """Full-width transformer block on one sequence: the attention sublayer, and the FFN one if asked.

    Elementwise ops carry the group ``pre`` (the FFN's ``ffn``); the caller regroups the block."""
    b = DTYPE_BYTES[layer.dtype]
    kernels = attention_sublayer(tokens, width, heads, layer, "pre", context=context)
    if with_ffn:
        kernels += ffn_sublayer(tokens, width, layer.ffn_multiplier, b, "ffn")
    return kernels


def expert_section(
    tokens: float,
    width: float,
    heads: int,
    layer: Layer,
    section_ffn: bool,
    out_projection_too: bool = True,
    context: float | None = None,
) -> list[Kernel]:
    """One expert on one sequence's section: norm, narrow QKV, attention, [out-projection], residual,
    and the FFN sublayer if asked. The GEMMs are the ``projection`` group (their total over E
    experts falls as 1/E), attention is ``scores`` and the elementwise ops ``elementwise`` (both
    constant in E: the sections together cover the full width)."""
    b = DTYPE_BYTES[layer.dtype]
    kernels = attention_sublayer(tokens, width, heads, layer, ELEMENTWISE, out_projection_too, context)
    if section_ffn:
        kernels += ffn_sublayer(tokens, width, layer.ffn_multiplier, b, ELEMENTWISE)
    return [replace(k, name=f"expert.{k.name}", group="projection" if k.primitive == "gemm" else k.group) for k in kernels]


def embedding_lookup(tokens: float, width: float, b: int) -> Kernel:
    """Rows of the ``V x d`` embedding gathered for ``tokens`` ids: a memory-bound copy (its backward adds
    the rows' gradients back, the same traffic twice)."""
    traffic = 2 * tokens * width * b
    return memory_op("embedding", "model", 0.0, traffic, activation_bytes=tokens * width * b)


def lm_head(tokens: float, width: float, vocabulary: float, b: int) -> Kernel:
    """The output projection to the vocabulary: a ``tokens x d x V`` GEMM."""
    return linear("lm_head", "model", tokens, width, vocabulary, b)


def cross_entropy(tokens: float, vocabulary: float, b: int) -> Kernel:
    """Softmax over the logits and the loss: memory-bound over ``tokens x V``; the logits are kept for the backward."""
    traffic = 2 * tokens * vocabulary * b
    return memory_op(
        "cross_entropy",
        "model",
        5 * tokens * vocabulary,
        traffic,
        activation_bytes=tokens * b,
        saved_bytes=tokens * vocabulary * b,
    )


# --- parameters --------------------------------------------------------------------------------


def attention_params(width: float) -> float:
    """Q, K, V and output projections."""
    return 4 * width**2


def ffn_params(width: float, multiplier: float) -> float:
    return 2 * multiplier * width**2
