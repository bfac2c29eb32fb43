"""YAML in, one-line errors out: the strict reader every input file goes through, and the error line.

``read_yaml`` refuses duplicate keys, aliases, deep nesting and oversized files; ``validation_error``
turns a pydantic error into ``file:line: field.path: reason`` with the field path as the user wrote it
(a misspelt name reported as the unknown field, with the likely intended one). Scenario files
(:mod:`secmoe_sim.spec.loading`) and sweep files (:mod:`secmoe_sim.sweep.spec`) both use them.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from secmoe_sim.errors import ScenarioError
from secmoe_sim.spec.base import FieldIssue
from secmoe_sim.spec.units import SIZE_UNITS

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
