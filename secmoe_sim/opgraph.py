"""The op graph of one layer: for each GPU, the ordered kernels and collectives it takes part in.

A :class:`LayerPlan` is what the engine executes and what the analytical model sums. It is built
from the scenario alone (plus a random generator for token routing), so every FLOP and byte the
simulation moves can be traced back to a formula in :mod:`secmoe_sim.costs`.

Sectional MoE, per GPU, forward: pre-expert block on its own sequences -> sequence reduction ->
scatter (all-to-all: section ``e`` of every token to expert ``e``'s host) -> its experts on the
sections they received -> gather (the reverse all-to-all) -> optional mixing projection.
Token MoE: attention -> router -> top-k -> dispatch (all-to-all-v) -> expert FFNs -> combine
(all-to-all-v back) -> weighted sum. Dense: attention and FFN, tensor-parallel with a ring
all-reduce after each when ``tensor_parallel > 1``. With ``forward_backward`` the program continues
with the forward steps in reverse order: each kernel's backward, each all-to-all transposed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Iterable, Iterator, Union

import numpy as np

from secmoe_sim import costs
from secmoe_sim.costs import Kernel
from secmoe_sim.hardware import Cluster
from secmoe_sim.pipeline import Chunk, Pipeline, chunk_kernel
from secmoe_sim.placement import place_experts, sectional_cluster, sequences_per_gpu
from secmoe_sim.routing import capacity_limited_counts, route
from secmoe_sim.units import DTYPE_BYTES
from secmoe_sim.workload import DenseArchitecture, GroupedRouting, Layer, SectionalMoEArchitecture, TokenMoEArchitecture


@dataclass(frozen=True)
class Message:
    """``payload_bytes`` from GPU ``src`` to GPU ``dst``."""

    src: int
    dst: int
    payload_bytes: float


@dataclass(frozen=True, eq=False)
class Messages:
    """Point-to-point messages as three parallel arrays, so a million of them stay compact.

    Iterating yields :class:`Message` objects; the engine reads the arrays.
    """

    src: np.ndarray
    dst: np.ndarray
    payload_bytes: np.ndarray

    @classmethod
    def of(cls, messages: Iterable[Message]) -> "Messages":
        listed = list(messages)
        return cls(
            src=np.array([m.src for m in listed], dtype=np.int64),
            dst=np.array([m.dst for m in listed], dtype=np.int64),
            payload_bytes=np.array([m.payload_bytes for m in listed], dtype=float),
        )

    def __len__(self) -> int:
        return int(self.src.shape[0])

    def __iter__(self) -> Iterator[Message]:
        for src, dst, size in zip(self.src.tolist(), self.dst.tolist(), self.payload_bytes.tolist()):
            yield Message(src, dst, size)

    def reversed(self) -> "Messages":
        """Every message in the opposite direction."""
        return Messages(src=self.dst, dst=self.src, payload_bytes=self.payload_bytes)


@dataclass(frozen=True, eq=False)
class AllToAll:
    """An all-to-all(-v) among ``gpus``: each message is one point-to-point transfer.

    ``messages`` may be given as any iterable of :class:`Message` (kept as :class:`Messages`), or
    built from a per-pair byte matrix with :meth:`from_matrix`. How the bytes travel (all pairs at
    once, in rounds, or through node-level aggregation) is the engine's all-to-all algorithm.
    """

    key: str
    name: str
    gpus: tuple[int, ...]
    messages: Messages

    def __post_init__(self) -> None:
        if not isinstance(self.messages, Messages):
            object.__setattr__(self, "messages", Messages.of(self.messages))

    @classmethod
    def from_matrix(cls, key: str, name: str, gpus: tuple[int, ...], byte_matrix: np.ndarray) -> "AllToAll":
        """All-to-all-v: ``byte_matrix[i, j]`` bytes from ``gpus[i]`` to ``gpus[j]``; zeros and the diagonal send nothing."""
        matrix = np.asarray(byte_matrix, dtype=float)
        sending = (matrix > 0) & ~np.eye(len(gpus), dtype=bool)
        rows, columns = np.nonzero(sending)
        members = np.asarray(gpus, dtype=np.int64)
        return cls(key, name, tuple(gpus), Messages(src=members[rows], dst=members[columns], payload_bytes=matrix[rows, columns]))

    def transposed(self) -> "AllToAll":
        """The same exchange in the opposite direction (a backward pass, a gather after a scatter)."""
        return AllToAll(key=f"{self.key}.backward", name=f"{self.name}.backward", gpus=self.gpus, messages=self.messages.reversed())

    @cached_property
    def buffer_bytes_by_gpu(self) -> dict[int, float]:
        """Bytes each GPU sends plus receives in this exchange."""
        touching: dict[int, float] = defaultdict(float)
        for gpus in (self.messages.src, self.messages.dst):
            members, inverse = np.unique(gpus, return_inverse=True)
            for gpu, size in zip(members.tolist(), np.bincount(inverse, weights=self.messages.payload_bytes).tolist()):
                touching[gpu] += size
        return dict(touching)


@dataclass(frozen=True)
class AllReduce:
    """A ring all-reduce of ``payload_bytes`` held by each of ``gpus`` (in ring order)."""

    key: str
    name: str
    gpus: tuple[int, ...]
    payload_bytes: float

    def transposed(self) -> "AllReduce":
        return replace(self, key=f"{self.key}.backward", name=f"{self.name}.backward")


@dataclass(frozen=True)
class AllGather:
    """A ring all-gather: each of ``gpus`` (in ring order) ends with all ``payload_bytes``, one ``1/t`` shard from each."""

    key: str
    name: str
    gpus: tuple[int, ...]
    payload_bytes: float

    def transposed(self) -> "ReduceScatter":
        """The backward of an all-gather is a reduce-scatter of the gradients."""
        return ReduceScatter(key=f"{self.key}.backward", name=f"{self.name}.backward", gpus=self.gpus, payload_bytes=self.payload_bytes)


@dataclass(frozen=True)
class ReduceScatter:
    """A ring reduce-scatter: ``payload_bytes`` on each of ``gpus``, summed, each GPU keeping one ``1/t`` shard."""

    key: str
    name: str
    gpus: tuple[int, ...]
    payload_bytes: float

    def transposed(self) -> AllGather:
        """The backward of a reduce-scatter is an all-gather of the gradient shards."""
        return AllGather(key=f"{self.key}.backward", name=f"{self.name}.backward", gpus=self.gpus, payload_bytes=self.payload_bytes)


RingCollective = Union[AllReduce, AllGather, ReduceScatter]
Collective = Union[AllToAll, AllReduce, AllGather, ReduceScatter]
Step = Union[Kernel, AllToAll, AllReduce, AllGather, ReduceScatter, Pipeline]


def flat_steps(program: tuple[Step, ...]) -> list[Step]:
    """A program with every overlapped pipeline expanded into its kernels and collectives."""
    flat: list[Step] = []
    for step in program:
        if isinstance(step, Pipeline):
            flat += step.kernels + step.collectives()
        else:
            flat.append(step)
    return flat


@dataclass(frozen=True)
class LayerPlan:
    """Everything the engine needs to simulate one layer of one architecture at one E."""

    architecture: str
    label: str
    num_experts: int
    sweep_mode: str
    cluster: Cluster
    dtype: str
    programs: tuple[tuple[Step, ...], ...]
    params: float
    weight_bytes_per_gpu: tuple[float, ...]
    tokens: int
    dropped_tokens: int = 0

    @property
    def flops(self) -> float:
        """FLOPs of the whole layer, all GPUs."""
        return sum(step.flops for program in self.programs for step in flat_steps(program) if isinstance(step, Kernel))

    @property
    def flops_per_token(self) -> float:
        return self.flops / self.tokens

    def peak_memory_bytes(self, passes: str) -> list[float]:
        """Per-GPU peak memory: weights, live activations, the largest op's workspace, comm buffers.

        Forward only: the weights plus, at worst, one op's input, output and workspace together.
        Forward+backward: weights and their gradients, every saved forward activation, the largest
        workspace. Communication buffers: the largest send plus receive volume of one collective.
        """
        peaks = []
        for gpu, program in enumerate(self.programs):
            program = flat_steps(program)
            kernels = [s for s in program if isinstance(s, Kernel)]
            buffers = max((_buffer_bytes(s, gpu) for s in program if not isinstance(s, Kernel)), default=0.0)
            workspace = max((k.workspace_bytes for k in kernels), default=0.0)
            weights = self.weight_bytes_per_gpu[gpu]
            if passes == "forward_backward":
                saved = sum(k.activation_bytes for k in kernels)
                peaks.append(2 * weights + saved + workspace + buffers)
            else:
                window = max(
                    (a.activation_bytes + b.activation_bytes + b.workspace_bytes for a, b in zip(kernels, kernels[1:])),
                    default=sum(k.activation_bytes + k.workspace_bytes for k in kernels),
                )
                peaks.append(weights + window + buffers)
        return peaks


def _buffer_bytes(collective: Collective, gpu: int) -> float:
    if isinstance(collective, AllToAll):
        return collective.buffer_bytes_by_gpu.get(gpu, 0.0)
    return 2 * collective.payload_bytes if gpu in collective.gpus else 0.0


def _with_backward(programs: list[list[Step]], passes: str) -> tuple[tuple[Step, ...], ...]:
    if passes != "forward_backward":
        return tuple(tuple(p) for p in programs)
    complete = []
    for program in programs:
        backward = [s.backward() if isinstance(s, Kernel) else s.transposed() for s in reversed(program)]
        complete.append(tuple(program + backward))
    return tuple(complete)


def _nonzero(kernels: list[Kernel]) -> list[Kernel]:
    return [k for k in kernels if k.flops > 0 or k.traffic_bytes > 0]


def _as_group(kernels: list[Kernel], group: str) -> list[Kernel]:
    return [replace(k, group=group) for k in kernels]


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
            forward[gpu] += _nonzero([replace(k, name=f"pre.{k.name}", group="pre").scaled(sequences[gpu]) for k in pre])

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
        scatters.append(AllToAll(key=f"scatter[{index}]", name="scatter", gpus=group, messages=tuple(messages)))

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
        forward[gpu] += _nonzero(expert_kernels)
        if scatter.messages:
            gather = scatter.transposed()
            forward[gpu].append(replace(gather, key=f"gather[{group_index}]", name="gather"))
        if arch.mixing:
            forward[gpu] += _nonzero([costs.mixing_projection(reduced_tokens, d, b).scaled(sequences[gpu])])

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
        programs=_with_backward(forward, layer.passes),
        params=costs.sectional_params(layer, num_experts, arch.pre_expert.enabled, arch.section_ffn, arch.mixing),
        weight_bytes_per_gpu=tuple(weights),
        tokens=layer.batch * layer.seq_len,
    )


def expert_groups(arch: TokenMoEArchitecture, cluster: Cluster) -> int:
    """Expert groups of grouped routing: as configured, or one per node."""
    routing = arch.routing
    return routing.groups if isinstance(routing, GroupedRouting) and routing.groups else cluster.nodes


def token_moe_plan(layer: Layer, arch: TokenMoEArchitecture, cluster: Cluster, rng: np.random.Generator) -> LayerPlan:
    """The op graph of a token-routed MoE layer; random routing drawn from ``rng``."""
    num_gpus, num_experts, k = cluster.num_gpus, arch.num_experts, arch.top_k
    placement = place_experts(num_experts, num_gpus)
    sequences = sequences_per_gpu(layer.batch, num_gpus)
    b, wire_b = DTYPE_BYTES[layer.dtype], DTYPE_BYTES[layer.wire_dtype]
    d, n = layer.d_model, layer.seq_len
    token_bytes = d * wire_b

    forward: list[list[Step]] = [[] for _ in range(num_gpus)]
    for gpu in range(num_gpus):
        tokens = sequences[gpu] * n
        block = costs.attention_block(n, d, layer.heads, layer, with_ffn=False)
        forward[gpu] += _nonzero([k_.scaled(sequences[gpu]) for k_ in _as_group(block, "pre")])
        forward[gpu] += _nonzero([costs.router(tokens, d, num_experts, b), costs.top_k(tokens, num_experts, k, b)])

    dropped = 0
    expert_tokens: dict[int, list[float]] = defaultdict(list)
    dispatches = []
    for index, group in enumerate(placement.groups):
        tokens = [sequences[src] * n for src in group]
        routed = route(arch.routing, tokens, num_experts, k, expert_groups(arch, cluster), rng)
        capacity = arch.capacity_factor * k * routed.sum() / num_experts
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
        dispatches.append(AllToAll(key=f"dispatch[{index}]", name="dispatch", gpus=group, messages=messages))

    for gpu in range(num_gpus):
        group_index = gpu // len(placement.groups[0])
        dispatch = dispatches[group_index]
        loads = expert_tokens[gpu]
        expert_kernel = costs.ffn(sum(loads), d, layer.ffn_multiplier, b, group="ffn")
        expert_kernel = replace(expert_kernel, name="expert.ffn", launches=max(1, len(loads)))
        combine = replace(dispatch.transposed(), key=f"combine[{group_index}]", name="combine")
        if arch.overlap_degree > 1:
            forward[gpu].append(_overlapped(dispatch, _nonzero([expert_kernel]), combine, arch.overlap_degree))
        else:
            if dispatch.messages:
                forward[gpu].append(dispatch)
            forward[gpu] += _nonzero([expert_kernel])
            if dispatch.messages:
                forward[gpu].append(combine)
        forward[gpu] += _nonzero([costs.combine(sequences[gpu] * n, k, d, b)])

    experts_per_gpu = [len(placement.experts_on(g)) for g in range(num_gpus)]
    shared = costs.attention_params(d) + d * num_experts
    per_expert = costs.ffn_params(d, layer.ffn_multiplier)
    return LayerPlan(
        architecture=arch.kind,
        label=arch.name,
        num_experts=num_experts,
        sweep_mode="fixed_cluster",
        cluster=cluster,
        dtype=layer.dtype,
        programs=_with_backward(forward, layer.passes),
        params=costs.token_moe_params(layer, num_experts),
        weight_bytes_per_gpu=tuple((shared + per_expert * e) * b for e in experts_per_gpu),
        tokens=layer.batch * layer.seq_len,
        dropped_tokens=dropped,
    )


def _chunk_exchange(exchange: AllToAll, degree: int, index: int) -> AllToAll | None:
    if not len(exchange.messages):
        return None
    messages = exchange.messages
    part = Messages(src=messages.src, dst=messages.dst, payload_bytes=messages.payload_bytes / degree)
    return AllToAll(key=f"{exchange.key}.chunk{index}", name=exchange.name, gpus=exchange.gpus, messages=part)


def _overlapped(dispatch: AllToAll, kernels: list[Kernel], combine: AllToAll, degree: int) -> Pipeline:
    """The dispatch -> experts -> combine phase in ``degree`` overlapped chunks (:mod:`secmoe_sim.pipeline`)."""
    return Pipeline(
        name="overlap",
        chunks=tuple(
            Chunk(
                dispatch=_chunk_exchange(dispatch, degree, index),
                kernels=tuple(chunk_kernel(kernel, degree, index) for kernel in kernels),
                combine=_chunk_exchange(combine, degree, index),
            )
            for index in range(degree)
        ),
    )


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
            forward[gpu] += _nonzero(shard[:3])
            if tp > 1:
                forward[gpu].append(AllReduce(key=f"allreduce.attn[{index}]", name="allreduce.attn", gpus=group, payload_bytes=reduce_bytes))
            if layer.ffn:
                forward[gpu] += _nonzero(shard[3:])
                if tp > 1:
                    forward[gpu].append(AllReduce(key=f"allreduce.ffn[{index}]", name="allreduce.ffn", gpus=group, payload_bytes=reduce_bytes))

    weights = costs.dense_params(layer) / tp * DTYPE_BYTES[layer.dtype]
    return LayerPlan(
        architecture=arch.kind,
        label=arch.name,
        num_experts=1,
        sweep_mode="fixed_cluster",
        cluster=cluster,
        dtype=layer.dtype,
        programs=_with_backward(forward, layer.passes),
        params=costs.dense_params(layer),
        weight_bytes_per_gpu=tuple(weights for _ in range(num_gpus)),
        tokens=layer.batch * layer.seq_len,
    )
