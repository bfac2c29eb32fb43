"""Reading scenario and hardware files: YAML in, a validated :class:`Scenario` out, or one line of error.

``load_scenario(path_or_name)`` accepts a file path or the name of a shipped scenario. A scenario
may include its hardware from another file (``hardware: ../hardware/my-cluster.yaml``, relative to
the scenario file) or name a shipped hardware file (``hardware: h100-hgx``, ``secmoe-sim list``), so
one hardware description serves many scenarios. A scenario may also extend another
(``extends: h100-nvlink-8``): the base's sections, replaced by the sections this file gives, then
``overrides`` (dotted paths, as in sweep files) set field by field. A ``hardware`` given this way that
names its own communication stack brings that stack: the base's scenario-level ``communication``,
chosen for the base's cluster, is dropped unless this file gives one.

Every failure raises :class:`~secmoe_sim.errors.ScenarioError`, whose message is one line: the
file, the field path, the reason, and the YAML line where it is known. The helpers that read YAML
and turn a pydantic error into that line are public: sweep files use them too.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from secmoe_sim.errors import ScenarioError
from secmoe_sim.spec.base import FieldIssue
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.paths import path_error, with_value
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.units import SIZE_UNITS

SHIPPED_SCENARIOS = "scenarios"
SHIPPED_STACKS = "stacks"
SHIPPED_HARDWARE = "hardware"
MAX_EXTENDS_DEPTH = 8  # a chain of bases longer than this is a mistake (or a loop through copies)
STACK_SLOTS = ("default", "all_to_all", "all_reduce", "all_gather", "reduce_scatter")


def shipped_names(*folder: str) -> list[str]:
    """The names of the YAML files shipped in the package ``folder``, sorted."""
    found = resources.files("secmoe_sim").joinpath(*folder)
    return sorted(p.name.removesuffix(".yaml") for p in found.iterdir() if p.name.endswith(".yaml"))


def shipped_scenario_names() -> list[str]:
    """The names of the scenarios shipped in the package, sorted."""
    return shipped_names(SHIPPED_SCENARIOS)


def shipped_hardware_names() -> list[str]:
    """The names of the hardware files shipped in the package (``secmoe_sim/hardware``), sorted."""
    return shipped_names(SHIPPED_HARDWARE)


def file_or_shipped(path_or_name: str | Path, *folder: str) -> Path | None:
    """``path_or_name`` if it is a file, else the shipped ``<name>.yaml`` in the package ``folder``, else None."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = resources.files("secmoe_sim").joinpath(*folder, f"{path_or_name}.yaml")
    return Path(str(shipped)) if shipped.is_file() else None


def beside_or_shipped(
    file: Path, name: str, folder: str, kind: str, near: str, field: list[str | int], tree: yaml.Node | None
) -> Path:
    """What a file names by ``name``: a file beside ``file``, else the shipped ``<name>.yaml`` of ``folder``.

    Else one :class:`ScenarioError` at ``field`` of ``file``: no ``kind`` file ``near`` it, no shipped one,
    and the shipped names to choose from.
    """
    relative = file.parent / name
    found = relative if relative.is_file() else file_or_shipped(name, folder)
    if found is None:
        raise ScenarioError(
            str(file),
            format_path(field),
            f"no {kind} file {name!r} next to {near} and no shipped {kind} of that name (shipped: {', '.join(shipped_names(folder))})",
            yaml_line(tree, field),
        )
    return found


