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
file, the field path, the reason, and the YAML line where it is known (the YAML reading and the
error lines are :mod:`secmoe_sim.spec.yaml_input`, which sweep files use too).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from secmoe_sim.errors import ScenarioError
from secmoe_sim.spec.communication import STACK_SLOTS
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.paths import is_inside, owning_path, path_error, with_value
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.yaml_input import format_path, read_yaml, validation_error, yaml_line

SHIPPED_SCENARIOS = "scenarios"
SHIPPED_STACKS = "stacks"
SHIPPED_HARDWARE = "hardware"
SHIPPED_SWEEPS = (SHIPPED_SCENARIOS, "sweeps")  # the folder of shipped sweep files inside the package
MAX_EXTENDS_DEPTH = 8  # a chain of bases longer than this is a mistake (or a loop through copies)


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
    return shipped_file(str(path_or_name), *folder)


def shipped_file(name: str, *folder: str) -> Path | None:
    """The shipped ``<name>.yaml`` in the package ``folder``, else None."""
    shipped = resources.files("secmoe_sim").joinpath(*folder, f"{name}.yaml")
    return Path(str(shipped)) if shipped.is_file() else None


def beside_or_shipped(
    file: Path, name: str, folder: str, kind: str, near: str, field: list[str | int], tree: yaml.Node | None
) -> Path:
    """What a file names by ``name``: a file beside ``file``, else the shipped ``<name>.yaml`` of ``folder``.

    Else one :class:`ScenarioError` at ``field`` of ``file``: no ``kind`` file ``near`` it, no shipped one,
    and the shipped names to choose from.
    """
    relative = file.parent / name  # an absolute name stays itself; a relative one is never the working directory's
    found = relative if relative.is_file() else shipped_file(name, folder)
    if found is None:
        raise ScenarioError(
            str(file),
            format_path(field),
            f"no {kind} file {name!r} next to {near} and no shipped {kind} of that name (shipped: {', '.join(shipped_names(folder))})",
            yaml_line(tree, field),
        )
    return found


def _file_or_shipped_or_error(path_or_name: str | Path, folder: str, kind: str) -> Path:
    """:func:`file_or_shipped`, or one :class:`ScenarioError` listing the shipped ``kind`` names."""
    found = file_or_shipped(path_or_name, folder)
    if found is None:
        raise ScenarioError(
            str(path_or_name),
            "",
            f"no such file, and no shipped {kind} of that name (shipped: {', '.join(shipped_names(folder))})",
        )
    return found


def resolve_scenario_path(path_or_name: str | Path) -> Path:
    """A scenario file path, or the path of the shipped scenario of that name."""
    return _file_or_shipped_or_error(path_or_name, SHIPPED_SCENARIOS, "scenario")


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
    elif isinstance(hardware, dict):
        data = {**data, "hardware": _with_stacks_read(path, hardware, ["hardware"], tree)}
    return _with_stacks_read(path, _with_routing_counts_read(path, data, tree), [], tree)


def _extended(path: Path, data: dict, tree: yaml.Node | None, extending: tuple[Path, ...]) -> Scenario:
    """A scenario that extends a base: the base's sections, those this file gives instead, then its overrides."""
    base_name = data["extends"]
    if not isinstance(base_name, str) or not base_name:
        raise ScenarioError(
            str(path), "extends", "expected a scenario file or a shipped scenario name", yaml_line(tree, ["extends"])
        )
    base_path = beside_or_shipped(path, base_name, SHIPPED_SCENARIOS, "scenario", "this one", ["extends"], tree)
    chain = (*extending, path.resolve())
    if base_path.resolve() in chain:
        raise ScenarioError(str(path), "extends", f"{base_name!r} extends this file again (a loop)", yaml_line(tree, ["extends"]))
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise ScenarioError(
            str(path), "extends", f"more than {MAX_EXTENDS_DEPTH} scenarios extend one another here", yaml_line(tree, ["extends"])
        )
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
    return with_overrides(scenario, {str(field): value for field, value in overrides.items()}, str(path), tree)


