"""One table style for every command: tabulate's plain columns, a rule under the header, numbers right-aligned.

tabulate pads every header by two characters in its ruled formats; the header is passed as the
first row of a plain table instead, so a table is only as wide as its widest cells and the printed
tables stay within a terminal of ``MAX_WIDTH`` columns.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence

from tabulate import tabulate

MAX_WIDTH = 100  # what a command prints fits a terminal of this many columns


def table_text(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """``rows`` under ``headers`` and a dashed rule; the columns numbered in ``right`` are right-aligned."""
    alignment = ["right" if index in right else "left" for index in range(len(headers))]
    lines = tabulate([list(headers), *map(list, rows)], tablefmt="plain", colalign=alignment, disable_numparse=True).splitlines()
    rule = "-" * max(len(line.rstrip()) for line in lines)
    return "\n".join([lines[0].rstrip(), rule, *(line.rstrip() for line in lines[1:])])


def wrapped(text: str, indent: str = "") -> str:
    """``text`` wrapped to ``MAX_WIDTH`` columns, continuation lines indented by two more spaces."""
    return textwrap.fill(text, MAX_WIDTH, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False)


def _finite(value: object) -> object:
    """``value`` with every non-finite float replaced by None, however deeply nested (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def as_json(document: dict) -> str:
    """A command's ``--json`` output: the document with non-finite numbers as ``null``."""
    return json.dumps(_finite(document), indent=2)
