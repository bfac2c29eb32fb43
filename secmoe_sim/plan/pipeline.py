"""Chunked overlap of dispatch, expert compute and combine (Tutel's ``a2a_ffn_overlap_degree``).

With overlap degree ``C`` the tokens of a token-MoE layer are split into ``C`` equal chunks: chunk
``i``'s expert FFN runs on the compute stream while chunk ``i + 1`` is dispatched and chunk
``i - 1`` is combined on the communication stream. Every GPU issues its communication in the same
fixed order, ``dispatch 1, dispatch 2, combine 1, dispatch 3, combine 2, ..., combine C``, so the
collectives of a group always meet in the same sequence and cannot deadlock. Degree 1 is the
sequential layer: dispatch, experts, combine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from secmoe_sim.plan.costs import Kernel

if TYPE_CHECKING:
    from secmoe_sim.plan.steps import AllToAll


@dataclass(frozen=True)
class Chunk:
    """One chunk of the overlapped phase on one GPU; ``None`` where the GPU has nothing to exchange."""

    dispatch: AllToAll | None
    kernels: tuple[Kernel, ...]
    combine: AllToAll | None


@dataclass(frozen=True)
class Pipeline:
    """The overlapped dispatch -> experts -> combine phase of one GPU, as a single program step."""

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
            name=f"{self.name}.backward",
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
