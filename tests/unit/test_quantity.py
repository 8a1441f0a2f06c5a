"""Kubernetes quantities as exact numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from capstan.api.quantity import (
    QuantityError,
    cpu_millis,
    format_amount,
    format_bytes,
    format_cpu,
    parse_quantity,
    resource_amount,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("1", Decimal(1)),
    ("500m", Decimal("0.5")),
    ("1.5", Decimal("1.5")),
    ("100n", Decimal("1e-7")),
    ("2k", Decimal(2000)),
    ("1M", Decimal(10**6)),
    ("1Ki", Decimal(1024)),
    ("1Mi", Decimal(2**20)),
    ("2Gi", Decimal(2 * 2**30)),
    ("1e3", Decimal(1000)),
    ("-1", Decimal(-1)),
])
def test_parse_quantity(text: str, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


def test_numbers_are_accepted_as_is() -> None:
    assert parse_quantity(3) == Decimal(3)
    assert parse_quantity(0.25) == Decimal("0.25")


@pytest.mark.parametrize("bad", ["", "abc", "1Xi", "1 Gi", "Mi"])
def test_invalid_quantities_raise(bad: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(bad)


def test_cpu_millis_rounds_up() -> None:
    assert cpu_millis("250m") == 250
    assert cpu_millis("2") == 2000
    assert cpu_millis("0.0001") == 1
    assert cpu_millis(1.5) == 1500


def test_formatting() -> None:
    assert format_cpu(2000) == "2"
    assert format_cpu(250) == "250m"
    assert format_bytes(2**30) == "1Gi"
    assert format_bytes(3 * 2**20) == "3Mi"
    assert format_bytes(1000) == "1000"
    assert format_amount("cpu", 1500) == "1500m"
    assert format_amount("memory", 2**31) == "2Gi"
    assert format_amount("nvidia.com/gpu", 2) == "2"


def test_resource_amount_units() -> None:
    assert resource_amount("cpu", "100m") == 100
    assert resource_amount("memory", "1Ki") == 1024
    assert resource_amount("memory", "1.5") == 2
    assert resource_amount("nvidia.com/gpu", 1) == 1
