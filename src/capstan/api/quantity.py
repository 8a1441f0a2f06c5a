"""Kubernetes resource quantities ("500m", "1Gi", "2") as exact numbers."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
            "P": Decimal(10**15), "E": Decimal(10**18)}
_PATTERN = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


# The pattern Kubernetes' own quantity fields carry in CRD schemas (resource.Quantity's OpenAPI definition).
KUBE_QUANTITY_PATTERN = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                         r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
_KUBE_QUANTITY = re.compile(KUBE_QUANTITY_PATTERN)


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a quantity into a Decimal in base units (cores for cpu, bytes for memory)."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _PATTERN.match(value.strip())
    if not match:
        raise QuantityError(f"quantities must match the regular expression "
                            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {value!r}")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
    except InvalidOperation as exc:
        raise QuantityError(f"invalid quantity {value!r}") from exc
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    return base * _DECIMAL[suffix]


def cpu_millis(value: str | int | float) -> int:
    """CPU quantity in millicores, rounded up as the kubelet does."""
    millis = parse_quantity(value) * 1000
    return int(millis.to_integral_value(rounding="ROUND_CEILING"))


def format_cpu(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(count: int) -> str:
    for suffix, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if count % size == 0 and count >= size:
            return f"{count // size}{suffix}"
    return str(count)


def resource_amount(name: str, value: str | int | float) -> int:
    """A quantity as an integer in the resource's accounting unit (millicores for cpu, else units)."""
    if name == "cpu":
        return cpu_millis(value)
    return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))


def format_amount(name: str, amount: int) -> str:
    if name == "cpu":
        return format_cpu(amount)
    if name == "memory" or name.endswith("storage"):
        return format_bytes(amount)
    return str(amount)


def _quantity_syntax(value: int | str) -> int | str:
    if isinstance(value, str) and not _KUBE_QUANTITY.match(value):
        raise PydanticCustomError("string_pattern_mismatch", "String should match pattern '{pattern}'",
                                  {"pattern": KUBE_QUANTITY_PATTERN})
    return value


SchemaQuantity = Annotated[
    int | str, AfterValidator(_quantity_syntax),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": KUBE_QUANTITY_PATTERN})]
"""A quantity field of a CRD-served kind: an integer or a string matching Kubernetes' quantity pattern,
checked the same way by the model and (as ``x-kubernetes-int-or-string`` with ``pattern``) by the API
server, with the same message."""
