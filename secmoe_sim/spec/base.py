"""Base pieces of every configuration model: strictness, immutability, field-aware errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of every configuration model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldIssue(ValueError):
    """A cross-field check that knows which field it is about (a path relative to the model).

    Raised inside a model validator; the scenario loader appends ``path`` to pydantic's location so
    the user sees ``workload.architectures[1].top_k`` rather than just the entry.
    """

    def __init__(self, path: tuple[str | int, ...], reason: str):
        self.path = path
        super().__init__(reason)
