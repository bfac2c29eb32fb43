"""The op graph of one layer: the steps a GPU runs (kernels, collectives) and the plan that holds them.

A :class:`LayerPlan` is what the engine executes and what the analytical model sums. Each
architecture builds its plan in its own module (:mod:`~secmoe_sim.plan.sectional`,
:mod:`~secmoe_sim.plan.token_moe`, :mod:`~secmoe_sim.plan.dense`) from the scenario alone (plus a
random generator for token routing), so every FLOP and byte the simulation moves can be traced back
to a formula in :mod:`secmoe_sim.plan.costs`. With ``forward_backward`` a program continues with its
forward steps in reverse order: each kernel's backward, each all-to-all transposed
(:func:`with_backward`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from secmoe_sim.plan.costs import BACKWARD_SUFFIX, Kernel
from secmoe_sim.spec.hardware import Cluster


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
    def of(cls, messages: Iterable[Message]) -> Messages:
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

    def reversed(self) -> Messages:
        """Every message in the opposite direction."""
        return Messages(src=self.dst, dst=self.src, payload_bytes=self.payload_bytes)


@dataclass(frozen=True, eq=False)
class AllToAll:
    """An all-to-all(-v) among ``gpus``: each message is one point-to-point transfer.

    Built from a list of :class:`Message` with :meth:`of`, or from a per-pair byte matrix with
    :meth:`from_matrix`. How the bytes travel (all pairs at once, in rounds, or through node-level
    aggregation) is the engine's all-to-all algorithm.
    """

    key: str
    name: str
    gpus: tuple[int, ...]
    messages: Messages

    @classmethod
    def of(cls, key: str, name: str, gpus: tuple[int, ...], messages: Iterable[Message]) -> AllToAll:
        """An all-to-all of the given point-to-point messages."""
        return cls(key, name, gpus, Messages.of(messages))

    @classmethod
    def from_matrix(cls, key: str, name: str, gpus: tuple[int, ...], byte_matrix: np.ndarray) -> AllToAll:
        """All-to-all-v: ``byte_matrix[i, j]`` bytes from ``gpus[i]`` to ``gpus[j]``; zeros and the diagonal send nothing."""
        matrix = np.asarray(byte_matrix, dtype=float)
        sending = (matrix > 0) & ~np.eye(len(gpus), dtype=bool)
        rows, columns = np.nonzero(sending)
        members = np.asarray(gpus, dtype=np.int64)
        return cls(key, name, tuple(gpus), Messages(src=members[rows], dst=members[columns], payload_bytes=matrix[rows, columns]))

    def transposed(self) -> AllToAll:
        """The same exchange in the opposite direction (a backward pass, a gather after a scatter)."""
        return AllToAll(
            key=f"{self.key}{BACKWARD_SUFFIX}",
            name=f"{self.name}{BACKWARD_SUFFIX}",
            gpus=self.gpus,
            messages=self.messages.reversed(),
        )

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

    def transposed(self) -> AllReduce:
        return replace(self, key=f"{self.key}{BACKWARD_SUFFIX}", name=f"{self.name}{BACKWARD_SUFFIX}")


@dataclass(frozen=True)
class AllGather:
    """A ring all-gather: each of ``gpus`` (in ring order) ends with all ``payload_bytes``, one ``1/t`` shard from each."""

    key: str
    name: str
    gpus: tuple[int, ...]
    payload_bytes: float

    def transposed(self) -> ReduceScatter:
        """The backward of an all-gather is a reduce-scatter of the gradients."""
        return ReduceScatter(
            key=f"{self.key}{BACKWARD_SUFFIX}",
            name=f"{self.name}{BACKWARD_SUFFIX}",
            gpus=self.gpus,
            payload_bytes=self.payload_bytes,
        )


@dataclass(frozen=True)
class ReduceScatter:
    """A ring reduce-scatter: ``payload_bytes`` on each of ``gpus``, summed, each GPU keeping one ``1/t`` shard."""

    key: str
    name: str
    gpus: tuple[int, ...]
    payload_bytes: float

    def transposed(self) -> AllGather:
        """The backward of a reduce-scatter is an all-gather of the gradient shards."""
        return AllGather(
            key=f"{self.key}{BACKWARD_SUFFIX}",
            name=f"{self.name}{BACKWARD_SUFFIX}",
            gpus=self.gpus,
            payload_bytes=self.payload_bytes,
        )


@dataclass(frozen=True)
class Chunk:
    """One chunk of the overlapped phase on one GPU; ``None`` where the GPU has nothing to exchange."""

    dispatch: AllToAll | None
    kernels: tuple[Kernel, ...]
    combine: AllToAll | None


@dataclass(frozen=True)
class Pipeline:
    """The overlapped dispatch -> experts -> combine phase of one GPU, as a single program step.

    Chunked overlap of dispatch, expert compute and combine (Tutel's ``a2a_ffn_overlap_degree``).

    With overlap degree ``C`` the tokens of a token-MoE layer are split into ``C`` equal chunks: chunk
    ``i``'s expert FFN runs on the compute stream while chunk ``i + 1`` is dispatched and chunk
    ``i - 1`` is combined on the communication stream. Every GPU issues its communication in the same
    fixed order, ``dispatch 1, dispatch 2, combine 1, dispatch 3, combine 2, ..., combine C``, so the
    collectives of a group always meet in the same sequence and cannot deadlock. Degree 1 is the
    sequential layer: dispatch, experts, combine.
    """

    name: str
    chunks: tuple[Chunk, ...]

    def communication_order(self) -> list[tuple[int, str]]:
        """``(chunk, "dispatch" | "combine")`` in the order every GPU issues them."""
        order = [(0, "dispatch")]
        for index in range(1, len(self.chunks)):
            order += [(index, "dispatch"), (index - 1, "combine")]
        order.append((len(self.chunks) - 1, "combine"))
        return order

    def collectives(self) -> list[AllToAll]:
        """This GPU's collectives in issue order (those it takes part in)."""
        found: list[AllToAll] = []
        for index, phase in self.communication_order():
            collective = getattr(self.chunks[index], phase)
            if collective is not None:
                found.append(collective)
        return found

    @property
    def kernels(self) -> list[Kernel]:
        return [kernel for chunk in self.chunks for kernel in chunk.kernels]

    def transposed(self) -> Pipeline:
        """The backward phase: gradients travel combine -> experts (backward) -> dispatch, in chunks."""
        return Pipeline(
            name=f"{self.name}{BACKWARD_SUFFIX}",
            chunks=tuple(
                Chunk(
                    dispatch=chunk.combine.transposed() if chunk.combine is not None else None,
                    kernels=tuple(kernel.backward() for kernel in reversed(chunk.kernels)),
                    combine=chunk.dispatch.transposed() if chunk.dispatch is not None else None,
                )
                for chunk in self.chunks
            ),
        )


def chunk_kernel(kernel: Kernel, degree: int, index: int) -> Kernel:
    """One of ``degree`` equal parts of a kernel (its own launch)."""
    return replace(kernel.scaled(1.0 / degree), name=f"{kernel.name}[{index}]")


def _chunk_exchange(exchange: AllToAll, degree: int, index: int) -> AllToAll | None:
    if not len(exchange.messages):
        return None
    messages = exchange.messages
    part = Messages(src=messages.src, dst=messages.dst, payload_bytes=messages.payload_bytes / degree)
    return AllToAll(key=f"{exchange.key}.chunk{index}", name=exchange.name, gpus=exchange.gpus, messages=part)


def overlapped_phase(dispatch: AllToAll, kernels: list[Kernel], combine: AllToAll, degree: int) -> Pipeline:
    """The dispatch -> experts -> combine phase in ``degree`` overlapped chunks of equal size (:class:`Pipeline`):
    token MoE's dispatch and combine, a sectional layer's scatter and gather."""
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


RingCollective = AllReduce | AllGather | ReduceScatter
Collective = AllToAll | AllReduce | AllGather | ReduceScatter
Step = Kernel | AllToAll | AllReduce | AllGather | ReduceScatter | Pipeline


def flat_steps(program: tuple[Step, ...]) -> list[Kernel | Collective]:
    """A program with every overlapped pipeline expanded into its kernels and collectives."""
    flat: list[Kernel | Collective] = []
    for step in program:
        if isinstance(step, Pipeline):
            flat += step.kernels
            flat += step.collectives()
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
    placement: str = ""  # sectional layers: where the experts run (spec.placement); empty for other architectures
    role: str = "entry"  # "entry": a scenario entry; "same_gpus": a baseline re-planned on another entry's GPU count
    # Parameters held identically by several GPUs, which data-parallel training keeps in sync: per group
    # of GPUs, the bytes each member holds (:func:`replica_groups`). Parameters on one GPU only are absent.
    replicas: tuple[tuple[tuple[int, ...], float], ...] = ()

    @classmethod
    def of_programs(
        cls, cluster: Cluster, programs: Iterable[Iterable[Step]], dtype: str, label: str, tokens: int = 1
    ) -> LayerPlan:
        """A plan of hand-built per-GPU programs with no layer behind it (a collective alone, a benchmark,
        a test): no parameters, no weights, ``tokens`` tokens."""
        built = tuple(tuple(program) for program in programs)
        return cls(
            architecture=label,
            label=label,
            num_experts=1,
            sweep_mode="fixed_cluster",
            cluster=cluster,
            dtype=dtype,
            programs=built,
            params=0.0,
            weight_bytes_per_gpu=(0.0,) * len(built),
            tokens=tokens,
        )

    @property
    def flops(self) -> float:
        """FLOPs of the whole layer, all GPUs."""
        return sum(step.flops for program in self.programs for step in flat_steps(program) if isinstance(step, Kernel))

    @property
    def flops_per_token(self) -> float:
        return self.flops / self.tokens

    def memory_terms(self) -> list[dict[str, float]]:
        """Per GPU, the terms peak memory is made of (bytes): ``weights``; ``saved``, every forward op's
        inputs kept for the backward; ``saved_scores``, the part of it that is attention score matrices;
        ``window``, the largest forward input + output + workspace of two consecutive ops; ``workspace``,
        the largest op workspace; ``buffers``, the largest send + receive volume of one collective; ``cache``,
        the KV cache in decode; ``layer_input``, the activations that enter the layer."""
        terms = []
        for gpu, program in enumerate(self.programs):
            steps = flat_steps(program)
            kernels = [s for s in steps if isinstance(s, Kernel)]
            forward = [k for k in kernels if not k.is_backward]
            window = max(
                (a.activation_bytes + b.activation_bytes + b.workspace_bytes for a, b in itertools.pairwise(forward)),
                default=sum(k.activation_bytes + k.workspace_bytes for k in forward),
            )
            terms.append(
                {
                    "weights": self.weight_bytes_per_gpu[gpu],
                    "saved": sum(k.saved_bytes for k in forward),
                    "saved_scores": sum(k.workspace_bytes for k in forward if k.primitive == "attention"),
                    "window": window,
                    "workspace": max((k.workspace_bytes for k in kernels), default=0.0),
                    "buffers": max((_buffer_bytes(s, gpu) for s in steps if not isinstance(s, Kernel)), default=0.0),
                    "cache": sum(k.cache_bytes for k in forward),
                    "layer_input": forward[0].activation_bytes if forward else 0.0,
                }
            )
        return terms

    def peak_memory_bytes(self, has_backward: bool) -> list[float]:
        """Per-GPU peak memory of the layer alone, from :meth:`memory_terms`.

        Forward only: the weights plus, at worst, one op's input, output and workspace together (in
        decode, plus the KV cache). Forward+backward: weights and their gradients, every op's saved
        inputs (``Kernel.saved_bytes``: the standard accounting of Korthikanti et al. 2022, without
        dropout masks), the largest workspace. Both: the largest collective's buffers.
        """
        peaks = []
        for term in self.memory_terms():
            if has_backward:
                peaks.append(2 * term["weights"] + term["saved"] + term["workspace"] + term["buffers"])
            else:
                peaks.append(term["weights"] + term["window"] + term["buffers"] + term["cache"])
        return peaks


def _buffer_bytes(collective: Collective, gpu: int) -> float:
    if isinstance(collective, AllToAll):
        return collective.buffer_bytes_by_gpu.get(gpu, 0.0)
    return 2 * collective.payload_bytes if gpu in collective.gpus else 0.0


def replica_groups(held: Iterable[tuple[tuple[int, ...], float]]) -> tuple[tuple[tuple[int, ...], float], ...]:
    """``(GPUs, bytes each holds)`` pairs with equal GPU sets merged, single-GPU sets dropped (nothing to
    synchronise), in a fixed order (largest groups first), so every GPU meets its groups in one order."""
    merged: dict[tuple[int, ...], float] = defaultdict(float)
    for gpus, size in held:
        members = tuple(sorted(set(gpus)))
        if len(members) > 1 and size > 0:
            merged[members] += size
    return tuple(sorted(merged.items(), key=lambda item: (-len(item[0]), item[0])))


def with_backward(programs: list[list[Step]], has_backward: bool) -> tuple[tuple[Step, ...], ...]:
    """The programs, each continued with its steps' backward in reverse order when ``has_backward``."""
    if not has_backward:
        return tuple(tuple(p) for p in programs)
    complete = []
    for program in programs:
        backward = [s.backward() if isinstance(s, Kernel) else s.transposed() for s in reversed(program)]
        complete.append(tuple(program + backward))
    return tuple(complete)


def nonzero(kernels: list[Kernel]) -> list[Kernel]:
    return [k for k in kernels if k.flops > 0 or k.traffic_bytes > 0]


def as_group(kernels: list[Kernel], group: str) -> list[Kernel]:
    return [replace(k, group=group) for k in kernels]
