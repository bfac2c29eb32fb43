"""The JSON Schema of scenario files as a user writes them, for editors (``secmoe-sim schema``).

The models' own schema (:meth:`Scenario.model_json_schema`) describes the data after loading.
A file may also write, where the loader reads another file in:

* ``hardware: PATH``: a hardware file beside the scenario (``secmoe-sim fit`` writes them) or a
  shipped one by name (``hardware: h100-hgx``);
* a communication stack as a name or path (``default: nccl-fidelity``), in the scenario or its hardware;
* measured routing counts as ``{kind: counts, file: PATH}``;
* ``extends: BASE`` with optional ``overrides`` (dotted path -> value): then every section is optional.

This module adds those forms, so every file the loader accepts validates against the schema
(tested with ``jsonschema`` on every shipped and committed scenario).
"""

from __future__ import annotations

from typing import Any

from secmoe_sim.spec.communication import STACK_SLOTS
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.paths import PATH_PATTERN
from secmoe_sim.spec.scenario import Scenario

PATH_OR_NAME = {"type": "string", "minLength": 1, "description": "a file beside the scenario, or a shipped file by name"}


def _or_file(schema: dict) -> dict:
    return {"anyOf": [PATH_OR_NAME, schema]}


def scenario_file_schema() -> dict[str, Any]:
    """The scenario model's JSON Schema with the loader's file forms added."""
    schema = Scenario.model_json_schema()
    definitions = schema.setdefault("$defs", {})
    properties = schema["properties"]
    properties["hardware"] = _or_file(properties["hardware"])
    _stack_file_forms(definitions)
    counts = definitions.get("CountsRouting")
    if counts is not None:
        file_form = {
            "type": "object",
            "properties": {"kind": {"const": "counts"}, "file": {**PATH_OR_NAME, "description": "numbers, one file"}},
            "required": ["kind", "file"],
            "additionalProperties": False,
        }
        definitions["CountsRouting"] = {"anyOf": [counts, file_form]}
    properties["extends"] = {
        **PATH_OR_NAME,
        "description": "a base scenario (a file beside this one, or a shipped scenario name): its sections, replaced by "
        "the sections this file gives, then overrides",
    }
    properties["overrides"] = {
        "type": "object",
        "description": "with extends: dotted field path -> value, applied to the base",
        "propertyNames": {"pattern": PATH_PATTERN},
    }
    required = schema.pop("required", [])
    schema["if"] = {"required": ["extends"]}
    schema["then"] = {}
    schema["else"] = {"required": required, "not": {"required": ["overrides"]}}
    return schema


def hardware_file_schema() -> dict[str, Any]:
    """The JSON Schema of a stand-alone hardware file (``hardware: NAME``, ``secmoe-sim fit``'s output)."""
    schema = Cluster.model_json_schema()
    _stack_file_forms(schema.setdefault("$defs", {}))
    return schema


def _stack_file_forms(definitions: dict[str, Any]) -> None:
    """Let every stack slot of ``Communication`` be a file path or a shipped stack's name."""
    communication = definitions.get("Communication")
    if communication is None:
        return
    for slot in STACK_SLOTS:
        if slot in communication["properties"]:
            communication["properties"][slot] = _or_file(communication["properties"][slot])
    architectures = communication["properties"].get("architectures")
    if architectures is not None and "additionalProperties" in architectures:
        architectures["additionalProperties"] = _or_file(architectures["additionalProperties"])
