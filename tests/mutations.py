"""Mutations of scenario and sweep data for the fuzz tests: replace a value, delete a key, add one.

The values are the ones that broke the tool before: wrong types, zero, negative, huge and tiny
numbers, NaN and infinity, integers beyond float range, booleans, unit strings of the wrong
dimension, unicode, empty containers.
"""

from __future__ import annotations

import copy
import math

from hypothesis import strategies as st

UNIT_STRINGS = [
    "1 GB/s",
    "3 us",
    "2 GiB",
    "1 TFLOP/s",
    "5 Gb/s",
    "12 parsecs",
    "0 GB/s",
    "-1 us",
    "nan GB/s",
    "1e308 s",
    "1e-300 FLOP/s",
    "",
]

VALUES = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31),
    st.sampled_from([0, -1, 1, 2, 3, 7, 2**62, 2**70, 2**1100]),
    st.floats(min_value=-1e12, max_value=1e12),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 1e-300, 0.0, -0.0, 0.5, 1e308]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
    st.sampled_from(UNIT_STRINGS),
    st.none(),
    st.booleans(),
    st.just([]),
    st.just({}),
)


def walk(node, path=()):
    """Yield (path, node) for every node of nested dicts and lists."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, path + (index,))


def parent(data, path):
    node = data
    for item in path[:-1]:
        node = node[item]
    return node


def mutations_of(base: dict):
    """A strategy of (description, data): ``base`` with one mutation."""
    leaves = [path for path, node in walk(base) if path and not isinstance(node, (dict, list))]
    keys = [path for path, node in walk(base) if path and isinstance(parent(base, path), dict)]
    mappings = [path for path, node in walk(base) if isinstance(node, dict)]

    @st.composite
    def mutated(draw):
        data = copy.deepcopy(base)
        kind = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if kind == "replace":
            path = draw(st.sampled_from(leaves))
            value = draw(VALUES)
            parent(data, path)[path[-1]] = value
            return f"replace {list(path)} with {value!r}", data
        if kind == "delete":
            path = draw(st.sampled_from(keys))
            del parent(data, path)[path[-1]]
            return f"delete {list(path)}", data
        path = draw(st.sampled_from(mappings))
        target = data
        for item in path:
            target = target[item]
        key = draw(
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8).filter(
                lambda k: k not in target
            )
        )
        value = draw(VALUES)
        target[key] = value
        return f"add {list(path) + [key]} = {value!r}", data

    return mutated()


def added_key(base: dict, path: tuple, key: str, value) -> tuple[str, dict]:
    """One fixed mutation: ``key = value`` added at ``path`` (for ``@example``)."""
    data = copy.deepcopy(base)
    target = data
    for item in path:
        target = target[item]
    target[key] = value
    return f"add {list(path) + [key]} = {value!r}", data
