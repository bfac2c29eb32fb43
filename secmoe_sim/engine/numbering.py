"""Numbers for values the engine stores in integer arrays (a sender to tell, a transfer's label).

Rows of numpy arrays cannot hold callables or strings cheaply, so such a value is kept once here
and the rows hold its number: the first value seen is 0, the next new one 1, and so on.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value", bound=Hashable)


class Numbering(Generic[Value]):
    """Each distinct value's number, in the order first seen; ``values[number]`` gives it back."""

    def __init__(self) -> None:
        self.values: list[Value] = []
        self._numbers: dict[Value, int] = {}

    def number(self, value: Value) -> int:
        """The number of ``value``, given it now if it has none yet."""
        number = self._numbers.get(value)
        if number is None:
            number = self._numbers[value] = len(self.values)
            self.values.append(value)
        return number
