"""Sweep files: a base scenario, fixed overrides, and axes over any scenario field, expanded to points.

A sweep file (YAML, ``schema_version: 1``) names a base scenario (a path relative to the sweep file,
or a shipped scenario name), optional ``overrides`` applied to every point, and ``axes``: each
entry is one grid dimension, either a single axis (``path`` + ``values``) or a ``zip`` of axes whose
values are taken together, position by position. The points are the cartesian product of the
entries, in file order, the last entry varying fastest.

A path is dotted, with list positions as numbers: ``workload.layer.seq_len``,
``hardware.intra_node.bandwidth_per_direction``, ``workload.architectures.0.top_k``. Values may
carry units (``"200 GB/s"``): each point's scenario is the base scenario's data with the values
set at their paths, validated by :class:`~secmoe_sim.spec.scenario.Scenario` exactly as a scenario file
is, so a bad value gets the same reason a bad scenario file would.

Everything is validated here, before any point runs; every problem raises :class:`SweepError`,
one line naming the file, the axis and the reason. A point's ``key`` is a hash of its resolved
scenario and the tool version, so a result is reused only for the same scenario simulated by the
same version.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from secmoe_sim.errors import ScenarioError, SweepError
from secmoe_sim.spec.base import FieldIssue, StrictModel
from secmoe_sim.spec.loading import (
    SHIPPED_SWEEPS,
    file_or_shipped,
    load_scenario,
    resolve_scenario_path,
    shipped_names,
    with_overrides,
)
from secmoe_sim.spec.paths import PATH_PATTERN, is_inside, owning_path, path_error, value_at, with_value
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.yaml_input import read_yaml, validation_error, yaml_line
from secmoe_sim.version import __version__

MAX_POINTS = 1_000_000  # keeps a mistyped axis from expanding into an endless sweep
KEY_HEX_DIGITS = 20  # 80 bits of SHA-256: collisions are negligible for any sweep that fits MAX_POINTS


class Axis(StrictModel):
    """One swept field: its dotted path in the scenario and the values it takes."""

    path: str = Field(pattern=PATH_PATTERN, description="dotted path of a scenario field, list positions as numbers")
    values: list[Any] = Field(min_length=1, description="values in order; quantities may carry units ('200 GB/s')")


class GridEntry(StrictModel):
    """One grid dimension: a single axis (``path`` and ``values``) or axes zipped together (``zip``)."""

    path: str | None = Field(default=None, pattern=PATH_PATTERN, description="dotted path of a scenario field")
    values: list[Any] | None = Field(default=None, min_length=1, description="values of the field, in order")
    zip: list[Axis] | None = Field(default=None, min_length=1, description="axes whose values go together, position by position")

    @model_validator(mode="after")
    def _one_form(self) -> GridEntry:
        single = self.path is not None or self.values is not None
        if single == (self.zip is not None):
            raise ValueError("give either 'path' and 'values' (one axis) or 'zip' (a list of axes), not both or neither")
        if single and (self.path is None or self.values is None):
            raise FieldIssue(("values" if self.values is None else "path",), "an axis needs both 'path' and 'values'")
        if self.zip is not None:
            lengths = [len(axis.values) for axis in self.zip]
            for position, length in enumerate(lengths):
                if length != lengths[0]:
                    raise FieldIssue(
                        ("zip", position, "values"),
                        f"zipped axes need equal numbers of values: {self.zip[0].path} has {lengths[0]}, "
                        f"{self.zip[position].path} has {length}",
                    )
        return self

    @property
    def axes(self) -> list[Axis]:
        """The axes of this grid dimension: the zipped ones, or the single one."""
        if self.zip is not None:
            return list(self.zip)
        assert self.path is not None and self.values is not None  # checked by the validator
        return [Axis(path=self.path, values=self.values)]

    @property
    def size(self) -> int:
        return len(self.axes[0].values)


class SweepSpec(StrictModel):
    """The sweep file: base scenario, fixed overrides, grid dimensions."""

    schema_version: Literal[1]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="names the output directory")
    description: str = ""
    base: str = Field(min_length=1, description="scenario file relative to this file, or a shipped scenario name")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="dotted path -> value, applied to every point before the axes"
    )
    axes: list[GridEntry] = Field(min_length=1, description="grid dimensions; the points are their cartesian product")

    @model_validator(mode="after")
    def _paths_distinct(self) -> SweepSpec:
        for path in self.overrides:
            if re.fullmatch(PATH_PATTERN, path) is None:
                raise FieldIssue(("overrides", path), "not a dotted path (names and list positions joined by '.')")
        seen: list[str] = []
        for index, entry in enumerate(self.axes):
            for position, axis in enumerate(entry.axes):
                where = ("axes", index) + (("zip", position) if entry.zip is not None else ()) + ("path",)
                for other in seen:
                    if _nested(axis.path, other):
                        raise FieldIssue(where, f"{axis.path} overlaps the axis {other}; each field may be swept once")
                for override in self.overrides:
                    if is_inside(override, axis.path):
                        raise FieldIssue(
                            where, f"the override {override} lies inside this axis and would be replaced by its values"
                        )
                seen.append(axis.path)
        return self


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: its values (as written and as resolved) and its validated scenario."""

    point_id: int
    written: dict[str, Any]  # axis path -> value as written in the sweep file
    values: dict[str, Any]  # axis path -> resolved value (SI base units; JSON text for lists and mappings)
    scenario: Scenario
    key: str

    def describe(self) -> str:
        """``path=value, ...`` with values as written, for messages."""
        return ", ".join(f"{path}={value!r}" for path, value in self.written.items())


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: every point resolved to a scenario, nothing run yet."""

    path: Path
    spec: SweepSpec
    base_path: Path
    base: Scenario  # the base scenario with the overrides applied
    points: tuple[SweepPoint, ...]
    resolved: dict[str, list]  # axis path -> its values as they appear in the results, in file order

    @property
    def columns(self) -> list[str]:
        """The swept columns of the results: one per axis path, in file order."""
        return [axis.path for entry in self.spec.axes for axis in entry.axes]

    @property
    def grid(self) -> list[list[str]]:
        """The axis paths of each grid dimension (several for a zip)."""
        return [[axis.path for axis in entry.axes] for entry in self.spec.axes]

    def content_hash(self) -> str:
        """SHA-256 of the sweep as parsed, together with the base scenario's resolved content."""
        document = {"sweep": self.spec.model_dump(mode="json"), "base_sha256": self.base.content_hash()}
        return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def point_key(scenario: Scenario, version: str = __version__) -> str:
    """The identity of a point's result: its resolved scenario content and the tool version."""
    return hashlib.sha256(f"{version}\n{scenario.content_hash()}".encode()).hexdigest()[:KEY_HEX_DIGITS]


