"""The op graph of a dense layer (the baseline without experts).

Dense, per GPU, forward: attention and FFN; tensor-parallel with a ring all-reduce after each
when ``tensor_parallel > 1``.
"""

from __future__ import annotations

from secmoe_sim.plan import costs
from secmoe_sim.plan.steps import AllReduce, LayerPlan, Step, nonzero, with_backward
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.placement import sequences_per_gpu
from secmoe_sim.spec.units import DTYPE_BYTES
from secmoe_sim.spec.workload import DenseArchitecture, Layer


def dense_plan(layer: Layer, arch: DenseArchitecture, cluster: Cluster) -> LayerPlan:
    """The op graph of a dense layer, data-parallel across TP groups of ``tensor_parallel`` GPUs."""
    num_gpus, tp = cluster.num_gpus, arch.tensor_parallel
    groups = [tuple(range(start, start + tp)) for start in range(0, num_gpus, tp)]
    group_sequences = sequences_per_gpu(layer.batch, len(groups))
    wire_b = DTYPE_BYTES[layer.wire_dtype]
    d, n = layer.d_model, layer.seq_len

    forward: list[list[Step]] = [[] for _ in range(num_gpus)]
    for index, group in enumerate(groups):
        seqs = group_sequences[index]
        block = costs.attention_block(n, d, layer.heads, layer, with_ffn=layer.ffn)
        shard = [k.scaled(seqs).sharded(tp) for k in block]
        reduce_bytes = seqs * n * d * wire_b
        for gpu in group:
            forward[gpu] += nonzero(shard[:3])
            if tp > 1:
                forward[gpu].append(
                    AllReduce(key=f"allreduce.attn[{index}]", name="allreduce.attn", gpus=group, payload_bytes=reduce_bytes)
                )
            if layer.ffn:
                forward[gpu] += nonzero(shard[3:])
                if tp > 1:
                    forward[gpu].append(
                        AllReduce(key=f"allreduce.ffn[{index}]", name="allreduce.ffn", gpus=group, payload_bytes=reduce_bytes)
                    )

    weights = costs.dense_params(layer) / tp * DTYPE_BYTES[layer.dtype]
    return LayerPlan(
        architecture=arch.kind,
        label=arch.name,
        num_experts=1,
        sweep_mode="fixed_cluster",
        cluster=cluster,
        dtype=layer.dtype,
        programs=with_backward(forward, layer.passes),
        params=costs.dense_params(layer),
        weight_bytes_per_gpu=tuple(weights for _ in range(num_gpus)),
        tokens=layer.batch * layer.seq_len,
    )
