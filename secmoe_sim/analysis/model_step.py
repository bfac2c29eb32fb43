"""A whole model's step, composed from simulated layers: a forward pass, a training step, or one decode step.

The scenario's ``model`` section (:class:`~secmoe_sim.spec.model.ModelSpec`) stacks ``L`` layers: at
the entry positions the configuration being compared (a sectional entry at one E and placement, a
token-MoE or a dense entry), elsewhere ``other_layers``. Each distinct layer (configuration, sequence
length) is simulated once by the engine, as in a one-layer run (:func:`secmoe_sim.simulation.simulate`),
and the step is composed from those layers on the critical path (docs/model.md, section 10):

* **forward** and **decode**: embedding, every layer's wall-clock in turn, the LM head (and, in
  decode, the softmax over the vocabulary that picks the token);
* **training step**: embedding, every layer's forward, the LM head and loss; then the LM head's
  backward and every layer's backward in reverse order (with recomputation first, when asked), the
  embedding's backward; the gradient synchronisation overlapped with that backward; the optimizer.

Gradient synchronisation, the rule (PyTorch DDP's, with buckets kept inside a layer): the gradients
of a layer are cut into ``ceil(largest replica group's bytes / bucket_size)`` equal buckets, all ready
when the layer's backward ends; buckets are synchronised one at a time on the communication stream in
the order they become ready (LM head first, embedding last). Each bucket is one engine simulation of
ring collectives over every group of GPUs that hold the same parameters (``LayerPlan.replicas``: all
GPUs for shared weights, an expert's replicas for its weights), on the scenario's fabric and stack.
``all_reduce`` all-reduces; ``reduce_scatter`` (ZeRO-2) reduce-scatters, shards gradients and
optimizer state over the replicas, and all-gathers the updated weights after the optimizer, exposed.
The exposed synchronisation is what outlasts the backward. Not modelled: contention between the
gradient rings and the backward's own collectives (they share links in reality; each is simulated
alone), and buckets spanning two layers.

Layers follow one another on the critical path (each layer's wall-clock, every GPU synchronised by
its collectives); compute of one layer does not overlap the next. The optimizer step is one fused,
memory-bound kernel per layer over the GPU's local parameters (``OPTIMIZER_TRAFFIC_BYTES``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from secmoe_sim.analysis.layer_costs import LayerCosts
from secmoe_sim.analysis.model_memory import embedding_matrix_bytes, local_parameter_bytes, model_memory
from secmoe_sim.engine import run_plan
from secmoe_sim.errors import ScenarioError
from secmoe_sim.plan import costs
from secmoe_sim.plan.costs import BACKWARD_SUFFIX, Kernel
from secmoe_sim.plan.kernel_time import RooflineTimer
from secmoe_sim.plan.steps import AllGather, AllReduce, LayerPlan, ReduceScatter
from secmoe_sim.simulation import Results, layer_plans, simulate
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.loading import with_values
from secmoe_sim.spec.model import OPTIMIZER_FLOPS, OPTIMIZER_TRAFFIC_BYTES, ModelSpec
from secmoe_sim.spec.placement import sequences_per_gpu
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.units import DTYPE_BYTES
from secmoe_sim.spec.workload import DenseArchitecture, SectionalMoEArchitecture, TokenMoEArchitecture

OTHER_LABEL = "model-dense"  # the label of the dense block between the entry's layers
ConfigKey = tuple[str, str, int]  # (entry label, placement, E)


@dataclass(frozen=True)
class ModelResults:
    """One row per configuration (``summary``), and the layer-level results it was composed from."""

    scenario: Scenario
    summary: pd.DataFrame
    layers: Results


def layer_scenario(scenario: Scenario) -> Scenario:
    """The scenario whose layers the model stacks: each sectional layer's upsampling as ``model.reduction`` says
    (``upsample``: back to ``N`` tokens; ``carry``: the shorter sequence goes on to the next layer)."""
    if scenario.model is None:
        return scenario
    values = {
        f"workload.architectures.{index}.pre_expert.upsample": scenario.model.reduction == "upsample"
        for index, arch in enumerate(scenario.workload.architectures)
        if isinstance(arch, SectionalMoEArchitecture) and arch.pre_expert.enabled and arch.pre_expert.sequence_reduction > 1
    }
    return with_values(scenario, values) if values else scenario


def other_architecture(scenario: Scenario) -> DenseArchitecture | TokenMoEArchitecture:
    """The layer between the entry's: a dense block of the layer's dimensions, or the first token-MoE entry."""
    assert scenario.model is not None
    if scenario.model.other_layers == "token_moe":
        return next(a for a in scenario.workload.architectures if isinstance(a, TokenMoEArchitecture))
    return DenseArchitecture(kind="dense", label=OTHER_LABEL)


def simulate_model(scenario: Scenario, seed: int | None = None, layers: Results | None = None) -> ModelResults:
    """The model step of every configuration on the scenario's GPUs; ``layers``: the layer results of
    :func:`layer_scenario` already simulated (saves simulating them again)."""
    model = scenario.model
    if model is None:
        raise ValueError("the scenario has no model section")
    seed = scenario.seed if seed is None else seed
    base = layer_scenario(scenario)
    layers = layers if layers is not None else simulate(base, seed=seed)
    composer = _Composer(base, model, seed)
    composer.add(layers)
    rows = []
    for row in layers.summary.to_dict("records"):
        if row["role"] != "entry" or row["num_gpus"] != base.hardware.num_gpus:
            continue
        rows.append(composer.step(row))
    if not rows:
        raise ScenarioError(
            scenario.name,
            "model",
            f"no entry runs on the scenario's {base.hardware.num_gpus} GPUs (expert_per_gpu entries run on G = E GPUs); "
            "a model step is composed on the scenario's GPUs",
        )
    return ModelResults(scenario=scenario, summary=pd.DataFrame(rows), layers=layers)


def gradient_sync_plan(
    replicas: tuple[tuple[tuple[int, ...], float], ...], cluster: Cluster, dtype: str, kind: str, fraction: float, label: str
) -> LayerPlan:
    """One ring collective (``all_reduce``, ``reduce_scatter`` or ``all_gather``) per replica group, on
    ``fraction`` of the bytes each member holds; every GPU takes its groups in the order given."""
    step = {"all_reduce": AllReduce, "reduce_scatter": ReduceScatter, "all_gather": AllGather}[kind]
    programs: list[list] = [[] for _ in range(cluster.num_gpus)]
    for index, (gpus, size) in enumerate(replicas):
        collective = step(f"gradients[{index}]", f"gradients.{kind}", gpus, size * fraction)
        for gpu in gpus:
            programs[gpu].append(collective)
    return LayerPlan.of_programs(cluster, programs, dtype, f"{label}.gradients")


def bucket_count(replicas: tuple[tuple[tuple[int, ...], float], ...], bucket_size_bytes: float) -> int:
    """The buckets a layer's gradients are cut into: ``ceil(largest replica group's bytes / bucket size)``,
    none without gradients to synchronise."""
    largest = max((size for _, size in replicas), default=0.0)
    return max(1, math.ceil(largest / bucket_size_bytes)) if largest else 0


class _Composer:
    """Simulates each (configuration, sequence length) once and composes the steps from them."""

    def __init__(self, scenario: Scenario, model: ModelSpec, seed: int):
        self.scenario, self.model, self.seed = scenario, model, seed
        self.layer = scenario.workload.layer
        self.cluster = scenario.hardware
        self.costs: dict[tuple[ConfigKey, int], LayerCosts] = {}
        self.other = other_architecture(scenario)
        self.other_key: ConfigKey = (
            self.other.name,
            "",
            self.other.num_experts if isinstance(self.other, TokenMoEArchitecture) else 1,
        )
        self.b = DTYPE_BYTES[self.layer.dtype]
        self.timer = RooflineTimer(self.cluster.gpu, self.layer.dtype)
        self._synced: dict[tuple, float] = {}  # equal collectives (the embedding's, in every row) simulated once

    # --- layers ----------------------------------------------------------------------------------

    def add(self, results: Results) -> None:
        """Record the layer costs of every configuration of ``results``, at the sequence length it simulated."""
        seq_len = results.scenario.workload.layer.seq_len
        for row, plan in zip(results.summary.to_dict("records"), layer_plans(results.scenario, results.seed)):
            key = (row["label"], str(row["placement"]), int(row["num_experts"]))
            if row["role"] != "entry" or row["num_gpus"] != self.cluster.num_gpus or (key, seq_len) in self.costs:
                continue  # the model is composed on the scenario's GPUs
            timeline = results.timeline_of(row["label"], row["placement"], row["num_experts"])
            self.costs[(key, seq_len)] = self._layer_costs(row, plan, timeline)

    def _costs_of(self, key: ConfigKey, seq_len: int) -> LayerCosts:
        if (key, seq_len) not in self.costs:
            self.add(simulate(self._layer_only(key, seq_len), seed=self.seed))
        return self.costs[(key, seq_len)]

    def _layer_only(self, key: ConfigKey, seq_len: int) -> Scenario:
        """The scenario of one layer configuration at ``seq_len`` (the other layers, or a carried length):
        that entry alone, its stacks, and a one-layer model (the whole model's rules were checked once)."""
        archs = [a for a in self.scenario.workload.architectures if a.name == key[0]] or [self.other]
        values: dict = {
            "workload.layer.seq_len": seq_len,
            "workload.architectures": [a.model_dump(mode="json") for a in archs],
            "model": {"layers": 1, "vocab_size": 0},
        }
        if self.layer.decoding:  # a carried sequence has a carried cache
            values["workload.layer.kv_cache_length"] = max(1, self.layer.context_length * seq_len // self.layer.seq_len)
        communication = self.scenario.communication
        if communication is not None and communication.architectures:
            kept = {label: stack for label, stack in communication.architectures.items() if label in {a.name for a in archs}}
            values["communication"] = communication.model_copy(update={"architectures": kept}).model_dump(mode="json")
        return with_values(self.scenario, values, source=f"{self.scenario.name} (model layer at N = {seq_len})")

    def _layer_costs(self, row: dict, plan: LayerPlan, timeline: pd.DataFrame) -> LayerCosts:
        wall = float(row["wall_clock_s"])
        ops = timeline[timeline["kind"] != "transfer"]
        forward_rows = ops[~ops["label"].astype(str).str.endswith(BACKWARD_SUFFIX)]
        forward_s = float(forward_rows["finished_at"].max()) if self.layer.has_backward and len(forward_rows) else wall
        critical = ops[(ops["gpu"] == row["critical_gpu"]) & (ops["kind"] == "kernel")]
        attention = critical[
            critical["label"].astype(str).str.contains("attention") & ~critical["label"].astype(str).str.endswith(BACKWARD_SUFFIX)
        ]
        buckets = bucket_count(plan.replicas, self.model.bucket_size)
        training = self.layer.training_step
        kind = self.model.gradient_sync
        bucket_s = self._sync_s(plan.replicas, kind, 1 / buckets, plan.label) if training and buckets else 0.0
        gather_s = self._sync_s(plan.replicas, "all_gather", 1.0, plan.label) if training and kind == "reduce_scatter" else 0.0
        return LayerCosts(
            wall_s=wall,
            forward_s=forward_s,
            attention_forward_s=float((attention["finished_at"] - attention["started_at"]).sum()),
            flops=float(row["flops"]),
            params=float(row["params"]),
            terms=plan.memory_terms(),
            replicas=plan.replicas,
            bucket_s=bucket_s,
            buckets=buckets,
            weight_gather_s=gather_s,
        )

    def _sync_s(self, replicas: tuple[tuple[tuple[int, ...], float], ...], kind: str, fraction: float, label: str) -> float:
        """Wall-clock of one collective per replica group, all at once, on ``fraction`` of each group's bytes."""
        if not replicas:
            return 0.0
        stacks = self.scenario.stacks.for_entry(label)
        key = (replicas, kind, fraction, stacks.model_dump_json())
        if key not in self._synced:
            plan = gradient_sync_plan(replicas, self.cluster, self.layer.dtype, kind, fraction, label)
            run = run_plan(plan, None, self.scenario.network, faults=self.scenario.faults, communication=stacks)
            self._synced[key] = float(max(run.finished_at))
        return self._synced[key]

    # --- the step --------------------------------------------------------------------------------

    def _stack(self, key: ConfigKey) -> list[tuple[bool, LayerCosts]]:
        """The model's layers in order: (is the entry's layer, its costs), sequence lengths carried as asked."""
        positions = set(self.model.entry_positions())
        arch = next((a for a in self.scenario.workload.architectures if a.name == key[0]), None)
        reduction = (
            arch.pre_expert.sequence_reduction
            if isinstance(arch, SectionalMoEArchitecture) and arch.pre_expert.enabled and self.model.reduction == "carry"
            else 1
        )
        length, stack = self.layer.seq_len, []
        for position in range(self.model.layers):
            if position in positions:
                stack.append((True, self._costs_of(key, length)))
                length //= reduction
            else:
                stack.append((False, self._costs_of(self.other_key, length)))
        return stack

    def _kernel_s(self, kernel: Kernel) -> float:
        return self.timer.kernel_time_s(kernel) + self.timer.launch_time_s(kernel)

    def step(self, row: dict) -> dict:
        key: ConfigKey = (row["label"], str(row["placement"]), int(row["num_experts"]))
        stack = self._stack(key)
        layer, model, cluster, b = self.layer, self.model, self.cluster, self.b
        gpus = cluster.num_gpus
        sequences = sequences_per_gpu(layer.batch, gpus)
        local_tokens = max(sequences) * layer.query_tokens
        d, vocabulary = layer.d_model, model.vocab_size
        embedding = costs.embedding_lookup(local_tokens, d, b)
        head = (
            [costs.lm_head(local_tokens, d, vocabulary, b), costs.cross_entropy(local_tokens, vocabulary, b)]
            if vocabulary
            else []
        )
        embed_f = self._kernel_s(embedding) if vocabulary else 0.0
        head_f = sum(self._kernel_s(k) for k in head)
        training = layer.training_step
        entry_s = sum(c.wall_s + (self._recompute_s(c) if training else 0.0) for is_entry, c in stack if is_entry)
        other_s = sum(c.wall_s + (self._recompute_s(c) if training else 0.0) for is_entry, c in stack if not is_entry)
        all_tokens = layer.batch * layer.query_tokens
        whole_head = [costs.lm_head(all_tokens, d, vocabulary, b), costs.cross_entropy(all_tokens, vocabulary, b)]
        flops = sum(c.flops for _, c in stack) + (costs.pass_flops(whole_head, training) if vocabulary else 0.0)
        matrix_bytes = embedding_matrix_bytes(model, layer)
        result = {
            "scenario": self.scenario.name,
            "architecture": row["architecture"],
            "label": row["label"],
            "placement": row["placement"],
            "num_experts": row["num_experts"],
            "num_gpus": gpus,
            "passes": layer.passes,
            "layers": model.layers,
            "entry_layers": sum(1 for is_entry, _ in stack if is_entry),
            "model_params": sum(c.params for _, c in stack) + model.embedding_matrices * vocabulary * d,
            "model_flops": flops,
        }
        if training:
            phases = {"forward_s": embed_f + sum(c.forward_s for _, c in stack) + head_f}
            phases |= self._training_phases(stack, embedding, head, matrix_bytes, phases["forward_s"])
        else:
            phases = {"forward_s": embed_f + sum(c.wall_s for _, c in stack) + head_f, "embedding_head_backward_s": 0.0}
            phases |= dict.fromkeys(
                ("backward_s", "recompute_s", "sync_s", "sync_exposed_s", "optimizer_s", "weight_gather_s"), 0.0
            )
        step_s = (
            phases["forward_s"]
            + phases["backward_s"]
            + phases["sync_exposed_s"]
            + phases["optimizer_s"]
            + phases["weight_gather_s"]
        )
        head_backward_s = phases.pop("embedding_head_backward_s")
        memory = model_memory(stack, self.model, layer, cluster.num_gpus, local_tokens, training)
        peak_flops = cluster.gpu.peak_for(layer.dtype)
        result |= {
            "step_time_s": step_s,
            "tokens_per_s": all_tokens / step_s,
            "tokens_per_s_per_gpu": all_tokens / step_s / gpus,
            "time_per_output_token_s": step_s if layer.decoding else float("nan"),
            "mfu": flops / (step_s * gpus * peak_flops),
            **phases,
            "entry_layers_s": entry_s,
            "other_layers_s": other_s,
            "embedding_head_s": embed_f + head_f + head_backward_s,
            **memory,
            "memory_capacity_bytes": cluster.gpu.memory_capacity,
            "oom": bool(memory["peak_memory_bytes"] > cluster.gpu.memory_capacity),
        }
        return result

    def _recompute_s(self, layer_costs: LayerCosts) -> float:
        if self.model.recompute == "full":
            return layer_costs.forward_s
        if self.model.recompute == "selective":
            return layer_costs.attention_forward_s
        return 0.0

    def _training_phases(
        self,
        stack: list[tuple[bool, LayerCosts]],
        embedding: Kernel,
        head: list[Kernel],
        matrix_bytes: float,
        forward_end_s: float,
    ) -> dict[str, float]:
        """Backward, recomputation, the bucketed gradient synchronisation overlapped with it, the optimizer."""
        model, gpus = self.model, self.cluster.num_gpus
        kind = model.gradient_sync
        everyone = tuple(range(gpus))
        matrices = [((everyone, matrix_bytes),)] * model.embedding_matrices if gpus > 1 and matrix_bytes else []
        head_b = sum(self._kernel_s(k.backward()) for k in head)
        embed_b = self._kernel_s(embedding.backward()) if model.vocab_size else 0.0
        queue: list[tuple[float, float]] = []  # (ready at, duration) of each gradient bucket, in ready order

        def buckets_of(replicas, ready_s: float) -> None:
            count = bucket_count(replicas, model.bucket_size)
            if count:
                duration = self._sync_s(replicas, kind, 1 / count, "embedding")
                queue.extend([(ready_s, duration)] * count)

        clock = forward_end_s + head_b
        if model.embedding_matrices == 2 and matrices:
            buckets_of(matrices[1], clock)
        recompute_s = 0.0
        for _, layer_costs in reversed(stack):
            recompute = self._recompute_s(layer_costs)
            recompute_s += recompute
            clock += recompute + layer_costs.backward_s
            queue.extend([(clock, layer_costs.bucket_s)] * layer_costs.buckets)
        clock += embed_b
        if matrices:
            buckets_of(matrices[0], clock)
        backward_end = clock
        busy_until = 0.0
        for ready, duration in queue:
            busy_until = max(busy_until, ready) + duration
        exposed = max(0.0, busy_until - backward_end)
        gather_s = sum(c.weight_gather_s for _, c in stack)
        if kind == "reduce_scatter" and matrices:
            gather_s += sum(self._sync_s(m, "all_gather", 1.0, "embedding") for m in matrices)
        return {
            "backward_s": backward_end - forward_end_s,
            "recompute_s": recompute_s,
            "sync_s": sum(duration for _, duration in queue),
            "sync_exposed_s": exposed,
            "optimizer_s": self._optimizer_s(stack, matrix_bytes),
            "weight_gather_s": gather_s,
            "embedding_head_backward_s": head_b + embed_b,
        }

    def _optimizer_s(self, stack: list[tuple[bool, LayerCosts]], matrix_bytes: float) -> float:
        params = local_parameter_bytes(stack, self.model, self.cluster.num_gpus, matrix_bytes).max() / self.b
        optimizer = self.model.optimizer
        kernel = costs.memory_op(
            "optimizer", "model", OPTIMIZER_FLOPS[optimizer] * params, OPTIMIZER_TRAFFIC_BYTES[optimizer] * params
        )
        kernel = replace(kernel, launches=len(stack) + self.model.embedding_matrices)  # one fused step per layer and matrix
        return self._kernel_s(kernel)


def as_layer_summary(found: ModelResults) -> pd.DataFrame:
    """The model rows in the columns of a layer summary, so the comparisons and ``recommend`` rank model
    steps as they rank layers: ``wall_clock_s`` is the step, ``params`` the model's, ``flops_per_token`` the
    model's FLOPs per processed token, ``oom`` the model's memory."""
    summary = found.summary
    layer = found.scenario.workload.layer
    tokens = layer.batch * layer.query_tokens
    return pd.DataFrame(
        {
            "label": summary["label"],
            "architecture": summary["architecture"],
            "num_experts": summary["num_experts"],
            "placement": summary["placement"],
            "role": "entry",
            "num_gpus": summary["num_gpus"],
            "wall_clock_s": summary["step_time_s"],
            "gpu_seconds": summary["step_time_s"] * summary["num_gpus"],
            "params": summary["model_params"],
            "flops_per_token": summary["model_flops"] / tokens,
            "peak_memory_bytes": summary["peak_memory_bytes"],
            "oom": summary["oom"],
        }
    )
