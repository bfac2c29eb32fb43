"""The op graph of a sectional MoE layer (the paper's layer) at one expert count E.

Sectional MoE, per GPU, forward: pre-expert block on its own sequences -> sequence reduction ->
scatter (all-to-all: section ``e`` of every token to expert ``e``'s host) -> its experts on the
sections they received -> gather (the reverse all-to-all) -> optional mixing projection.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from secmoe_sim.plan import costs
from secmoe_sim.plan.steps import AllToAll, LayerPlan, Message, Step, nonzero, with_backward
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.placement import place_experts, sectional_cluster, sequences_per_gpu
from secmoe_sim.spec.units import DTYPE_BYTES
from secmoe_sim.spec.workload import Layer, SectionalMoEArchitecture


def sectional_plan(layer: Layer, arch: SectionalMoEArchitecture, cluster: Cluster, num_experts: int) -> LayerPlan:
    """The op graph of a sectional MoE layer with ``num_experts`` sections/experts."""
    cluster = sectional_cluster(cluster, num_experts, arch.sweep_mode)
    num_gpus = cluster.num_gpus
    placement = place_experts(num_experts, num_gpus)
    sequences = sequences_per_gpu(layer.batch, num_gpus)
    b, wire_b = DTYPE_BYTES[layer.dtype], DTYPE_BYTES[layer.wire_dtype]
    d, n = layer.d_model, layer.seq_len
    reduction = arch.pre_expert.sequence_reduction if arch.pre_expert.enabled else 1
    reduced_tokens = n / reduction
    width = d / num_experts
    section_heads = max(1, layer.heads // num_experts)

    forward: list[list[Step]] = [[] for _ in range(num_gpus)]
    for gpu in range(num_gpus):
        if arch.pre_expert.enabled:
            pre = costs.attention_block(n, d, layer.heads, layer, with_ffn=layer.ffn)
            if reduction > 1:
                pre.append(costs.sequence_reduction(n, reduction, d, b))
            forward[gpu] += nonzero([replace(k, name=f"pre.{k.name}", group="pre").scaled(sequences[gpu]) for k in pre])

    scatters = []
    for index, group in enumerate(placement.groups):
        batched: dict[tuple[int, int], list[float]] = defaultdict(list)
        for src in group:
            for expert in range(num_experts):
                host = placement.host_of(src, expert)
                if host != src and sequences[src] > 0:
                    batched[(src, host)].append(sequences[src] * reduced_tokens * width * wire_b)
        messages = []
        for (src, dst), sizes in sorted(batched.items()):
            chunks = [sum(sizes)] if arch.coalesce_messages else sizes
            messages += [Message(src, dst, size) for size in chunks]
        scatters.append(AllToAll.of(f"scatter[{index}]", "scatter", group, messages))

    for gpu in range(num_gpus):
        group_index = gpu // len(placement.groups[0])
        scatter = scatters[group_index]
        local_experts = len(placement.experts_on(gpu))
        served = sum(sequences[src] for src in placement.groups[group_index])
        expert_kernels = costs.expert_section(reduced_tokens, width, section_heads, layer, arch.section_ffn)
        launches = 1 if arch.grouped_kernels else local_experts
        expert_kernels = [replace(k.scaled(served * local_experts), launches=launches) for k in expert_kernels]
        if scatter.messages:
            forward[gpu].append(scatter)
        forward[gpu] += nonzero(expert_kernels)
        if scatter.messages:
            gather = scatter.transposed()
            forward[gpu].append(replace(gather, key=f"gather[{group_index}]", name="gather"))
        if arch.mixing:
            forward[gpu] += nonzero([costs.mixing_projection(reduced_tokens, d, b).scaled(sequences[gpu])])

    weights = []
    for gpu in range(num_gpus):
        shared = costs.sectional_params(layer, 1, arch.pre_expert.enabled, False, arch.mixing) - costs.sectional_params(
            layer, 1, False, False, False
        )
        per_expert = costs.sectional_params(layer, num_experts, False, arch.section_ffn, False) / num_experts
        weights.append((shared + per_expert * len(placement.experts_on(gpu))) * b)

    return LayerPlan(
        architecture=arch.kind,
        label=arch.name,
        num_experts=num_experts,
        sweep_mode=arch.sweep_mode,
        cluster=cluster,
        dtype=layer.dtype,
        programs=with_backward(forward, layer.passes),
        params=costs.sectional_params(layer, num_experts, arch.pre_expert.enabled, arch.section_ffn, arch.mixing),
        weight_bytes_per_gpu=tuple(weights),
        tokens=layer.batch * layer.seq_len,
    )
