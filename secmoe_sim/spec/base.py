"""Base pieces of every configuration model: strictness, immutability, field-aware errors."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def admits_bool(annotation: Any) -> bool:
    """Whether a field of this annotation may hold a boolean (``bool``, a union with it, ``Any``)."""
    if annotation is bool or annotation is Any or annotation is object:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(isinstance(value, bool) for value in typing.get_args(annotation))
    if origin is typing.Annotated:
        return admits_bool(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(admits_bool(arg) for arg in typing.get_args(annotation))
    return False


class StrictModel(BaseModel):
    """Base of every configuration model: unknown fields are errors, instances are immutable, numbers
    are finite, and a boolean is never read as a number (``d_model: true`` is not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if field is None:
                    continue
                values = value if isinstance(value, list) else [value]
                annotation = field.annotation
                if isinstance(value, list) and typing.get_args(annotation):
                    annotation = typing.get_args(annotation)[0]  # list[int] and the like: their elements
                if any(isinstance(item, bool) for item in values) and not admits_bool(annotation):
                    raise FieldIssue((name,), "a boolean where a number or a name is expected")
        return data


class FieldIssue(ValueError):
    """A cross-field check that knows which field it is about (a path relative to the model).

    Raised inside a model validator; the scenario loader appends ``path`` to pydantic's location so
    the user sees ``workload.architectures[1].top_k`` rather than just the entry.
    """

    def __init__(self, path: tuple[str | int, ...], reason: str):
        self.path = path
        super().__init__(reason)


def _printable(text: str) -> str:
    if not text.isprintable():
        raise ValueError("a name must be printable text (no control characters or line breaks)")
    return text


Name = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
"""A label or name a person reads in tables, plots and file names: 1 to 64 printable characters."""
