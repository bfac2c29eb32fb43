"""Workload descriptions: the layer's dimensions and the architectures to compare on it.

Architectures are a discriminated union on ``kind``: ``dense``, ``token_moe`` and
``sectional_moe``. Each entry may carry a ``label`` so two entries of one kind stay distinct. The
rules of placement (which expert counts fit which cluster) live in :mod:`secmoe_sim.spec.placement`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from secmoe_sim.spec.base import FieldIssue, Name, StrictModel
from secmoe_sim.spec.hardware import Dtype

MAX_WIDTH = 2**20  # bounds that keep a mistyped number from asking for an endless simulation
MAX_TOKENS = 2**24
MAX_EXPERTS = 2**16
MAX_BLOCKS = 64


class Layer(StrictModel):
    """Dimensions and numerical options shared by every architecture of a scenario."""

    d_model: int = Field(ge=1, le=MAX_WIDTH, description="model width d")
    seq_len: int = Field(ge=1, le=MAX_TOKENS, description="tokens per sequence N")
    batch: int = Field(ge=1, le=MAX_TOKENS, description="sequences B in the whole cluster; whole sequences per GPU")
    heads: int = Field(ge=1, le=MAX_WIDTH, description="attention heads h of the full-width attention")
    dtype: Dtype = Field(default="bf16", description="compute dtype (weights, activations)")
    comm_dtype: Dtype | None = Field(default=None, description="dtype on the wire; defaults to dtype")
    ffn_multiplier: float = Field(default=4.0, gt=0, le=64, description="FFN hidden width = ffn_multiplier * width")
    ffn: bool = Field(default=True, description="the full-width blocks (dense, pre-expert, token-MoE attention) include an FFN")
    causal: bool = Field(default=False, description="causal mask: half of the score matrix is computed")
    rotary: bool = Field(default=False, description="rotary position embedding applied to queries and keys (an elementwise op)")
    attention: Literal["flash", "materialized"] = Field(
        default="flash", description="flash: no N^2 score matrix in memory; materialized: scores written and read"
    )
    passes: Literal["forward", "forward_backward", "training_step", "decode"] = Field(
        default="forward",
        description="forward: one forward pass over N tokens (a prefill); forward_backward: then the backward "
        "(2x FLOPs, collectives in reverse); training_step: a whole model's training step (needs `model`: every "
        "layer forward and backward, gradient sync, optimizer); decode: one new token per sequence against a KV "
        "cache of kv_cache_length tokens (needs `model`)",
    )
    kv_cache_length: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="decode: tokens already in each sequence's KV cache (default seq_len)"
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Layer:
        if self.d_model % self.heads:
            raise FieldIssue(("heads",), f"heads ({self.heads}) must divide d_model ({self.d_model})")
        return self

    @property
    def wire_dtype(self) -> str:
        return self.comm_dtype or self.dtype

    @property
    def has_backward(self) -> bool:
        """Whether each layer runs its backward pass (forward_backward, and every layer of a training step)."""
        return self.passes in ("forward_backward", "training_step")

    @property
    def training_step(self) -> bool:
        """Whether the pass is a whole training step (a model's gradients synchronised, its optimizer run)."""
        return self.passes == "training_step"

    @property
    def decoding(self) -> bool:
        return self.passes == "decode"

    @property
    def query_tokens(self) -> int:
        """Tokens of each sequence a layer computes: one new token in decode, else all ``N``."""
        return 1 if self.decoding else self.seq_len

    def tokens_after(self, reduction: int) -> float:
        """Tokens of each sequence a block after a sequence reduction by ``reduction`` computes: ``N / r``,
        or the one new token in decode (a decode step has no sequence to pool)."""
        return self.query_tokens if self.decoding else self.seq_len / reduction

    def pools(self, reduction: int) -> bool:
        """Whether a sequence reduction by ``reduction`` pools anything: ``r > 1``, and never in decode."""
        return reduction > 1 and not self.decoding

    @property
    def context_length(self) -> int:
        """Tokens each query attends to: the KV cache in decode (default ``N``), else the sequence itself."""
        return (self.kv_cache_length or self.seq_len) if self.decoding else self.seq_len


Pooling = Literal["mean", "causal_mean"]
Placement = Literal["replicated", "node_local", "spread"]
PLACEMENTS: tuple[Placement, ...] = ("replicated", "node_local", "spread")


class DenseArchitecture(StrictModel):
    """Baseline: ``blocks`` full-width transformer blocks (attention + FFN), optionally tensor-parallel.

    ``blocks: 2`` has the sectional layer's attention count; with ``sequence_reduction: r`` the
    blocks after the first run over ``N / r`` tokens (a funnel pair), which is the sectional layer
    at ``E = 1`` without its split: the fair reference for what sectioning buys.
    """

    kind: Literal["dense"]
    label: Name | None = None
    tensor_parallel: int = Field(
        default=1, ge=1, le=MAX_EXPERTS, description="GPUs sharing one sequence's layer (Megatron-style)"
    )
    blocks: int = Field(default=1, ge=1, le=MAX_BLOCKS, description="full-width blocks applied one after another")
    sequence_reduction: int = Field(
        default=1,
        ge=1,
        le=MAX_TOKENS,
        description="r: blocks after the first run over N / r tokens (a funnel); needs blocks >= 2",
    )
    pooling: Pooling = Field(default="mean", description="how the sequence is shortened (see pre_expert.pooling)")
    upsample: bool = Field(
        default=False, description="upsample the N / r outputs back to N tokens and add the first block's output (residual)"
    )

    @model_validator(mode="after")
    def _funnel_needs_two_blocks(self) -> DenseArchitecture:
        if self.sequence_reduction > 1 and self.blocks < 2:
            raise FieldIssue(("sequence_reduction",), "a funnel needs blocks >= 2 (the reduction happens after the first block)")
        return self

    @property
    def name(self) -> str:
        return self.label or self.kind


class UniformRouting(StrictModel):
    """Each token picks ``top_k`` distinct experts uniformly at random."""

    kind: Literal["uniform"]


class ZipfRouting(StrictModel):
    """Expert popularity falls as ``1 / rank^exponent`` (exponent 0 is uniform); ``top_k`` distinct per token."""

    kind: Literal["zipf"]
    exponent: float = Field(ge=0, le=10)
    shuffle_ranks: bool = Field(default=True, description="popular experts drawn at random (seeded), not experts 0, 1, ...")


class GroupedRouting(StrictModel):
    """DeepSeek-style: experts split into ``groups`` (by default one per node); each token first picks
    ``top_groups`` groups, then ``top_k`` distinct experts inside them, uniformly."""

    kind: Literal["grouped"]
    groups: int | None = Field(default=None, ge=1, le=MAX_EXPERTS, description="expert groups; default one per node")
    top_groups: int = Field(ge=1, le=MAX_EXPERTS)


MAX_TOKEN_COUNT = 1e15  # a measured count beyond this is not a token count (and its sum would overflow)


class CountsRouting(StrictModel):
    """Measured per-expert token counts (inline, or ``file:`` a text file of numbers beside the scenario),
    used as relative loads: scaled to the layer's tokens x top_k, deterministic."""

    kind: Literal["counts"]
    counts: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _loads_valid(self) -> CountsRouting:
        for position, count in enumerate(self.counts):
            if not (0 <= count <= MAX_TOKEN_COUNT):
                raise FieldIssue(
                    ("counts", position), f"a token count must be a number from 0 to {MAX_TOKEN_COUNT:g}, got {count}"
                )
        if sum(self.counts) <= 0:
            raise FieldIssue(("counts",), "the counts sum to zero")
        return self


Routing = Annotated[UniformRouting | ZipfRouting | GroupedRouting | CountsRouting, Field(discriminator="kind")]


class TokenMoEArchitecture(StrictModel):
    """Baseline: full-width attention, then a router sends each token to top_k expert FFNs."""

    kind: Literal["token_moe"]
    label: Name | None = None
    num_experts: int = Field(ge=1, le=MAX_EXPERTS)
    top_k: int = Field(default=2, ge=1, le=MAX_EXPERTS)
    capacity_factor: float = Field(
        default=1.25, gt=0, le=1024, description="expert capacity = capacity_factor * top_k * tokens / num_experts"
    )
    routing: Routing = Field(default=UniformRouting(kind="uniform"), description="how tokens choose experts")
    overlap_degree: int = Field(
        default=1,
        ge=1,
        le=64,
        description="chunks of dispatch -> expert FFN -> combine overlapped on the compute and communication streams "
        "(Tutel's a2a_ffn_overlap_degree); 1 is no overlap",
    )
    expert_ffn_multiplier: float | None = Field(
        default=None,
        gt=0,
        le=64,
        description="hidden width of each expert's FFN over d (default: layer.ffn_multiplier); ffn_multiplier / top_k "
        "gives the dense layer's active parameters per token",
    )

    @model_validator(mode="after")
    def _top_k_fits(self) -> TokenMoEArchitecture:
        if self.top_k > self.num_experts:
            raise FieldIssue(("top_k",), f"top_k ({self.top_k}) exceeds num_experts ({self.num_experts})")
        routing = self.routing
        if isinstance(routing, CountsRouting) and len(routing.counts) != self.num_experts:
            raise FieldIssue(("routing", "counts"), f"{len(routing.counts)} counts for {self.num_experts} experts")
        if isinstance(routing, GroupedRouting):
            groups = routing.groups
            if groups is not None and self.num_experts % groups:
                raise FieldIssue(("routing", "groups"), f"{groups} groups do not split {self.num_experts} experts evenly")
            if groups is not None and routing.top_groups > groups:
                raise FieldIssue(("routing", "top_groups"), f"top_groups ({routing.top_groups}) exceeds groups ({groups})")
        return self

    @property
    def name(self) -> str:
        return self.label or self.kind


class PreExpertBlock(StrictModel):
    """The full-width transformer layer before the experts, which shortens the sequence N -> N/r.

    What the layer outputs (docs/model.md, "Sequence reduction"): ``N / r`` tokens, unless
    ``upsample`` repeats each expert output ``r`` times and adds the pre-expert block's output, so the
    layer keeps ``N`` tokens and can stand in a decoder stack. ``pooling: mean`` averages tokens
    ``j r .. j r + r - 1`` into pooled token ``j``, so in a causal model a pooled position sees up to
    ``r - 1`` later tokens; ``causal_mean`` averages ``j r - r + 1 .. j r`` (the first window padded),
    so nothing a pooled token carries lies after the first position it is upsampled to. Both cost the
    same memory-bound pass.
    """

    enabled: bool = True
    sequence_reduction: int = Field(default=1, ge=1, le=MAX_TOKENS, description="r: the experts see N' = N / r tokens")
    ffn: bool = Field(
        default=True,
        description="the pre-expert block has an FFN after its attention (independent of layer.ffn, which is the baselines')",
    )
    pooling: Pooling = Field(default="mean", description="mean: windows j r .. j r + r - 1; causal_mean: windows ending at j r")
    upsample: bool = Field(
        default=False,
        description="repeat each expert output r times and add the pre-expert output (residual): the layer outputs N tokens",
    )


class SectionalMoEArchitecture(StrictModel):
    """The paper's layer: each token's embedding is cut into E sections, one per expert."""

    kind: Literal["sectional_moe"]
    label: Name | None = None
    experts: list[int] | Literal["all_feasible"] = Field(
        default="all_feasible", description="expert counts E to simulate, or every feasible E"
    )
    pre_expert: PreExpertBlock = PreExpertBlock()
    section_ffn: bool = Field(default=False, description="each expert has an FFN on its section")
    section_out_projection: bool = Field(
        default=True, description="each expert projects its attention output (w x w); false: the heads' outputs are its output"
    )
    mixing: bool = Field(default=False, description="a full-width projection after the gather mixes sections")
    min_section_width: int = Field(default=64, ge=1, le=MAX_WIDTH, description="smallest allowed d / E")
    sweep_mode: Literal["fixed_cluster", "expert_per_gpu"] = "fixed_cluster"
    coalesce_messages: bool = Field(
        default=True, description="E > G: sections bound for one GPU travel as one message (all-to-all-v style)"
    )
    grouped_kernels: bool = Field(
        default=True, description="a GPU's local experts run as one grouped kernel per op, not one kernel per expert"
    )
    overlap_degree: int = Field(
        default=1,
        ge=1,
        le=64,
        description="chunks of scatter -> experts -> gather overlapped on the compute and communication streams, "
        "as token MoE's overlap_degree; 1 is no overlap",
    )
    placement: Placement | Literal["all"] = Field(
        default="all",
        description="where the experts run: replicated (every token owner runs all its experts, nothing is sent), "
        "node_local (groups of min(E, gpus_per_node) GPUs, never across a node), spread (groups of min(E, G) "
        "consecutive GPUs); all: one row per placement",
    )

    @property
    def placements(self) -> tuple[Placement, ...]:
        """The placements to simulate, in a fixed order."""
        return PLACEMENTS if self.placement == "all" else (self.placement,)

    @model_validator(mode="after")
    def _experts_listed_once(self) -> SectionalMoEArchitecture:
        if isinstance(self.experts, list):
            if not self.experts:
                raise FieldIssue(("experts",), "experts must list at least one expert count, or be 'all_feasible'")
            for position, count in enumerate(self.experts):
                if not 1 <= count <= MAX_EXPERTS:
                    raise FieldIssue(("experts", position), f"expert counts must be between 1 and {MAX_EXPERTS}")
            if len(set(self.experts)) != len(self.experts):
                raise FieldIssue(("experts",), "expert counts must not repeat")
        return self

    @property
    def name(self) -> str:
        return self.label or self.kind


Architecture = Annotated[DenseArchitecture | TokenMoEArchitecture | SectionalMoEArchitecture, Field(discriminator="kind")]


class Workload(StrictModel):
    """One layer and the architectures to simulate on it."""

    layer: Layer
    architectures: list[Architecture] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_unique(self) -> Workload:
        names = [arch.name for arch in self.architectures]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FieldIssue(("architectures",), f"architecture entries need distinct labels; repeated: {', '.join(duplicates)}")
        return self