def resolve_scenario_path(path_or_name: str | Path) -> Path:
    """A scenario file path, or the path of the shipped scenario of that name."""
    found = file_or_shipped(path_or_name, SHIPPED_SCENARIOS)
    if found is not None:
        return found
    raise ScenarioError(
        str(path_or_name),
        "",
        f"no such file, and no shipped scenario of that name (shipped: {', '.join(shipped_scenario_names())})",
    )


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load and validate a scenario; raises :class:`ScenarioError` (one line) on any problem."""
    return _load_scenario(resolve_scenario_path(path_or_name), ())


def _load_scenario(path: Path, extending: tuple[Path, ...]) -> Scenario:
    """The scenario of ``path``; ``extending`` are the files that extend it (to refuse a loop)."""
    data, tree = read_yaml(path)
    if not isinstance(data, dict):
        raise ScenarioError(str(path), "", "expected a mapping of fields at the top level")
    if "extends" in data:
        return _extended(path, data, tree, extending)
    if "overrides" in data:
        raise ScenarioError(
            str(path), "overrides", "only a scenario that extends another has overrides", yaml_line(tree, ["overrides"])
        )
    data = _with_files_read(path, data, tree)
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        raise validation_error(str(path), error, data, tree) from None


def _with_files_read(path: Path, data: dict, tree: yaml.Node | None) -> dict:
    """The scenario data with every included file read in: hardware, routing counts, stacks."""
    hardware = data.get("hardware")
    if isinstance(hardware, str):
        data = {**data, "hardware": _included_cluster_data(path, hardware, tree)}
    elif isinstance(hardware, dict) and isinstance(hardware.get("communication"), dict):
        stacks = _stacks_read(path, hardware["communication"], ["hardware", "communication"], tree)
        data = {**data, "hardware": {**hardware, "communication": stacks}}
    data = _with_routing_counts_read(path, data, tree)
    if isinstance(data.get("communication"), dict):
        data = {**data, "communication": _stacks_read(path, data["communication"], ["communication"], tree)}
    return data


def _extended(path: Path, data: dict, tree: yaml.Node | None, extending: tuple[Path, ...]) -> Scenario:
    """A scenario that extends a base: the base's sections, those this file gives instead, then its overrides."""
    base_name = data["extends"]
    if not isinstance(base_name, str) or not base_name:
        raise ScenarioError(
            str(path), "extends", "expected a scenario file or a shipped scenario name", yaml_line(tree, ["extends"])
        )
    base_path = beside_or_shipped(path, base_name, SHIPPED_SCENARIOS, "scenario", "this one", ["extends"], tree)
    chain = (*extending, path.resolve())
    if base_path.resolve() in chain or len(chain) > MAX_EXTENDS_DEPTH:
        raise ScenarioError(str(path), "extends", f"{base_name!r} extends this file again (a loop)", yaml_line(tree, ["extends"]))
    base = _load_scenario(base_path, chain)
    overrides = data.get("overrides", {})
    if not isinstance(overrides, dict):
        raise ScenarioError(
            str(path), "overrides", "expected a mapping of dotted field paths to values", yaml_line(tree, ["overrides"])
        )
    sections = _with_files_read(path, {key: value for key, value in data.items() if key not in ("extends", "overrides")}, tree)
    merged = base.model_dump(mode="json") | sections
    hardware = sections.get("hardware")
    if isinstance(hardware, dict) and hardware.get("communication") and "communication" not in sections:
        merged.pop("communication", None)  # a cluster that names its stack brings it: the base's was for the base's cluster
    try:
        scenario = Scenario.model_validate(merged)
    except ValidationError as error:
        raise validation_error(str(path), error, merged, tree) from None
    for field in overrides:
        reason = path_error(scenario, str(field))
        if reason:
            raise ScenarioError(str(path), f"overrides.{field}", reason, yaml_line(tree, ["overrides", field]))
    return with_values(scenario, overrides, source=str(path))


def load_cluster(path_or_name: str | Path) -> Cluster:
    """Load a stand-alone hardware file (the format of a scenario's ``hardware`` section), or a
    shipped one by name (``h100-hgx``)."""
    path = _resolve_hardware_path(path_or_name)
    data = _cluster_data(path)
    try:
        return Cluster.model_validate(data)
    except ValidationError as error:
        raise validation_error(str(path), error, data, read_yaml(path)[1]) from None


