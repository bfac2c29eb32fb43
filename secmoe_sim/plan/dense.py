"""The op graph of a dense layer (the baseline without experts).

Per GPU, forward: ``blocks`` full-width blocks one after another, each attention (QKV, scores,
out-projection) and, with ``layer.ffn``, an FFN; tensor-parallel with a ring all-reduce after the
attention and after the FFN when ``tensor_parallel > 1``. With ``sequence_reduction: r`` the
sequence is pooled to ``N / r`` tokens after the first block and the later blocks run on those (a
funnel); ``upsample`` brings the output back to ``N`` tokens with the first block's output as the
residual, as the sectional layer's option does.
"""

from __future__ import annotations

from dataclasses import replace

from secmoe_sim.plan import costs
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.steps import AllReduce, LayerPlan, Step, nonzero, replica_groups, with_backward
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.placement import sequences_per_gpu
from secmoe_sim.spec.units import DTYPE_BYTES
from secmoe_sim.spec.workload import DenseArchitecture, Layer


def dense_params(layer: Layer, arch: DenseArchitecture) -> float:
    """Parameters of the layer: ``blocks`` times attention (``4 d^2``) and FFN (``2 f d^2``)."""
    d = layer.d_model
    per_block = costs.attention_params(d) + (costs.ffn_params(d, layer.ffn_multiplier) if layer.ffn else 0.0)
    return arch.blocks * per_block


def dense_block_ops(layer: Layer, arch: DenseArchitecture, block: int) -> list[Kernel]:
    """Block ``block`` (from 0) on one sequence: over ``N`` tokens, or ``N / r`` after the funnel's reduction."""
    attention, ffn = dense_sublayers(layer, arch, block)
    return attention + ffn


def block_reduction(arch: DenseArchitecture, block: int) -> int:
    """The sequence reduction block ``block`` runs after: none for the first, the funnel's for the rest."""
    return 1 if block == 0 else arch.sequence_reduction


def dense_sublayers(layer: Layer, arch: DenseArchitecture, block: int) -> tuple[list[Kernel], list[Kernel]]:
    """The attention and the FFN sublayer of block ``block`` on one sequence (the FFN's empty without ``layer.ffn``)."""
    reduction = block_reduction(arch, block)
    tokens = layer.tokens_after(reduction)
    b = DTYPE_BYTES[layer.dtype]
    attention = costs.attention_sublayer(
        tokens, layer.d_model, layer.heads, layer, "pre", context=layer.context_length / reduction
    )
    ffn = costs.ffn_sublayer(tokens, layer.d_model, layer.ffn_multiplier, b, "ffn") if layer.ffn else []

    def named(ops: list[Kernel]) -> list[Kernel]:
        return [replace(k, name=f"block{block}.{k.name}") if arch.blocks > 1 else k for k in ops]

    return named(attention), named(ffn)


REPLICATED_UNDER_TP = ("norm", "residual")  # Megatron-style tensor parallelism runs these on the full activations


def tensor_parallel_shard(kernel: Kernel, parts: int) -> Kernel:
    """A rank's share of ``kernel`` under ``parts``-way tensor parallelism: GEMMs, attention and the
    activation split; norms and residual adds run whole on every rank."""
    if parts == 1 or kernel.name.rsplit(".", 1)[-1] in REPLICATED_UNDER_TP:
        return kernel
    return kernel.sharded(parts)


def dense_flops_per_token(layer: Layer, arch: DenseArchitecture) -> float:
    """FLOPs per input token of every block (and the funnel's reduction and upsampling), backward included."""
    b = DTYPE_BYTES[layer.dtype]
    n, d, r = layer.seq_len, layer.d_model, arch.sequence_reduction
    ops = [op for block in range(arch.blocks) for op in dense_block_ops(layer, arch, block)]
    if layer.pools(r):
        ops.append(costs.sequence_reduction(n, r, d, b))
    if arch.upsample and not layer.decoding:
        ops.append(costs.upsample_residual(n, r, d, b))
    return costs.pass_flops(ops, layer.has_backward) / layer.query_tokens


def dense_plan(layer: Layer, arch: DenseArchitecture, cluster: Cluster) -> LayerPlan:
    """The op graph of a dense layer, data-parallel across TP groups of ``tensor_parallel`` GPUs."""
    num_gpus, tp = cluster.num_gpus, arch.tensor_parallel
    groups = [tuple(range(start, start + tp)) for start in range(0, num_gpus, tp)]
    group_sequences = sequences_per_gpu(layer.batch, len(groups))
    b, wire_b = DTYPE_BYTES[layer.dtype], DTYPE_BYTES[layer.wire_dtype]
    d, n, r = layer.d_model, layer.seq_len, arch.sequence_reduction

    forward: list[list[Step]] = [[] for _ in range(num_gpus)]
    for index, group in enumerate(groups):
        seqs = group_sequences[index]
        for block in range(arch.blocks):
            attention, ffn = (
                [tensor_parallel_shard(k.scaled(seqs), tp) for k in ops] for ops in dense_sublayers(layer, arch, block)
            )
            tokens = layer.tokens_after(block_reduction(arch, block))
            reduce_bytes = seqs * tokens * d * wire_b
            for gpu in group:
                forward[gpu] += nonzero(attention)
                if tp > 1 and seqs > 0:
                    forward[gpu].append(AllReduce(f"allreduce.attn[{index}].{block}", "allreduce.attn", group, reduce_bytes))
                if layer.ffn:
                    forward[gpu] += nonzero(ffn)
                    if tp > 1 and seqs > 0:
                        forward[gpu].append(AllReduce(f"allreduce.ffn[{index}].{block}", "allreduce.ffn", group, reduce_bytes))
                if block == 0 and layer.pools(r):
                    forward[gpu] += nonzero([costs.sequence_reduction(n, r, d, b).scaled(seqs).sharded(tp)])
        if arch.upsample and not layer.decoding:
            for gpu in group:
                forward[gpu] += nonzero([costs.upsample_residual(n, r, d, b).scaled(seqs).sharded(tp)])

    params = dense_params(layer, arch)
    return LayerPlan(
        architecture=arch.kind,
        label=arch.name,
        num_experts=1,
        sweep_mode="fixed_cluster",
        cluster=cluster,
        dtype=layer.dtype,
        programs=with_backward(forward, layer.has_backward),
        params=params,
        weight_bytes_per_gpu=tuple(params / tp * b for _ in range(num_gpus)),
        tokens=layer.batch * layer.query_tokens,
        replicas=replica_groups([(tuple(group[rank] for group in groups), params / tp * b) for rank in range(tp)]),
    )
