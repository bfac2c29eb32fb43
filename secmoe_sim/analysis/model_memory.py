"""A model step's memory: the peak of the GPU that needs the most, term by term (docs/model.md, section 10).

Weights and gradients (in the layer's dtype) of every layer and the embedding matrices; the optimizer's state and
fp32 master (sharded over the replicas under ZeRO-2); every layer's saved inputs as the recomputation
option keeps them; the LM head's logits; the KV cache in decode; the largest transient workspace and
collective buffers; the gradient buckets in flight.
"""

from __future__ import annotations

import numpy as np

from secmoe_sim.analysis.layer_costs import LayerCosts
from secmoe_sim.spec.model import OPTIMIZER_STATE_BYTES, ModelSpec
from secmoe_sim.spec.units import DTYPE_BYTES
from secmoe_sim.spec.workload import Layer

Stack = list[tuple[bool, LayerCosts]]  # each layer of the model: whether it is an entry's, and its costs

BUCKETS_IN_FLIGHT = 2  # gradient buckets held at once: one being filled, one being synchronised


def local_parameter_bytes(stack: Stack, model: ModelSpec, gpus: int, matrix_bytes: float) -> np.ndarray:
    """Per GPU, the parameter bytes (in the layer's dtype) whose gradient and optimizer state it keeps: all it holds,
    or (reduce_scatter) its shard of every replicated group and all of what only it holds."""
    held = np.zeros(gpus)
    for _, layer_costs in stack:
        weights = np.array([term["weights"] for term in layer_costs.terms])
        if model.gradient_sync == "reduce_scatter":
            for members, size in layer_costs.replicas:
                for gpu in members:
                    weights[gpu] -= size * (1 - 1 / len(members))
        held += weights
    embedding = model.embedding_matrices * matrix_bytes
    return held + (embedding / gpus if model.gradient_sync == "reduce_scatter" else embedding)


def embedding_matrix_bytes(model: ModelSpec, layer: Layer) -> float:
    """Bytes of one vocabulary-by-width matrix (the embedding, or an untied LM head) in the layer's dtype."""
    return model.vocab_size * layer.d_model * DTYPE_BYTES[layer.dtype]


def model_memory(
    stack: Stack, model: ModelSpec, layer: Layer, gpus: int, local_tokens: float, training: bool
) -> dict[str, float]:
    """The peak of the GPU that needs the most, and its terms (docs/model.md, section 10)."""
    b = DTYPE_BYTES[layer.dtype]
    matrix_bytes = embedding_matrix_bytes(model, layer)
    weights = np.sum([[t["weights"] for t in c.terms] for _, c in stack], axis=0) + model.embedding_matrices * matrix_bytes
    cache = np.sum([[t["cache"] for t in c.terms] for _, c in stack], axis=0)
    logits = local_tokens * model.vocab_size * b
    zeros = np.zeros(gpus)
    if training:
        kept = local_parameter_bytes(stack, model, gpus, matrix_bytes)
        gradients = kept if model.gradient_sync == "reduce_scatter" else weights
        optimizer = kept / b * OPTIMIZER_STATE_BYTES[model.optimizer]
        saved = [
            np.array([t["saved"] - (t["saved_scores"] if model.recompute == "selective" else 0.0) for t in c.terms])
            for _, c in stack
        ]
        if model.recompute == "full":
            inputs = np.sum([[t["layer_input"] for t in c.terms] for _, c in stack], axis=0)
            activations = inputs + np.max(saved, axis=0)
        else:
            activations = np.sum(saved, axis=0)
        head = (local_tokens * layer.d_model * b + 2 * logits) if model.vocab_size else 0.0
        activations = activations + head
        transient = np.max([[t["workspace"] + t["buffers"] for t in c.terms] for _, c in stack], axis=0)
        has_replicas = any(c.replicas for _, c in stack) or (gpus > 1 and model.vocab_size > 0)
        buckets = np.full(gpus, BUCKETS_IN_FLIGHT * model.bucket_size if has_replicas else 0.0)
    else:
        gradients = optimizer = buckets = zeros
        activations = zeros + (logits if model.vocab_size else 0.0)
        transient = np.max([[t["window"] + t["buffers"] for t in c.terms] for _, c in stack], axis=0)
    total = weights + gradients + optimizer + activations + cache + transient + buckets
    worst = int(np.argmax(total))
    return {
        "peak_memory_bytes": float(total[worst]),
        "weights_bytes": float(weights[worst]),
        "gradients_bytes": float(np.asarray(gradients)[worst]),
        "optimizer_state_bytes": float(np.asarray(optimizer)[worst]),
        "activations_bytes": float(np.asarray(activations)[worst]),
        "kv_cache_bytes": float(np.asarray(cache)[worst]),
        "transient_bytes": float(transient[worst]),
        "buckets_bytes": float(np.asarray(buckets)[worst]),
    }