def _resolve_hardware_path(path_or_name: str | Path) -> Path:
    found = file_or_shipped(path_or_name, SHIPPED_HARDWARE)
    if found is None:
        raise ScenarioError(
            str(path_or_name),
            "",
            f"no such file, and no shipped hardware of that name (shipped: {', '.join(shipped_hardware_names())})",
        )
    return found


def _cluster_data(path: Path) -> Any:
    """A hardware file's data with its communication stacks read in (relative to the hardware file)."""
    data, tree = read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("communication"), dict):
        data = {**data, "communication": _stacks_read(path, data["communication"], ["communication"], tree)}
    return data


def _with_routing_counts_read(scenario_path: Path, data: dict, tree: yaml.Node | None) -> dict:
    """Replace ``routing: {kind: counts, file: F}`` by the numbers in F (relative to the scenario)."""
    architectures = (data.get("workload") or {}).get("architectures") if isinstance(data.get("workload"), dict) else None
    if not isinstance(architectures, list):
        return data
    resolved = []
    for index, arch in enumerate(architectures):
        routing = arch.get("routing") if isinstance(arch, dict) else None
        if isinstance(routing, dict) and routing.get("kind") == "counts" and "file" in routing:
            where: list[str | int] = ["workload", "architectures", index, "routing", "file"]
            counts = _read_counts(scenario_path, routing["file"], format_path(where), yaml_line(tree, where))
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
        raise ScenarioError(
            str(scenario_path), field, f"cannot read token counts file {name!r}: {error.__class__.__name__}", line
        ) from None
    tokens = " ".join(row.split("#")[0] for row in text.splitlines()).replace(",", " ").split()
    try:
        return [float(token) for token in tokens]
    except ValueError as error:
        raise ScenarioError(str(counts_path), "", f"token counts must be numbers: {error}") from None


def _stacks_read(file: Path, communication: dict, where: list[str | int], tree: yaml.Node | None) -> dict:
    """Every stack of a ``communication`` section given as a string, read: a file relative to ``file``,
    or a shipped stack by name (``nccl-fidelity``: NCCL as the fidelity table fitted it)."""
    resolved = dict(communication)

    def read(name: object, at: list[str | int]) -> object:
        if not isinstance(name, str):
            return name
        stack, _ = read_yaml(beside_or_shipped(file, name, SHIPPED_STACKS, "stack", "this file", at, tree))
        return stack

    for slot in STACK_SLOTS:
        if slot in resolved:
            resolved[slot] = read(resolved[slot], [*where, slot])
    if isinstance(resolved.get("architectures"), dict):
        resolved["architectures"] = {
            label: read(stack, [*where, "architectures", label]) for label, stack in resolved["architectures"].items()
        }
    return resolved


def _included_cluster_data(scenario_path: Path, include: str, tree: yaml.Node | None) -> Any:
    """The data of ``hardware: NAME``: a file relative to the scenario, else a shipped hardware file."""
    found = beside_or_shipped(scenario_path, include, SHIPPED_HARDWARE, "hardware", "the scenario", ["hardware"], tree)
    data = _cluster_data(found)
    try:
        Cluster.model_validate(data)
    except ValidationError as error:
        raise validation_error(str(found), error, data, read_yaml(found)[1]) from None
    return data


MAX_YAML_DEPTH = 32  # scenario and sweep files nest a handful of levels; deeper is a mistake or an attack
MAX_YAML_BYTES = 8 * SIZE_UNITS["MiB"]


class _InputLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys (the last would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key].start_mark.line + 1})", key_node.start_mark
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