# --- loading ----------------------------------------------------------------------------------


def shipped_sweep_names() -> list[str]:
    """The names of the sweeps shipped in the package, sorted."""
    return shipped_names(*SHIPPED_SWEEPS)


def resolve_sweep_path(path_or_name: str | Path) -> Path:
    """A sweep file path, or the path of the shipped sweep of that name."""
    found = file_or_shipped(path_or_name, *SHIPPED_SWEEPS)
    if found is not None:
        return found
    raise SweepError(
        str(path_or_name), "", f"no such file, and no shipped sweep of that name (shipped: {', '.join(shipped_sweep_names())})"
    )


def load_sweep(path_or_name: str | Path) -> Sweep:
    """Read, validate and expand a sweep; raises :class:`SweepError` (one line) on any problem."""
    path = resolve_sweep_path(path_or_name)
    data, tree = _read_yaml_as_sweep(path)
    if not isinstance(data, dict):
        raise SweepError(str(path), "", "expected a mapping of fields at the top level")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as error:
        problem = validation_error(str(path), error, data, tree)
        raise SweepError(problem.file, problem.field, problem.reason, problem.line) from None
    base_path = _base_path(path, spec.base, tree)
    try:
        base = load_scenario(base_path)
    except ScenarioError as error:
        raise SweepError(
            str(path), "base", f"base scenario {spec.base!r} is invalid: {error}", yaml_line(tree, ["base"])
        ) from None
    base = _apply_overrides(path, tree, spec, base)
    for index, entry in enumerate(spec.axes):
        for position, axis in enumerate(entry.axes):
            reason = path_error(base, axis.path)
            if reason:
                location = _axis_location(entry, index, position)
                raise SweepError(
                    str(path), _axis_field(entry, index, position, axis.path), reason, yaml_line(tree, location + ["path"])
                )
    points = _expand(path, tree, spec, base)
    return Sweep(
        path=path, spec=spec, base_path=base_path, base=base, points=tuple(points), resolved=_resolved_axes(spec, points)
    )


def _read_yaml_as_sweep(path: Path):
    try:
        return read_yaml(path)
    except ScenarioError as error:
        raise SweepError(error.file, error.field, error.reason, error.line) from None


