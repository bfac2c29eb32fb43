"""The JSON Schema of scenario files as a user writes them, for editors (``secmoe-sim schema``).

The models' own schema (:meth:`Scenario.model_json_schema`) describes the data after loading.
A file may also write, where the loader reads another file in:

* ``hardware: PATH``: a hardware file beside the scenario (``secmoe-sim fit`` writes them);
* a communication stack as a name or path (``default: nccl-fidelity``);
* measured routing counts as ``{kind: counts, file: PATH}``.

This module adds those forms, so every file the loader accepts validates against the schema
(tested with ``jsonschema`` on every shipped and committed scenario).
"""

from __future__ import annotations

from typing import Any

from secmoe_sim.spec.scenario import Scenario

PATH_OR_NAME = {"type": "string", "minLength": 1, "description": "a file beside the scenario, or a shipped file by name"}
STACK_SLOTS = ("default", "all_to_all", "all_reduce", "all_gather", "reduce_scatter")


def _or_file(schema: dict) -> dict:
    return {"anyOf": [PATH_OR_NAME, schema]}


def scenario_file_schema() -> dict[str, Any]:
    """The scenario model's JSON Schema with the loader's file forms added."""
    schema = Scenario.model_json_schema()
    definitions = schema.setdefault("$defs", {})
    properties = schema["properties"]
    properties["hardware"] = _or_file(properties["hardware"])
    communication = definitions.get("Communication")
    if communication is not None:
        for slot in STACK_SLOTS:
            if slot in communication["properties"]:
                communication["properties"][slot] = _or_file(communication["properties"][slot])
        architectures = communication["properties"].get("architectures")
        if architectures is not None and "additionalProperties" in architectures:
            architectures["additionalProperties"] = _or_file(architectures["additionalProperties"])
    counts = definitions.get("CountsRouting")
    if counts is not None:
        file_form = {
            "type": "object",
            "properties": {"kind": {"const": "counts"}, "file": {**PATH_OR_NAME, "description": "numbers, one file"}},
            "required": ["kind", "file"],
            "additionalProperties": False,
        }
        definitions["CountsRouting"] = {"anyOf": [counts, file_form]}
    return schema
