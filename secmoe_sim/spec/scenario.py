"""Scenario = cluster + workload + network options + faults + seed: everything that determines a run.

The model checks every rule that spans sections (the batch spreads over the GPUs, the expert counts
fit the placement rules, faults name GPUs that exist). Reading it from YAML, with one-line errors,
is :mod:`secmoe_sim.spec.loading`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from secmoe_sim.spec.base import FieldIssue, StrictModel
from secmoe_sim.spec.communication import Communication
from secmoe_sim.spec.faults import DegradedLink, Fault, SlowNode, Straggler
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.model import ModelSpec
from secmoe_sim.spec.network import NetworkOptions
from secmoe_sim.spec.placement import feasible_expert_counts, placement_error, sectional_feasibility_error
from secmoe_sim.spec.workload import (
    DenseArchitecture,
    GroupedRouting,
    SectionalMoEArchitecture,
    TokenMoEArchitecture,
    Workload,
)

FieldPath = tuple[str | int, ...]


class Scenario(StrictModel):
    """Everything that determines a run: the cluster, the layer and its architectures, the seed."""

    schema_version: Literal[1]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="names the output directory")
    description: str = ""
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="root of every random stream of the run")
    hardware: Cluster
    workload: Workload
    network: NetworkOptions = Field(default_factory=NetworkOptions, description="network model and collective algorithms")
    faults: list[Fault] = Field(default_factory=list, description="what-if faults: stragglers, slow nodes, degraded links")
    communication: Communication | None = Field(
        default=None,
        description="the software that moves each collective (docs/model.md, section 4.2); absent: the hardware's",
    )
    model: ModelSpec | None = Field(
        default=None,
        description="a whole model around the layer, for a training or decode step (docs/model.md, section 10); "
        "absent: one layer",
    )

    @property
    def stacks(self) -> Communication:
        """The communication stacks of the run: the scenario's, else the hardware's."""
        return self.communication if self.communication is not None else self.hardware.stack_settings()

    @model_validator(mode="after")
    def _dtype_has_a_peak(self) -> Scenario:
        dtype, peaks = self.workload.layer.dtype, self.hardware.gpu.peak_flops
        if dtype not in peaks:
            raise FieldIssue(
                ("workload", "layer", "dtype"),
                f"the GPU has no peak_flops entry for {dtype!r} (it has: {', '.join(peaks)}); add hardware.gpu.peak_flops.{dtype}",
            )
        return self

    @model_validator(mode="after")
    def _fits_cluster(self) -> Scenario:
        layer, cluster = self.workload.layer, self.hardware
        for index, arch in enumerate(self.workload.architectures):
            path: FieldPath = ("workload", "architectures", index)
            needs_even_batch = not (isinstance(arch, SectionalMoEArchitecture) and arch.sweep_mode == "expert_per_gpu")
            if needs_even_batch and layer.batch % cluster.num_gpus:
                raise FieldIssue(
                    ("workload", "layer", "batch"),
                    f"batch {layer.batch} does not spread evenly over {cluster.num_gpus} GPUs (whole sequences per GPU)",
                )
            if isinstance(arch, SectionalMoEArchitecture):
                _check_sectional(arch, path, layer.d_model, cluster)
                _check_reduction(arch.pre_expert.sequence_reduction, layer.seq_len, path + ("pre_expert", "sequence_reduction"))
            elif isinstance(arch, TokenMoEArchitecture):
                reason = placement_error(arch.num_experts, cluster.num_gpus)
                if reason:
                    raise FieldIssue(path + ("num_experts",), reason)
                if isinstance(arch.routing, GroupedRouting):
                    _check_grouped_routing(arch, path, cluster)
            elif isinstance(arch, DenseArchitecture):
                if cluster.num_gpus % arch.tensor_parallel:
                    raise FieldIssue(
                        path + ("tensor_parallel",),
                        f"tensor_parallel {arch.tensor_parallel} does not divide the {cluster.num_gpus} GPUs",
                    )
                if layer.heads % arch.tensor_parallel:
                    raise FieldIssue(
                        path + ("tensor_parallel",), f"tensor_parallel {arch.tensor_parallel} does not divide heads {layer.heads}"
                    )
                _check_reduction(arch.sequence_reduction, layer.seq_len, path + ("sequence_reduction",))
        return self

    @model_validator(mode="after")
    def _model_fits_the_workload(self) -> Scenario:
        layer, model = self.workload.layer, self.model
        if layer.passes in ("training_step", "decode") and model is None:
            raise FieldIssue(("workload", "layer", "passes"), f"{layer.passes} is a step of a whole model: add a `model` section")
        if layer.kv_cache_length is not None and not layer.decoding:
            raise FieldIssue(("workload", "layer", "kv_cache_length"), "only a decode step reads a KV cache (passes: decode)")
        if model is None:
            return self
        if layer.passes == "forward_backward":
            raise FieldIssue(
                ("workload", "layer", "passes"),
                "with a model section the pass is forward, training_step (backward, sync and optimizer) or decode",
            )
        kinds = [arch.kind for arch in self.workload.architectures]
        if model.other_layers == "token_moe" and "token_moe" not in kinds:
            raise FieldIssue(
                ("model", "other_layers"), "other_layers: token_moe needs a token_moe entry in workload.architectures"
            )
        if model.reduction == "carry":
            sectional = model.entry_positions()
            for index, arch in enumerate(self.workload.architectures):
                if isinstance(arch, SectionalMoEArchitecture) and arch.pre_expert.enabled:
                    r = arch.pre_expert.sequence_reduction
                    if layer.seq_len % r ** len(sectional):
                        raise FieldIssue(
                            ("model", "reduction"),
                            f"carry: {len(sectional)} layers of workload.architectures[{index}] each divide the sequence by "
                            f"{r}, and {r}^{len(sectional)} does not divide seq_len {layer.seq_len}",
                        )
        return self

    @model_validator(mode="after")
    def _one_place_for_the_stack(self) -> Scenario:
        if self.communication is not None and (self.hardware.message_overhead is not None or self.hardware.communication):
            raise FieldIssue(
                ("communication",),
                "the hardware names its own stack (message_overhead or communication), which this would silently "
                "replace: name the stack in one place",
            )
        return self

    @model_validator(mode="after")
    def _stacks_name_entries(self) -> Scenario:
        labels = {arch.name for arch in self.workload.architectures}
        for label in self.communication.architectures if self.communication is not None else {}:
            if label not in labels:
                raise FieldIssue(
                    ("communication", "architectures", label),
                    f"no architecture entry is named {label!r} (entries: {sorted(labels)})",
                )
        return self

    @model_validator(mode="after")
    def _faults_exist(self) -> Scenario:
        cluster = self.hardware
        for index, fault in enumerate(self.faults):
            if isinstance(fault, (Straggler, DegradedLink)) and fault.gpu >= cluster.num_gpus:
                raise FieldIssue(("faults", index, "gpu"), f"GPU {fault.gpu} does not exist ({cluster.num_gpus} GPUs)")
            if isinstance(fault, SlowNode) and fault.node >= cluster.nodes:
                raise FieldIssue(("faults", index, "node"), f"node {fault.node} does not exist ({cluster.nodes} nodes)")
            if isinstance(fault, DegradedLink) and fault.link == "nic" and cluster.inter_node is None:
                raise FieldIssue(("faults", index, "link"), "the cluster has no NICs (no inter_node fabric)")
        return self

    def expert_counts(self, arch: SectionalMoEArchitecture, placement: str | None = None) -> list[int]:
        """The E values to simulate for a sectional entry under ``placement`` (default: the entry's first):
        its list (those feasible under the placement), or every feasible E."""
        placement = placement or arch.placements[0]
        d_model = self.workload.layer.d_model
        if arch.experts == "all_feasible":
            return feasible_expert_counts(d_model, arch.min_section_width, self.hardware, arch.sweep_mode, placement)
        return sorted(
            e
            for e in arch.experts
            if sectional_feasibility_error(e, d_model, arch.min_section_width, self.hardware, arch.sweep_mode, placement) is None
        )

    def with_values(self, values: Mapping[str, Any]) -> Scenario:
        """A validated copy with each dotted path (``workload.layer.seq_len``) set to its value
        (``model_copy(update=...)`` would skip validation); bad paths or values raise ``ScenarioError``."""
        from secmoe_sim.spec.loading import with_values  # loading imports this module

        return with_values(self, values)

    def content_hash(self) -> str:
        """SHA-256 of the resolved scenario (includes resolved, so edits to an included file count)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _check_grouped_routing(arch: TokenMoEArchitecture, path: FieldPath, cluster: Cluster) -> None:
    routing = arch.routing
    assert isinstance(routing, GroupedRouting)
    groups = routing.groups or cluster.nodes
    where = path + ("routing",)
    if arch.num_experts % groups:
        raise FieldIssue(
            where, f"{arch.num_experts} experts do not split into {groups} groups (one per node unless 'groups' is set)"
        )
    if routing.top_groups > groups:
        raise FieldIssue(where + ("top_groups",), f"top_groups ({routing.top_groups}) exceeds the {groups} groups")
    if arch.top_k > routing.top_groups * (arch.num_experts // groups):
        raise FieldIssue(where + ("top_groups",), f"top_k ({arch.top_k}) exceeds the experts of {routing.top_groups} groups")


def _check_reduction(reduction: int, seq_len: int, path: FieldPath) -> None:
    if seq_len % reduction:
        raise FieldIssue(path, f"sequence_reduction {reduction} does not divide seq_len {seq_len} (whole pooled tokens)")


def _check_sectional(arch: SectionalMoEArchitecture, path: FieldPath, d_model: int, cluster: Cluster) -> None:
    """Every listed E must be feasible under at least one of the entry's placements (under each, with
    an explicit placement); with ``all``, each E runs under every placement where it is feasible."""
    pre = arch.pre_expert
    if not pre.enabled and pre.sequence_reduction != 1:
        raise FieldIssue(path + ("pre_expert", "sequence_reduction"), "sequence reduction needs the pre-expert block enabled")
    if not pre.enabled and pre.upsample:
        raise FieldIssue(path + ("pre_expert", "upsample"), "upsampling back to N tokens needs the pre-expert block enabled")
    if arch.experts == "all_feasible":
        if not any(feasible_expert_counts(d_model, arch.min_section_width, cluster, arch.sweep_mode, p) for p in arch.placements):
            raise FieldIssue(path + ("experts",), "no expert count is feasible for this d_model, min_section_width and cluster")
        return
    for position, num_experts in enumerate(arch.experts):
        reasons = [
            sectional_feasibility_error(num_experts, d_model, arch.min_section_width, cluster, arch.sweep_mode, placement)
            for placement in arch.placements
        ]
        if all(reasons):
            raise FieldIssue(path + ("experts", position), str(reasons[-1]))
