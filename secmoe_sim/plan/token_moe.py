"""The op graph of a token-routed MoE layer (the usual MoE baseline).

Token MoE, per GPU, forward: attention -> router -> top-k -> dispatch (all-to-all-v) -> expert
FFNs -> combine (all-to-all-v back) -> weighted sum; with ``overlap_degree > 1`` the dispatch,
expert and combine phase runs in overlapped chunks (:class:`~secmoe_sim.plan.steps.Pipeline`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from secmoe_sim.plan import costs
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.routing import capacity_limited_counts, route
from secmoe_sim.plan.steps import (
    AllToAll,
    LayerPlan,
    Message,
    Step,
    as_group,
    nonzero,
    overlapped_phase,
    replica_groups,
    with_backward,
)
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.placement import place_experts, sequences_per_gpu
from secmoe_sim.spec.units import DTYPE_BYTES
from secmoe_sim.spec.workload import GroupedRouting, Layer, TokenMoEArchitecture


def expert_groups(arch: TokenMoEArchitecture, cluster: Cluster) -> int:
    """Expert groups of grouped routing: as configured, or one per node."""
    routing = arch.routing
    return routing.groups if isinstance(routing, GroupedRouting) and routing.groups else cluster.nodes


def expert_ffn_multiplier(layer: Layer, arch: TokenMoEArchitecture) -> float:
    """Hidden width of an expert's FFN over d: the entry's own, else the layer's."""
    return arch.expert_ffn_multiplier if arch.expert_ffn_multiplier is not None else layer.ffn_multiplier


def expert_capacity(arch: TokenMoEArchitecture, tokens: int) -> float:
    """Tokens an expert keeps at most: ``capacity_factor * top_k * tokens / num_experts`` over a group's tokens."""
    return arch.capacity_factor * arch.top_k * tokens / arch.num_experts


def token_moe_params(layer: Layer, arch: TokenMoEArchitecture) -> float:
    """Attention (``4 d^2``), the router (``d E``) and ``E`` expert FFNs (``2 f_e d^2`` each)."""
    d = layer.d_model
    return (
        costs.attention_params(d)
        + d * arch.num_experts
        + arch.num_experts * costs.ffn_params(d, expert_ffn_multiplier(layer, arch))
    )


def token_moe_flops_per_token(layer: Layer, arch: TokenMoEArchitecture) -> float:
    """FLOPs per token before capacity drops: attention, router, top-k, ``top_k`` expert FFNs, the weighted sum
    (the backward pass included when it runs); from the op costs, without routing draws."""
    b = DTYPE_BYTES[layer.dtype]
    n, d, k = layer.query_tokens, layer.d_model, arch.top_k
    ops = costs.attention_block(n, d, layer.heads, layer, with_ffn=False, context=layer.context_length)
    ops += moe_entry_ops(n, d, arch.num_experts, k, b) + moe_exit_ops(n, k, d, b)
    hidden = expert_ffn_multiplier(layer, arch) * d
    ops += [costs.ffn(n * k, d, expert_ffn_multiplier(layer, arch), b), costs.activation(n * k, hidden, b)]
    return costs.pass_flops(ops, layer.has_backward) / n


