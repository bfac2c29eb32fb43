"""Scenario = cluster + workload + seed, loaded from YAML with one-line errors.

``load_scenario(path_or_name)`` accepts a file path or the name of a shipped scenario. A scenario
may include its hardware from another file (``hardware: ../hardware/my-cluster.yaml``, relative to
the scenario file), so a calibrated hardware description can be reused by many scenarios.

Every failure raises :class:`ScenarioError`, whose message is one line: the file, the field path,
the reason, and the YAML line where it is known.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from secmoe_sim.config import FieldIssue, StrictModel
from secmoe_sim.faults import DegradedLink, Fault, SlowNode, Straggler
from secmoe_sim.hardware import Cluster
from secmoe_sim.placement import feasible_expert_counts, placement_error, sectional_feasibility_error
from secmoe_sim.workload import (
    DenseArchitecture,
    GroupedRouting,
    SectionalMoEArchitecture,
    TokenMoEArchitecture,
    Workload,
)

SHIPPED_SCENARIOS = "scenarios"


class ScenarioError(Exception):
    """A scenario that cannot be loaded; ``str()`` is a single line naming file, field and reason."""

    def __init__(self, file: str, field: str, reason: str, line: int | None = None):
        self.file, self.field, self.reason, self.line = file, field, reason, line
        where = f"{file}:{line}" if line else file
        message = f"{where}: {field}: {reason}" if field else f"{where}: {reason}"
        super().__init__(" ".join(message.splitlines()))


class NetworkOptions(StrictModel):
    """How the simulated network moves bytes (docs/model.md, section 4)."""

    model: Literal["flows", "ports"] = Field(
        default="flows",
        description="flows: concurrent messages share every link max-min fairly; "
        "ports: capacity-1 ports, one message per link at a time in a fixed order",
    )
    mode: Literal["exact", "batched"] = Field(
        default="exact",
        description="flows only. exact: rates recomputed whenever a flow starts or finishes; "
        "batched: only once `tolerance` of the active flows have started or finished (large clusters)",
    )
    tolerance: float = Field(
        default=0.05, ge=0, lt=1,
        description="batched mode: fraction of the active flows that start or finish before rates are recomputed (0 is exact)",
    )
    all_to_all: Literal["direct", "pairwise", "hierarchical"] = Field(
        default="direct",
        description="all-to-all algorithm: direct (every pair at once), pairwise (G-1 rounds, i -> i+r), "
        "hierarchical (intra-node exchange by local rank, then one inter-node exchange per node pair and local rank)",
    )


class Scenario(StrictModel):
    """Everything that determines a run: the cluster, the layer and its architectures, the seed."""

    schema_version: Literal[1]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="names the output directory")
    description: str = ""
    seed: int = Field(default=0, ge=0, description="root of every random stream of the run")
    hardware: Cluster
    workload: Workload
    network: NetworkOptions = Field(default_factory=NetworkOptions, description="network model and collective algorithms")
    faults: list[Fault] = Field(default_factory=list, description="what-if faults: stragglers, slow nodes, degraded links")

    @model_validator(mode="after")
    def _fits_cluster(self) -> "Scenario":
        layer, cluster = self.workload.layer, self.hardware
        for index, arch in enumerate(self.workload.architectures):
            path: tuple[str | int, ...] = ("workload", "architectures", index)
            needs_even_batch = not (isinstance(arch, SectionalMoEArchitecture) and arch.sweep_mode == "expert_per_gpu")
            if needs_even_batch and layer.batch % cluster.num_gpus:
                raise FieldIssue(
                    ("workload", "layer", "batch"),
                    f"batch {layer.batch} does not spread evenly over {cluster.num_gpus} GPUs (whole sequences per GPU)",
                )
            if isinstance(arch, SectionalMoEArchitecture):
                _check_sectional(arch, path, layer.d_model, cluster)
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
        return self

    @model_validator(mode="after")
    def _faults_exist(self) -> "Scenario":
        cluster = self.hardware
        for index, fault in enumerate(self.faults):
            if isinstance(fault, (Straggler, DegradedLink)) and fault.gpu >= cluster.num_gpus:
                raise FieldIssue(("faults", index, "gpu"), f"GPU {fault.gpu} does not exist ({cluster.num_gpus} GPUs)")
            if isinstance(fault, SlowNode) and fault.node >= cluster.nodes:
                raise FieldIssue(("faults", index, "node"), f"node {fault.node} does not exist ({cluster.nodes} nodes)")
            if isinstance(fault, DegradedLink) and fault.link == "nic" and cluster.inter_node is None:
                raise FieldIssue(("faults", index, "link"), "the cluster has no NICs (no inter_node fabric)")
        return self

    def expert_counts(self, arch: SectionalMoEArchitecture) -> list[int]:
        """The E values to simulate for a sectional entry (its list, or every feasible E)."""
        if arch.experts == "all_feasible":
            return feasible_expert_counts(self.workload.layer.d_model, arch.min_section_width, self.hardware, arch.sweep_mode)
        return sorted(arch.experts)

    def content_hash(self) -> str:
        """SHA-256 of the resolved scenario (includes resolved, so edits to an included file count)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _check_grouped_routing(arch: TokenMoEArchitecture, path: tuple, cluster: Cluster) -> None:
    routing = arch.routing
    groups = routing.groups or cluster.nodes
    where = path + ("routing",)
    if arch.num_experts % groups:
        raise FieldIssue(where, f"{arch.num_experts} experts do not split into {groups} groups (one per node unless 'groups' is set)")
    if routing.top_groups > groups:
        raise FieldIssue(where + ("top_groups",), f"top_groups ({routing.top_groups}) exceeds the {groups} groups")
    if arch.top_k > routing.top_groups * (arch.num_experts // groups):
        raise FieldIssue(where + ("top_groups",), f"top_k ({arch.top_k}) exceeds the experts of {routing.top_groups} groups")


def _check_sectional(arch: SectionalMoEArchitecture, path: tuple, d_model: int, cluster: Cluster) -> None:
    if not arch.pre_expert.enabled and arch.pre_expert.sequence_reduction != 1:
        raise FieldIssue(path + ("pre_expert", "sequence_reduction"), "sequence reduction needs the pre-expert block enabled")
    if arch.experts == "all_feasible":
        if not feasible_expert_counts(d_model, arch.min_section_width, cluster, arch.sweep_mode):
            raise FieldIssue(path + ("experts",), "no expert count is feasible for this d_model, min_section_width and cluster")
        return
    for position, num_experts in enumerate(arch.experts):
        reason = sectional_feasibility_error(num_experts, d_model, arch.min_section_width, cluster, arch.sweep_mode)
        if reason:
            raise FieldIssue(path + ("experts", position), reason)


# --- loading ----------------------------------------------------------------------------------


def shipped_scenario_names() -> list[str]:
    folder = resources.files("secmoe_sim") / SHIPPED_SCENARIOS
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def file_or_shipped(path_or_name: str | Path, *folder: str) -> Path | None:
    """``path_or_name`` if it is a file, else the shipped ``<name>.yaml`` in the package ``folder``, else None."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = resources.files("secmoe_sim").joinpath(*folder, f"{path_or_name}.yaml")
    return Path(str(shipped)) if shipped.is_file() else None


def resolve_scenario_path(path_or_name: str | Path) -> Path:
    """A scenario file path, or the path of the shipped scenario of that name."""
    found = file_or_shipped(path_or_name, SHIPPED_SCENARIOS)
    if found is not None:
        return found
    raise ScenarioError(
        str(path_or_name), "", f"no such file, and no shipped scenario of that name (shipped: {', '.join(shipped_scenario_names())})"
    )


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load and validate a scenario; raises :class:`ScenarioError` (one line) on any problem."""
    path = resolve_scenario_path(path_or_name)
    data, tree = _read_yaml(path)
    if not isinstance(data, dict):
        raise ScenarioError(str(path), "", "expected a mapping of fields at the top level")
    hardware = data.get("hardware")
    if isinstance(hardware, str):
        data = {**data, "hardware": _load_included_cluster(path, hardware)}
    data = _with_routing_counts_read(path, data, tree)
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        raise _scenario_error(str(path), error, data, tree) from None


def load_cluster(path: str | Path) -> Cluster:
    """Load a stand-alone hardware file (the format of a scenario's ``hardware`` section)."""
    data, tree = _read_yaml(Path(path))
    try:
        return Cluster.model_validate(data)
    except ValidationError as error:
        raise _scenario_error(str(path), error, data, tree) from None


def _with_routing_counts_read(scenario_path: Path, data: dict, tree: yaml.Node | None) -> dict:
    """Replace ``routing: {kind: counts, file: F}`` by the numbers in F (relative to the scenario)."""
    architectures = (data.get("workload") or {}).get("architectures") if isinstance(data.get("workload"), dict) else None
    if not isinstance(architectures, list):
        return data
    resolved = []
    for index, arch in enumerate(architectures):
        routing = arch.get("routing") if isinstance(arch, dict) else None
        if isinstance(routing, dict) and routing.get("kind") == "counts" and "file" in routing:
            where = ["workload", "architectures", index, "routing", "file"]
            counts = _read_counts(scenario_path, routing["file"], _format_path(where), _yaml_line(tree, where))
            routing = {key: value for key, value in routing.items() if key != "file"} | {"counts": counts}
            arch = {**arch, "routing": routing}
        resolved.append(arch)
    return {**data, "workload": {**data["workload"], "architectures": resolved}}


def _read_counts(scenario_path: Path, name: object, field: str, line: int | None) -> list[float]:
    """Numbers separated by commas, spaces or newlines; ``#`` starts a comment."""
    if not isinstance(name, str):
        raise ScenarioError(str(scenario_path), field, "expected a file name", line)
    counts_path = scenario_path.parent / name
    try:
        text = counts_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(str(scenario_path), field, f"cannot read token counts file {name!r}: {error.__class__.__name__}", line) from None
    tokens = " ".join(row.split("#")[0] for row in text.splitlines()).replace(",", " ").split()
    try:
        return [float(token) for token in tokens]
    except ValueError as error:
        raise ScenarioError(str(counts_path), "", f"token counts must be numbers: {error}") from None


def _load_included_cluster(scenario_path: Path, include: str) -> Cluster:
    included = scenario_path.parent / include
    if not included.is_file():
        _, tree = _read_yaml(scenario_path)
        raise ScenarioError(
            str(scenario_path), "hardware", f"included hardware file {include!r} not found", _yaml_line(tree, ["hardware"])
        )
    return load_cluster(included)


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(path), "", "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(str(path), "", f"cannot read file: {error}") from None
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ScenarioError(str(path), "", f"not valid YAML: {problem}", mark.line + 1 if mark else None) from None


def _scenario_error(file: str, error: ValidationError, data: Any, tree: yaml.Node | None) -> ScenarioError:
    first = error.errors(include_url=False)[0]
    location = _data_path(first["loc"], data)
    reason = first["msg"].removeprefix("Value error, ")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldIssue):
        location = location + list(cause.path)
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        location = location + ["kind"]
    return ScenarioError(file, _format_path(location), reason, _yaml_line(tree, location))


