"""Units: the only place with conversion factors and unit-string parsing.

Everything inside the simulator is an SI base quantity held in a plain float: seconds, bytes,
FLOP, bytes/s, FLOP/s. Scenario files may write quantities with units (``"900 GB/s"``,
``"400 Gb/s"``, ``"1.5 us"``, ``"80 GiB"``, ``"989 TFLOP/s"``); they are parsed here, once, at
load time. Unit symbols are case-sensitive: ``B`` is a byte and ``b`` a bit, ``GB`` is 10^9 bytes
and ``GiB`` is 2^30 bytes. A quantity of the wrong dimension (a bandwidth written in seconds) is an
error, never a silent conversion.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

BITS_PER_BYTE = 8
FLOPS_PER_MULTIPLY_ADD = 2  # the counting convention of every FLOP figure (a multiply and an add)
CAUSAL_MASK_FRACTION = 0.5  # the share of its score matrix a causal attention's FLOPs count

# Decimal and binary multipliers, case-sensitive ("k" is kilo; "K" appears only in "Ki").
DECIMAL_PREFIXES = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
BINARY_PREFIXES = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}

SECOND_FACTORS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
MICROSECONDS_PER_SECOND = 1e6
MILLISECONDS_PER_SECOND = 1e3
MICROSECONDS_PER_MILLISECOND = 1e3
PERCENT = 100.0  # a fraction times this is in percent

Dimension = Literal["size", "bandwidth", "duration", "flop_rate"]


def _size_units() -> dict[str, float]:
    """Unit symbol -> bytes, for byte and bit units with decimal and binary prefixes."""
    units: dict[str, float] = {}
    for prefix, factor in {**DECIMAL_PREFIXES, **BINARY_PREFIXES}.items():
        units[f"{prefix}B"] = factor
        units[f"{prefix}b"] = factor / BITS_PER_BYTE
    return units


SIZE_UNITS = _size_units()
BANDWIDTH_UNITS = {f"{symbol}/s": factor for symbol, factor in SIZE_UNITS.items()}
BANDWIDTH_UNITS.update({f"{p}bps": f / BITS_PER_BYTE for p, f in DECIMAL_PREFIXES.items()})
FLOP_RATE_UNITS = {f"{p}FLOP/s": f for p, f in DECIMAL_PREFIXES.items()}
FLOP_RATE_UNITS.update({f"{p}FLOPS": f for p, f in DECIMAL_PREFIXES.items()})

UNITS_BY_DIMENSION: dict[str, dict[str, float]] = {
    "size": SIZE_UNITS,
    "bandwidth": BANDWIDTH_UNITS,
    "duration": SECOND_FACTORS,
    "flop_rate": FLOP_RATE_UNITS,
}
BASE_UNIT = {"size": "B", "bandwidth": "B/s", "duration": "s", "flop_rate": "FLOP/s"}

# Magnitudes a value may have (zero where the field allows it). Below the lower bounds a rate is a
# typo that makes times absurd (a 1e-300 FLOP/s peak gives infinite kernels); the upper bounds of the
# rates are far above any machine so that an idealised "free" link or memory (1e30 B/s) stays possible.
PHYSICAL_RANGE: dict[str, tuple[float, float]] = {
    "size": (1.0, 1e18),  # a byte to an exabyte
    "bandwidth": (1e3, 1e30),  # 1 kB/s up
    "duration": (1e-15, 1e5),  # a femtosecond to a day
    "flop_rate": (1e6, 1e30),  # 1 MFLOP/s up
}

_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")


class UnitError(ValueError):
    """A quantity string that cannot be read as the expected dimension."""


def dimension_of(unit: str) -> str | None:
    """The dimension a unit symbol belongs to, or None if the symbol is unknown."""
    for dimension, table in UNITS_BY_DIMENSION.items():
        if unit in table:
            return dimension
    return None


def parse_quantity(value: object, dimension: Dimension) -> float:
    """Read ``value`` (a number in SI base units, or a string with a unit) as ``dimension``.

    Returns the value in SI base units (bytes, bytes/s, seconds, FLOP/s). Raises UnitError with a
    reason a user can act on: unknown unit, wrong dimension, not a number, not finite.
    """
    if isinstance(value, bool):
        raise UnitError(f"expected a {dimension}, got a boolean")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise UnitError(f"{shown(value)} is beyond any finite {dimension}") from None
    elif isinstance(value, str):
        match = _QUANTITY.match(value)
        if match is None:
            raise UnitError(f"cannot read {value!r} as a {dimension} (expected e.g. '{example(dimension)}')")
        number_text, unit = match.groups()
        number = float(number_text)
        if unit:
            table = UNITS_BY_DIMENSION[dimension]
            if unit not in table:
                other = dimension_of(unit)
                if other is not None:
                    raise UnitError(f"{value!r} is a {other.replace('_', ' ')}, expected a {dimension.replace('_', ' ')}")
                raise UnitError(f"unknown unit {unit!r} in {value!r} (units are case-sensitive; e.g. '{example(dimension)}')")
            number *= table[unit]
    else:
        raise UnitError(f"expected a {dimension} as a number or a string like '{example(dimension)}', got {type(value).__name__}")
    if not math.isfinite(number):
        raise UnitError(f"{value!r} is not a finite {dimension}")
    low, high = PHYSICAL_RANGE[dimension]
    if number != 0 and not low <= abs(number) <= high:
        raise UnitError(
            f"{shown(value)} is outside the physical range of a {dimension.replace('_', ' ')} "
            f"({low:g} to {high:g} {BASE_UNIT[dimension]})"
        )
    return number


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages (an integer can be 300 digits)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def example(dimension: str) -> str:
    """A valid example string for a dimension, used in error messages."""
    return {"size": "80 GiB", "bandwidth": "450 GB/s", "duration": "1.5 us", "flop_rate": "989 TFLOP/s"}[dimension]


def _positive(dimension: Dimension):
    def validate(value: object) -> float:
        number = parse_quantity(value, dimension)
        if number <= 0:
            raise UnitError(f"{dimension.replace('_', ' ')} must be positive, got {value!r}")
        return number

    return validate


def _non_negative(dimension: Dimension):
    def validate(value: object) -> float:
        number = parse_quantity(value, dimension)
        if number < 0:
            raise UnitError(f"{dimension.replace('_', ' ')} must not be negative, got {value!r}")
        return number

    return validate


def _schema(dimension: Dimension, description: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "description": f"in {BASE_UNIT[dimension]}"},
                {"type": "string", "description": f"number and unit, e.g. '{example(dimension)}'"},
            ],
            "description": description,
        }
    )


_AS_FLOAT = PlainSerializer(float, return_type=float)

Bandwidth = Annotated[
    float, BeforeValidator(_positive("bandwidth")), _schema("bandwidth", "bandwidth per direction, bytes/s"), _AS_FLOAT
]
Duration = Annotated[float, BeforeValidator(_non_negative("duration")), _schema("duration", "duration, seconds"), _AS_FLOAT]
Size = Annotated[float, BeforeValidator(_positive("size")), _schema("size", "size, bytes"), _AS_FLOAT]
SizeOrZero = Annotated[float, BeforeValidator(_non_negative("size")), _schema("size", "size, bytes (0 allowed)"), _AS_FLOAT]
FlopRate = Annotated[float, BeforeValidator(_positive("flop_rate")), _schema("flop_rate", "FLOP rate, FLOP/s"), _AS_FLOAT]


# Bytes per element of each numeric format a layer may compute or communicate in.
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


def to_microseconds(seconds: float) -> float:
    """Seconds -> microseconds (Chrome trace-event timestamps are in microseconds)."""
    return seconds * MICROSECONDS_PER_SECOND


def format_duration(seconds: float) -> str:
    """A human-readable duration: '1.23 ms', '45.6 us', '789 ns'."""
    for unit in ("s", "ms", "us", "ns"):
        if abs(seconds) >= SECOND_FACTORS[unit] or unit == "ns":
            return f"{seconds / SECOND_FACTORS[unit]:.3g} {unit}"
    raise AssertionError("unreachable")


def format_bytes(size_bytes: float) -> str:
    """A human-readable size in binary units: '1.5 GiB'."""
    for prefix in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        if abs(size_bytes) >= BINARY_PREFIXES[prefix]:
            return f"{size_bytes / BINARY_PREFIXES[prefix]:.3g} {prefix}B"
    return f"{size_bytes:.0f} B"


def format_flops(flop: float) -> str:
    """A human-readable FLOP count: '1.2 TFLOP'."""
    for prefix in ("P", "T", "G", "M", "k"):
        if abs(flop) >= DECIMAL_PREFIXES[prefix]:
            return f"{flop / DECIMAL_PREFIXES[prefix]:.3g} {prefix}FLOP"
    return f"{flop:.0f} FLOP"


def format_count(count: float) -> str:
    """A human-readable count with a decimal prefix: '403M', '1.2G' (parameters, tokens)."""
    for prefix in ("P", "T", "G", "M", "k"):
        if abs(count) >= DECIMAL_PREFIXES[prefix]:
            return f"{count / DECIMAL_PREFIXES[prefix]:.3g}{prefix}"
    return f"{count:.3g}"