def token_moe_plan(layer: Layer, arch: TokenMoEArchitecture, cluster: Cluster, rng: np.random.Generator) -> LayerPlan:
    """The op graph of a token-routed MoE layer; random routing drawn from ``rng``."""
    num_gpus, num_experts, k = cluster.num_gpus, arch.num_experts, arch.top_k
    placement = place_experts(num_experts, num_gpus)
    sequences = sequences_per_gpu(layer.batch, num_gpus)
    b, wire_b = DTYPE_BYTES[layer.dtype], DTYPE_BYTES[layer.wire_dtype]
    d, n = layer.d_model, layer.query_tokens
    token_bytes = d * wire_b

    forward: list[list[Step]] = [[] for _ in range(num_gpus)]
    for gpu in range(num_gpus):
        tokens = sequences[gpu] * n
        block = costs.attention_block(n, d, layer.heads, layer, with_ffn=False, context=layer.context_length)
        forward[gpu] += nonzero([k_.scaled(sequences[gpu]) for k_ in as_group(block, "pre")])
        forward[gpu] += nonzero(moe_entry_ops(tokens, d, num_experts, k, b))

    dropped = 0
    expert_tokens: dict[int, list[float]] = defaultdict(list)
    dispatches = []
    for index, group in enumerate(placement.groups):
        group_tokens = [sequences[src] * n for src in group]
        routed = route(arch.routing, group_tokens, num_experts, k, expert_groups(arch, cluster), rng)
        capacity = expert_capacity(arch, sum(group_tokens))
        kept = capacity_limited_counts(routed, capacity)
        dropped += int(routed.sum() - kept.sum())
        volume: dict[tuple[int, int], float] = defaultdict(float)
        for row, src in enumerate(group):
            for expert in range(num_experts):
                host = placement.host_of(src, expert)
                if host != src and kept[row, expert] > 0:
                    volume[(src, host)] += kept[row, expert] * token_bytes
        for expert in range(num_experts):
            expert_tokens[placement.host_of(group[0], expert)].append(float(kept[:, expert].sum()))
        messages = tuple(Message(src, dst, size) for (src, dst), size in sorted(volume.items()))
        dispatches.append(AllToAll.of(f"dispatch[{index}]", "dispatch", group, messages))

    for gpu in range(num_gpus):
        group_index = gpu // len(placement.groups[0])
        dispatch = dispatches[group_index]
        loads = expert_tokens[gpu]
        experts_here = max(1, len(loads))
        expert_kernel = costs.ffn(1.0, d, expert_ffn_multiplier(layer, arch), b, group="ffn").scaled(sum(loads), experts_here)
        expert_kernel = replace(expert_kernel, name="expert.ffn", launches=experts_here)
        hidden = expert_ffn_multiplier(layer, arch) * d
        expert_activation = replace(costs.activation(sum(loads), hidden, b), name="expert.activation", launches=experts_here)
        expert_kernels = nonzero([expert_kernel, expert_activation])
        combine = replace(dispatch.transposed(), key=f"combine[{group_index}]", name="combine")
        if arch.overlap_degree > 1:
            forward[gpu].append(overlapped_phase(dispatch, expert_kernels, combine, arch.overlap_degree))
        else:
            if dispatch.messages:
                forward[gpu].append(dispatch)
            forward[gpu] += expert_kernels
            if dispatch.messages:
                forward[gpu].append(combine)
        forward[gpu] += nonzero(moe_exit_ops(sequences[gpu] * n, k, d, b))

    experts_per_gpu = [len(placement.experts_on(g)) for g in range(num_gpus)]
    shared = costs.attention_params(d) + d * num_experts
    per_expert = costs.ffn_params(d, expert_ffn_multiplier(layer, arch))
    return LayerPlan(
        architecture=arch.kind,
        label=arch.name,
        num_experts=num_experts,
        sweep_mode="fixed_cluster",
        cluster=cluster,
        dtype=layer.dtype,
        programs=with_backward(forward, layer.has_backward),
        params=token_moe_params(layer, arch),
        weight_bytes_per_gpu=tuple((shared + per_expert * e) * b for e in experts_per_gpu),
        tokens=layer.batch * layer.query_tokens,
        dropped_tokens=dropped,
        replicas=replica_groups(
            [(tuple(range(num_gpus)), shared * b)] + [(placement.replicas_of(e), per_expert * b) for e in range(num_experts)]
        ),
    )


def moe_entry_ops(tokens: float, d: int, num_experts: int, k: int, b: int) -> list[Kernel]:
    """Before the dispatch: the MoE sublayer's norm, the router and the top-k."""
    return [
        costs.layer_norm(tokens, d, b, "router"),
        costs.router(tokens, d, num_experts, b),
        costs.top_k(tokens, num_experts, k, b),
    ]


def moe_exit_ops(tokens: float, k: int, d: int, b: int) -> list[Kernel]:
    """After the combine: the weighted sum of the ``k`` expert outputs, and the residual add."""
    return [costs.combine(tokens, k, d, b), costs.residual_add(tokens, d, b, "router")]