def with_overrides(base: Scenario, overrides: Mapping[str, Any], file: str, tree: yaml.Node | None) -> Scenario:
    """``base`` with every dotted override of ``file`` (a scenario that extends another, or a sweep) set,
    validated once all are set: they may depend on each other. A deeper override refines a shallower
    one, and one below an earlier override is judged by the validation rather than by the base's fields.

    An error is one :class:`ScenarioError` at ``overrides.<path>`` (the override it is about, with its
    YAML line from ``tree``), or at ``overrides`` when no one override owns it.
    """
    data = base.model_dump(mode="json")
    applied: list[str] = []
    for override in sorted(overrides, key=lambda p: p.count(".")):
        if not any(is_inside(override, earlier) for earlier in applied):
            reason = path_error(base, override)
            if reason:
                raise ScenarioError(file, f"overrides.{override}", reason, yaml_line(tree, ["overrides", override]))
        data = with_value(data, override, overrides[override])
        applied.append(override)
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        problem = validation_error(file, error, data, None)
        owner = owning_path(problem.field, applied)
        if owner is None:
            raise ScenarioError(
                file,
                "overrides",
                f"the base with the overrides is not a valid scenario: {problem.field}: {problem.reason}",
                yaml_line(tree, ["overrides"]),
            ) from None
        raise ScenarioError(
            file, f"overrides.{owner}", f"{problem.field}: {problem.reason}", yaml_line(tree, ["overrides", owner])
        ) from None


def load_scenario_or_cluster(path_or_name: str | Path) -> Scenario | Cluster:
    """A scenario (a file with a ``workload`` or an ``extends``, or a shipped scenario's name) or a
    stand-alone hardware file (any other file, or a shipped hardware name): where a command takes either."""
    path = Path(path_or_name)
    if path.is_file():
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            document = None  # load_cluster reports the problem with its line
        if isinstance(document, dict) and ("workload" in document or "extends" in document):
            return load_scenario(path)
        return load_cluster(path)
    if str(path_or_name) in shipped_hardware_names():
        return load_cluster(path_or_name)
    return load_scenario(path_or_name)


def load_cluster(path_or_name: str | Path) -> Cluster:
    """Load a stand-alone hardware file (the format of a scenario's ``hardware`` section), or a
    shipped one by name (``h100-hgx``)."""
    return _validated_cluster(_file_or_shipped_or_error(path_or_name, SHIPPED_HARDWARE, "hardware"))[1]


def _validated_cluster(path: Path) -> tuple[Any, Cluster]:
    """A hardware file's data, its communication stacks read in (relative to the hardware file), and
    the cluster it validates as; one :class:`ScenarioError` with the file's line if it does not."""
    data, tree = read_yaml(path)
    if isinstance(data, dict):
        data = _with_stacks_read(path, data, [], tree)
    try:
        return data, Cluster.model_validate(data)
    except ValidationError as error:
        raise validation_error(str(path), error, data, tree) from None


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


def _with_stacks_read(file: Path, section: dict, where: list[str | int], tree: yaml.Node | None) -> dict:
    """``section`` (a scenario, or its or a file's cluster, at ``where``) with the stacks its
    ``communication`` names read in (:func:`_stacks_read`)."""
    communication = section.get("communication")
    if not isinstance(communication, dict):
        return section
    return {**section, "communication": _stacks_read(file, communication, [*where, "communication"], tree)}


def _included_cluster_data(scenario_path: Path, include: str, tree: yaml.Node | None) -> Any:
    """The data of ``hardware: NAME``: a file relative to the scenario, else a shipped hardware file."""
    found = beside_or_shipped(scenario_path, include, SHIPPED_HARDWARE, "hardware", "the scenario", ["hardware"], tree)
    return _validated_cluster(found)[0]


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
