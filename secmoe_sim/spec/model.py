"""The optional ``model`` section: a whole model built from the scenario's layer, for a training or serving step.

``layers`` transformer layers, of which some are the entry being compared (every layer, every
``sectional_every``-th one, or an explicit list) and the rest ``other_layers`` (a dense block of
the same dimensions, or the scenario's token-MoE entry); a vocabulary for the embedding and the LM
head; what a sequence reduction does to the layers after it; and the training options (optimizer,
activation recomputation, how gradients are synchronised and in what buckets). The step itself is
composed in :mod:`secmoe_sim.analysis.model_step` (docs/model.md, section 10).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from secmoe_sim.spec.base import FieldIssue, StrictModel
from secmoe_sim.spec.units import DTYPE_BYTES, SIZE_UNITS, Size

MAX_LAYERS = 1024
MAX_VOCABULARY = 2**22

# Bytes of optimizer state and fp32 master weights per parameter, held beside the 16-bit weights and
# gradients (mixed precision; Rajbhandari et al. 2020, "ZeRO", section 3.1: Adam keeps 4 + 4 + 4 = 12).
OPTIMIZER_STATE_BYTES = {"sgd": 8.0, "adam": 12.0, "adam_8bit": 6.0}  # sgd: master + momentum; adam_8bit: 1-byte moments
# Bytes the optimizer step reads and writes per parameter: the fp32 master and every state read and
# written, the 16-bit gradient read and the 16-bit weight written (a memory-bound fused kernel).
HALF_PRECISION_BYTES = DTYPE_BYTES["bf16"]
OPTIMIZER_TRAFFIC_BYTES = {name: 2 * state + 2 * HALF_PRECISION_BYTES for name, state in OPTIMIZER_STATE_BYTES.items()}
OPTIMIZER_FLOPS = {"sgd": 4.0, "adam": 12.0, "adam_8bit": 16.0}  # per parameter; negligible beside the traffic


class ModelSpec(StrictModel):
    """A model of ``layers`` layers around the scenario's layer (forward, training step or decode)."""

    layers: int = Field(ge=1, le=MAX_LAYERS, description="transformer layers L")
    sectional_every: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LAYERS,
        description="every k-th layer (the k-th, 2k-th, ...) is the compared entry's layer, the rest other_layers; "
        "absent (and no sectional_layers): every layer is the entry's",
    )
    sectional_layers: list[int] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LAYERS,
        description="the positions (from 0) of the entry's layers, instead of sectional_every",
    )
    other_layers: Literal["dense", "token_moe"] = Field(
        default="dense",
        description="the layers between the entry's: a dense block of the layer's dimensions, or the scenario's first token_moe entry",
    )
    vocab_size: int = Field(ge=0, le=MAX_VOCABULARY, description="vocabulary V of the embedding and the LM head; 0: neither")
    tied_embeddings: bool = Field(default=False, description="the LM head reuses the embedding matrix")
    reduction: Literal["upsample", "carry"] = Field(
        default="upsample",
        description="upsample: a sectional layer's output returns to N tokens; carry: the layers after it run on N / r "
        "(funnel-style)",
    )
    optimizer: Literal["sgd", "adam", "adam_8bit"] = Field(default="adam", description="training: state and master weights held")
    recompute: Literal["none", "selective", "full"] = Field(
        default="none",
        description="training: none saves every op's inputs; selective recomputes attention in the backward; full "
        "keeps only each layer's input and runs its forward again",
    )
    gradient_sync: Literal["all_reduce", "reduce_scatter"] = Field(
        default="all_reduce",
        description="training: all_reduce (DDP); reduce_scatter (ZeRO-2: gradients and optimizer state sharded over the "
        "replicas, the updated weights all-gathered after the step)",
    )
    bucket_size: Size = Field(
        default=25 * SIZE_UNITS["MiB"], gt=0, description="training: gradient bucket (PyTorch DDP's default 25 MiB)"
    )

    @model_validator(mode="after")
    def _positions_exist(self) -> ModelSpec:
        if self.sectional_every is not None and self.sectional_layers is not None:
            raise FieldIssue(("sectional_layers",), "give sectional_every or sectional_layers, not both")
        if self.sectional_every is not None and self.sectional_every > self.layers:
            raise FieldIssue(("sectional_every",), f"sectional_every {self.sectional_every} exceeds layers ({self.layers})")
        for index, position in enumerate(self.sectional_layers or []):
            if not 0 <= position < self.layers:
                raise FieldIssue(("sectional_layers", index), f"layer {position} does not exist (layers 0 to {self.layers - 1})")
        if self.sectional_layers is not None and len(set(self.sectional_layers)) != len(self.sectional_layers):
            raise FieldIssue(("sectional_layers",), "a layer is listed twice")
        return self

    def entry_positions(self) -> list[int]:
        """The layers (from 0) that are the compared entry's; the others are ``other_layers``."""
        if self.sectional_layers is not None:
            return sorted(self.sectional_layers)
        if self.sectional_every is not None:
            return list(range(self.sectional_every - 1, self.layers, self.sectional_every))
        return list(range(self.layers))

    @property
    def embedding_matrices(self) -> int:
        """``V x d`` matrices of the embedding and the LM head: two, or one when tied (none without a vocabulary)."""
        return 0 if self.vocab_size == 0 else (1 if self.tied_embeddings else 2)