def _data_path(loc: tuple, data: Any) -> list[str | int]:
    """Pydantic's error location reduced to keys that exist in the data.

    Pydantic adds the discriminator tag (``sectional_moe``) and validator names to locations;
    walking the data drops them, so the path reads as the user wrote the file.
    """
    path: list[str | int] = []
    node = data
    for item in loc:
        if isinstance(node, dict) and item in node:
            path.append(item)
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            path.append(item)
            node = node[item]
        elif isinstance(node, dict) and isinstance(item, str) and not item.startswith(("function-", "union")) and node.get("kind") != item:
            path.append(item)  # a missing or unknown field: name it
            node = None
    return path


def _format_path(path: list[str | int]) -> str:
    text = ""
    for item in path:
        if isinstance(item, int):
            text += f"[{item}]"
            continue
        name = item if str(item).isidentifier() else repr(item)
        text += f".{name}" if text else name
    return text or "(top level)"


def _yaml_line(tree: yaml.Node | None, path: list[str | int]) -> int | None:
    """The 1-based line of the deepest node of ``path`` found in the YAML tree."""
    node, line = tree, (tree.start_mark.line + 1 if tree is not None else None)
    for item in path:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == item), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(item, int) and item < len(node.value):
            node = node.value[item]
            line = node.start_mark.line + 1
        else:
            break
    return line