def _base_path(sweep_path: Path, base: str, tree) -> Path:
    """The base scenario: a file relative to the sweep file, else a shipped scenario of that name."""
    relative = sweep_path.parent / base
    if relative.is_file():
        return relative
    reason = "no such file relative to the sweep file"
    if "/" not in base and not base.endswith((".yaml", ".yml")):
        try:
            return resolve_scenario_path(base)
        except ScenarioError as error:
            reason = error.reason
    raise SweepError(str(sweep_path), "base", f"{base!r}: {reason}", yaml_line(tree, ["base"]))


def _apply_overrides(path: Path, tree, spec: SweepSpec, base: Scenario) -> Scenario:
    """The base scenario with every override set (:func:`~secmoe_sim.spec.loading.with_overrides`)."""
    try:
        return with_overrides(base, spec.overrides, str(path), tree)
    except ScenarioError as error:
        raise SweepError(error.file, error.field, error.reason, error.line) from None


# --- paths ------------------------------------------------------------------------------------


def _nested(a: str, b: str) -> bool:
    return is_inside(a, b) or is_inside(b, a)


# --- expansion --------------------------------------------------------------------------------


def grid_size(spec: SweepSpec) -> int:
    return math.prod(entry.size for entry in spec.axes)


def combinations(spec: SweepSpec) -> Iterator[list[tuple[int, int]]]:
    """Each point as ``(entry index, value position)`` per grid dimension, the last varying fastest."""
    for positions in itertools.product(*(range(entry.size) for entry in spec.axes)):
        yield list(enumerate(positions))


def _expand(path: Path, tree, spec: SweepSpec, base: Scenario) -> list[SweepPoint]:
    size = grid_size(spec)
    if size > MAX_POINTS:
        raise SweepError(str(path), "axes", f"the grid has {size:,} points, more than the {MAX_POINTS:,} a sweep may have")
    base_data = base.model_dump(mode="json")
    points = []
    for point_id, combination in enumerate(combinations(spec)):
        data, written = base_data, {}
        for index, position in combination:
            for axis in spec.axes[index].axes:
                data = with_value(data, axis.path, axis.values[position])
                written[axis.path] = axis.values[position]
        try:
            scenario = Scenario.model_validate(data)
        except ValidationError as error:
            raise _point_error(path, tree, spec, combination, written, error, data) from None
        resolved = scenario.model_dump(mode="json")
        values = {column: _cell(value_at(resolved, column)) for column in written}
        points.append(SweepPoint(point_id=point_id, written=written, values=values, scenario=scenario, key=point_key(scenario)))
    return points


def _resolved_axes(spec: SweepSpec, points: list[SweepPoint]) -> dict[str, list]:
    """Each axis value as resolved (units parsed), read from the first point that has it."""
    resolved = {}
    stride = 1
    for index in reversed(range(len(spec.axes))):  # position p of entry i first appears at point p * stride
        for axis in spec.axes[index].axes:
            resolved[axis.path] = [points[position * stride].values[axis.path] for position in range(len(axis.values))]
        stride *= spec.axes[index].size
    return resolved


def _cell(value: Any) -> Any:
    """A results-table cell: scalars as they are, lists and mappings as canonical JSON text."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _point_error(path: Path, tree, spec: SweepSpec, combination, written: dict, error: ValidationError, data) -> SweepError:
    """Name the axis whose value the validation error is about; otherwise name the whole point."""
    problem = validation_error(str(path), error, data, None)
    owner = owning_path(problem.field, list(written))
    for index, position in combination:
        entry = spec.axes[index]
        for member, axis in enumerate(entry.axes):
            if axis.path == owner:
                location = _axis_location(entry, index, member) + ["values", position]
                return SweepError(
                    str(path),
                    _axis_field(entry, index, member, axis.path),
                    f"value {axis.values[position]!r}: {problem.reason}",
                    yaml_line(tree, location),
                )
    point = ", ".join(f"{p}={v!r}" for p, v in written.items())
    return SweepError(
        str(path),
        "axes",
        f"the point ({point}) is not a valid scenario: {problem.field}: {problem.reason}",
        yaml_line(tree, ["axes"]),
    )


def _axis_location(entry: GridEntry, index: int, member: int) -> list[str | int]:
    location: list[str | int] = ["axes", index]
    return location + ["zip", member] if entry.zip is not None else location


def _axis_field(entry: GridEntry, index: int, member: int, axis_path: str) -> str:
    where = f"axes[{index}]" + (f".zip[{member}]" if entry.zip is not None else "")
    return f"{where} ({axis_path})"
