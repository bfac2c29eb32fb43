"""The op graph of a sectional MoE layer (the paper's layer) at one expert count E and one placement.

Per GPU, forward: pre-expert block on its own sequences (attention, FFN if ``pre_expert.ffn``) ->
sequence reduction ``N -> N/r`` -> scatter (section ``e`` of every token to the GPU hosting expert
``e`` in its group) -> its experts on the sections they received -> gather (the reverse exchange)
-> optional mixing projection over the ``N/r`` tokens -> optional upsampling back to ``N`` tokens
with the residual. Under ``replicated`` placement a GPU hosts all ``E`` experts for its own
sequences, so there is no scatter and no gather (:mod:`secmoe_sim.spec.placement`). With ``overlap_degree: C`` the scatter, the experts and the gather
run in ``C`` chunks, each chunk's experts while the next chunk is scattered and the previous gathered
(:func:`~secmoe_sim.plan.steps.overlapped_phase`, as token MoE does).

In decode (``passes: decode``) every op runs on the one new token of each sequence: the pre-expert
block attends to the ``L`` cached tokens, each expert to its ``L / r`` cached pooled sections, and
the scatter and gather carry one section per sequence. That charges the experts at every new token,
an upper bound: a pooled layer could run them once per ``r`` tokens.

The op lists per sequence (:func:`pre_expert_ops`, :func:`expert_ops`, :func:`post_expert_ops`) are
public: the analytical model sums the same ops, so both count every FLOP the same way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from secmoe_sim.plan import costs
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.steps import AllToAll, LayerPlan, Message, Step, nonzero, overlapped_phase, replica_groups, with_backward
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.placement import group_size, place_experts, sectional_cluster, sequences_per_gpu
from secmoe_sim.spec.units import DTYPE_BYTES
from secmoe_sim.spec.workload import Layer, SectionalMoEArchitecture


def reduction_of(arch: SectionalMoEArchitecture) -> int:
    """r: the experts see ``N / r`` tokens (1 without a pre-expert block)."""
    return arch.pre_expert.sequence_reduction if arch.pre_expert.enabled else 1


def pre_expert_ops(layer: Layer, arch: SectionalMoEArchitecture) -> list[Kernel]:
    """The pre-expert block on one sequence: full-width attention, its FFN, the sequence reduction."""
    pre = arch.pre_expert
    if not pre.enabled:
        return []
    b = DTYPE_BYTES[layer.dtype]
    tokens = layer.query_tokens
    ops = costs.attention_block(tokens, layer.d_model, layer.heads, layer, with_ffn=pre.ffn, context=layer.context_length)
    if layer.pools(pre.sequence_reduction):
        ops.append(costs.sequence_reduction(tokens, pre.sequence_reduction, layer.d_model, b))
    return [replace(k, name=f"pre.{k.name}", group="pre") for k in ops]


def expert_ops(layer: Layer, arch: SectionalMoEArchitecture, num_experts: int) -> list[Kernel]:
    """One expert on one sequence's section: narrow QKV, attention over ``max(1, h/E)`` heads, out-projection, FFN."""
    tokens = expert_tokens(layer, arch)
    context = layer.context_length / reduction_of(arch)
    heads = max(1, layer.heads // num_experts)
    return costs.expert_section(
        tokens, layer.d_model / num_experts, heads, layer, arch.section_ffn, arch.section_out_projection, context
    )


def expert_tokens(layer: Layer, arch: SectionalMoEArchitecture) -> float:
    """Tokens of one sequence each expert computes: ``N / r``, or the one new token in decode."""
    return layer.tokens_after(reduction_of(arch))


def post_expert_ops(layer: Layer, arch: SectionalMoEArchitecture) -> list[Kernel]:
    """After the gather, on one sequence: the mixing projection over ``N / r`` tokens, the upsampling to ``N``."""
    b = DTYPE_BYTES[layer.dtype]
    reduction = reduction_of(arch)
    ops = []
    if arch.mixing:
        ops.append(costs.mixing_projection(expert_tokens(layer, arch), layer.d_model, b))
    if arch.pre_expert.enabled and arch.pre_expert.upsample and not layer.decoding:
        ops.append(costs.upsample_residual(layer.seq_len, reduction, layer.d_model, b))
    return ops


def sectional_flops_per_token(layer: Layer, arch: SectionalMoEArchitecture, num_experts: int) -> float:
    """FLOPs of the layer per input token at ``num_experts`` (the backward pass included when it runs),
    from the same op lists the plan runs, without building the plan."""
    per_sequence = costs.pass_flops(pre_expert_ops(layer, arch) + post_expert_ops(layer, arch), layer.has_backward)
    per_sequence += num_experts * costs.pass_flops(expert_ops(layer, arch, num_experts), layer.has_backward)
    return per_sequence / layer.query_tokens


def sectional_params(layer: Layer, arch: SectionalMoEArchitecture, num_experts: int) -> float:
    """Parameters of the whole layer: the pre-expert block, ``E`` narrow experts, the mixing projection."""
    return shared_params(layer, arch) + num_experts * expert_params(layer, arch, num_experts)


def shared_params(layer: Layer, arch: SectionalMoEArchitecture) -> float:
    """Parameters every token owner holds: the pre-expert block (and its FFN) and the mixing projection."""
    d = layer.d_model
    params = 0.0
    if arch.pre_expert.enabled:
        params += costs.attention_params(d) + (costs.ffn_params(d, layer.ffn_multiplier) if arch.pre_expert.ffn else 0.0)
    if arch.mixing:
        params += d**2
    return params


def expert_params(layer: Layer, arch: SectionalMoEArchitecture, num_experts: int) -> float:
    """Parameters of one expert of width ``d / E``: ``4 w^2`` (+ ``2 f w^2`` with its FFN)."""
    width = layer.d_model / num_experts
    attention = costs.attention_params(width) - (0.0 if arch.section_out_projection else width**2)
    return attention + (costs.ffn_params(width, layer.ffn_multiplier) if arch.section_ffn else 0.0)


def _scatters(
    layer: Layer, arch: SectionalMoEArchitecture, num_experts: int, groups: tuple[tuple[int, ...], ...], sequences: list[int]
) -> list[AllToAll]:
    """Per group: section ``e`` of each token owner's reduced tokens to the GPU hosting expert ``e``."""
    wire_b = DTYPE_BYTES[layer.wire_dtype]
    section_bytes_per_sequence = expert_tokens(layer, arch) * layer.d_model / num_experts * wire_b
    scatters = []
    for index, group in enumerate(groups):
        batched: dict[tuple[int, int], list[float]] = defaultdict(list)
        for src in group:
            for expert in range(num_experts):
                host = group[expert % len(group)]
                if host != src and sequences[src] > 0:
                    batched[(src, host)].append(sequences[src] * section_bytes_per_sequence)
        messages = []
        for (src, dst), sizes in sorted(batched.items()):
            chunks = [sum(sizes)] if arch.coalesce_messages else sizes
            messages += [Message(src, dst, size) for size in chunks]
        scatters.append(AllToAll.of(f"scatter[{index}]", "scatter", group, messages))
    return scatters


def sectional_plan(
    layer: Layer, arch: SectionalMoEArchitecture, cluster: Cluster, num_experts: int, placement: str = "spread"
) -> LayerPlan:
    """The op graph of a sectional MoE layer with ``num_experts`` sections/experts under ``placement``."""
    cluster = sectional_cluster(cluster, num_experts, arch.sweep_mode)
    num_gpus = cluster.num_gpus
    hosts = place_experts(num_experts, num_gpus, group_size(placement, num_experts, cluster))
    sequences = sequences_per_gpu(layer.batch, num_gpus)
    pre, experts, post = pre_expert_ops(layer, arch), expert_ops(layer, arch, num_experts), post_expert_ops(layer, arch)
    scatters = _scatters(layer, arch, num_experts, hosts.groups, sequences)

    forward: list[list[Step]] = [[] for _ in range(num_gpus)]
    for gpu in range(num_gpus):
        group_index = gpu // len(hosts.groups[0])
        scatter = scatters[group_index]
        local_experts = len(hosts.experts_on(gpu))
        served = sum(sequences[src] for src in hosts.groups[group_index])
        launches = 1 if arch.grouped_kernels else local_experts
        forward[gpu] += nonzero([k.scaled(sequences[gpu]) for k in pre])
        expert_kernels = nonzero([replace(k.scaled(served * local_experts, local_experts), launches=launches) for k in experts])
        gather = replace(scatter.transposed(), key=f"gather[{group_index}]", name="gather")
        if arch.overlap_degree > 1 and scatter.messages:
            forward[gpu].append(overlapped_phase(scatter, expert_kernels, gather, arch.overlap_degree))
        elif scatter.messages:
            forward[gpu] += [scatter, *expert_kernels, gather]
        else:
            forward[gpu] += expert_kernels
        forward[gpu] += nonzero([k.scaled(sequences[gpu]) for k in post])

    b = DTYPE_BYTES[layer.dtype]
    per_expert = expert_params(layer, arch, num_experts)
    weights = tuple((shared_params(layer, arch) + per_expert * len(hosts.experts_on(gpu))) * b for gpu in range(num_gpus))
    held = [(tuple(range(num_gpus)), shared_params(layer, arch) * b)]
    held += [(hosts.replicas_of(e), per_expert * b) for e in range(num_experts)]
    return LayerPlan(
        architecture=arch.kind,
        label=arch.name,
        num_experts=num_experts,
        sweep_mode=arch.sweep_mode,
        cluster=cluster,
        dtype=layer.dtype,
        programs=with_backward(forward, layer.has_backward),
        params=sectional_params(layer, arch, num_experts),
        weight_bytes_per_gpu=weights,
        tokens=layer.batch * layer.query_tokens,
        placement=placement,
        replicas=replica_groups(held),
    )
