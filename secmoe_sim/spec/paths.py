"""Dotted paths into a scenario: ``workload.layer.seq_len``, ``workload.architectures.0.top_k``.

Sweep axes, sweep overrides, ``run --set`` and :meth:`Scenario.with_values` all name fields this way
(list positions as numbers); these functions check such a path against a scenario and set a value
at it in the scenario's plain data, which is then validated as a whole.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from secmoe_sim.spec.yaml_input import format_path

PATH_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*$"  # names and list positions joined by '.'


def path_error(scenario: BaseModel, path: str) -> str | None:
    """Why ``path`` does not name a field of ``scenario``, or None if it does.

    Walks the validated scenario, so a misspelt name is reported with the names that exist there.
    Free-form mappings (``peak_flops``) accept any key; their validation judges the key.
    """
    node: Any = scenario
    parts = path.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the scenario"
        if isinstance(node, BaseModel):
            fields = type(node).model_fields
            if part not in fields:
                return f"unknown field {part!r} in {where} (its fields: {', '.join(fields)})"
            node = getattr(node, part)
        elif isinstance(node, (list, tuple)):
            if not part.isdigit():
                return f"{where} is a list: give a position (0 to {len(node) - 1}), not {part!r}"
            if int(part) >= len(node):
                return f"position {part} is past the end of {where} ({len(node)} entries)"
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                return None
            node = node[part]
        elif node is None:
            return f"{where} is not set in the base scenario: sweep or override the whole of {where}"
        else:
            return f"{where} is a single value ({node!r}), it has no field {part!r}"
    return None


def with_value(data: Any, path: str, value: Any) -> Any:
    """A copy of ``data`` with ``value`` at ``path``; only the containers along the path are copied."""
    head, _, rest = path.partition(".")
    if isinstance(data, list):
        items = list(data)
        items[int(head)] = with_value(items[int(head)], rest, value) if rest else value
        return items
    fields = dict(data)
    fields[head] = with_value(fields.get(head, {}), rest, value) if rest else value
    return fields


def value_at(data: Any, path: str) -> Any:
    """The value at a dotted path of plain data (dicts and lists)."""
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def is_inside(path: str, outer: str) -> bool:
    """``path`` is ``outer`` or lies below it."""
    return path == outer or path.startswith(outer + ".")


def owning_path(field: str, paths: list[str]) -> str | None:
    """The dotted path (of ``paths``) that a validation error's location ``field`` lies in, if any."""
    for path in paths:
        formatted = format_path([int(p) if p.isdigit() else p for p in path.split(".")])
        if field == formatted or field.startswith((formatted + ".", formatted + "[")):
            return path
    return None
