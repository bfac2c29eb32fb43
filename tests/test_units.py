import math

import pytest
from pydantic import BaseModel, ValidationError

from secmoe_sim.spec.units import (
    Bandwidth,
    Duration,
    FlopRate,
    Size,
    UnitError,
    format_bytes,
    format_duration,
    parse_quantity,
    to_microseconds,
)


@pytest.mark.parametrize(
    "text, dimension, expected",
    [
        ("900 GB/s", "bandwidth", 900e9),
        ("400 Gb/s", "bandwidth", 50e9),
        ("400 Gbps", "bandwidth", 50e9),
        ("1.5 us", "duration", 1.5e-6),
        ("936.25 ns", "duration", 936.25e-9),
        ("3 ms", "duration", 3e-3),
        ("80 GiB", "size", 80 * 2**30),
        ("80 GB", "size", 80e9),
        ("8 Gb", "size", 1e9),
        ("989 TFLOP/s", "flop_rate", 989e12),
        ("989 TFLOPS", "flop_rate", 989e12),
        ("1e9", "bandwidth", 1e9),
        (2.5, "duration", 2.5),
        (7, "size", 7.0),
    ],
)
def test_parse(text, dimension, expected):
    assert parse_quantity(text, dimension) == pytest.approx(expected, rel=1e-12)


def test_bits_are_an_eighth_of_bytes_and_binary_prefixes_differ():
    assert parse_quantity("1 GB/s", "bandwidth") == 8 * parse_quantity("1 Gb/s", "bandwidth")
    assert parse_quantity("1 GiB", "size") / parse_quantity("1 GB", "size") == pytest.approx(2**30 / 1e9)


def test_symbols_are_case_sensitive():
    with pytest.raises(UnitError, match="unknown unit 'gb/s'"):
        parse_quantity("1 gb/s", "bandwidth")
    with pytest.raises(UnitError, match="unknown unit"):
        parse_quantity("1 KB", "size")  # kilo is 'k'; 'K' only appears in 'Ki'


@pytest.mark.parametrize(
    "text, dimension, message",
    [
        ("1.5 us", "bandwidth", "is a duration, expected a bandwidth"),
        ("80 GiB", "duration", "is a size, expected a duration"),
        ("450 GB/s", "size", "is a bandwidth, expected a size"),
        ("12 parsecs", "duration", "unknown unit 'parsecs'"),
        ("fast", "bandwidth", "cannot read 'fast'"),
        (True, "size", "boolean"),
        (None, "size", "got NoneType"),
        (float("nan"), "size", "not a finite"),
    ],
)
def test_errors(text, dimension, message):
    with pytest.raises(UnitError, match=message):
        parse_quantity(text, dimension)


class Link(BaseModel):
    bandwidth: Bandwidth
    latency: Duration
    size: Size | None = None
    peak: FlopRate | None = None


def test_pydantic_types_parse_and_check_sign():
    link = Link(bandwidth="450 GB/s", latency="1 us", size="1 KiB", peak="1 TFLOP/s")
    assert (link.bandwidth, link.latency, link.size, link.peak) == (450e9, 1e-6, 1024.0, 1e12)
    assert Link(bandwidth=1e3, latency=0).latency == 0.0
    with pytest.raises(ValidationError, match="bandwidth must be positive"):
        Link(bandwidth="0 GB/s", latency=0)
    with pytest.raises(ValidationError, match="duration must not be negative"):
        Link(bandwidth=1e3, latency="-1 us")


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("bandwidth", 1e-300, "outside the physical range of a bandwidth"),
        ("latency", "1e308 s", "outside the physical range of a duration"),
        ("peak", "1e-3 FLOP/s", "outside the physical range of a flop rate"),
        ("size", 2**1100, "beyond any finite size"),
        ("bandwidth", True, "got a boolean"),
    ],
)
def test_quantities_outside_physical_ranges_are_refused(field, value, reason):
    fields = {"bandwidth": 1e9, "latency": 0.0, field: value}
    with pytest.raises(ValidationError, match=reason):
        Link(**fields)


def test_round_trip_through_serialisation():
    link = Link(bandwidth="400 Gb/s", latency="936.25 ns")
    again = Link.model_validate(link.model_dump())
    assert again == link and again.bandwidth == 50e9


def test_formatting():
    assert format_duration(1.5e-3) == "1.5 ms"
    assert format_duration(2e-6) == "2 us"
    assert format_bytes(3 * 2**30) == "3 GiB"
    assert math.isclose(to_microseconds(1.5), 1.5e6)