class _ShapeError(yaml.YAMLError):
    """A YAML document whose shape the loader refuses (too deep, aliases)."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


def _check_shape(text: str) -> None:
    """Refuse, before building anything, YAML nested deeper than :data:`MAX_YAML_DEPTH` and aliases
    (``*name``), which scenario files do not need and which can expand without bound."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise _ShapeError(f"aliases (*{event.anchor}) are not supported", event.start_mark)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise _ShapeError(f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def parse_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """Data and node tree of YAML ``text``: duplicate keys, aliases and deep nesting refused (``yaml.YAMLError``)."""
    _check_shape(text)
    return yaml.load(text, Loader=_InputLoader), yaml.compose(text, Loader=yaml.SafeLoader)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The file's data and its YAML node tree (for line numbers); one-line :class:`ScenarioError` if unreadable."""
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ScenarioError(str(path), "", f"larger than {MAX_YAML_BYTES / SIZE_UNITS['MiB']:g} MiB: not a scenario file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(path), "", "no such file") from None
    except IsADirectoryError:
        raise ScenarioError(str(path), "", "is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(str(path), "", f"cannot read file: {error}") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ScenarioError(str(path), "", f"not valid YAML: {problem}", mark.line + 1 if mark else None) from None


def validation_error(file: str, error: ValidationError, data: Any, tree: yaml.Node | None) -> ScenarioError:
    """The first problem of a pydantic error as one line: the field path as the user wrote it, the reason, the line."""
    errors = error.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    first = unknown[0] if unknown else errors[0]  # a misspelt name also makes the right one "missing": name the misspelling
    location = data_path(first["loc"], data)
    reason = first["msg"].removeprefix("Value error, ")
    if unknown:
        reason = _unknown_field_reason(first, errors)
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldIssue):
        location = location + list(cause.path)
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        location = location + ["kind"]
    return ScenarioError(file, format_path(location), reason, yaml_line(tree, location))


def _unknown_field_reason(unknown: Any, errors: list[Any]) -> str:
    """``unknown field 'seq_lenn' (did you mean 'seq_len'?)``: the likely intended name is a missing sibling."""
    name = str(unknown["loc"][-1])
    parent = unknown["loc"][:-1]
    missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"][:-1] == parent]
    close = difflib.get_close_matches(name, missing, n=1, cutoff=0.6)
    return f"unknown field {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def data_path(loc: tuple, data: Any) -> list[str | int]:
    """Pydantic's error location reduced to keys that exist in the data.

    Pydantic adds the discriminator tag (``sectional_moe``) and validator names to locations;
    walking the data drops them, so the path reads as the user wrote the file.
    """
    path: list[str | int] = []
    node = data
    tag_pending = False  # the discriminator tag comes first, even when a field has the same name ({kind: counts, counts: ...})
    for item in loc:
        if isinstance(node, dict) and isinstance(item, str) and node.get("kind") == item and not tag_pending:
            tag_pending = True
            continue
        tag_pending = False
        if isinstance(node, dict) and item in node or isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            path.append(item)
            node = node[item]
        elif (
            isinstance(node, dict)
            and isinstance(item, str)
            and not item.startswith(("function-", "union"))
            and node.get("kind") != item
        ):
            path.append(item)  # a missing or unknown field: name it
            node = None
    return path


def format_path(path: list[str | int]) -> str:
    """``workload.architectures[1].top_k``: names joined by dots, list positions in brackets."""
    text = ""
    for item in path:
        if isinstance(item, int):
            text += f"[{item}]"
            continue
        name = item if str(item).isidentifier() else repr(item)
        text += f".{name}" if text else name
    return text or "(top level)"


def yaml_line(tree: yaml.Node | None, path: list[str | int]) -> int | None:
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


def with_values(scenario: Scenario, values: Mapping[str, Any], source: str = "") -> Scenario:
    """``scenario`` with each dotted path set to its value, validated as a scenario file is.

    A path that names no field, or a value that makes the scenario invalid, raises
    :class:`ScenarioError` naming ``source`` (default: the scenario's name) and the field.
    """
    where = source or scenario.name
    data = scenario.model_dump(mode="json")
    for path, value in values.items():
        reason = path_error(scenario, path)
        if reason:
            raise ScenarioError(where, path, reason)
        data = with_value(data, path, value)
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        raise validation_error(where, error, data, None) from None
