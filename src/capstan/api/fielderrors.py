"""pydantic validation errors in the words of the Kubernetes API server.

The embedded store validates with the pydantic models; on Kubernetes the API server validates the same
objects with the CRD schemas generated from those models. ``causes_from_errors`` turns each pydantic error
into the cause the API server reports for the same failure, reason and message alike, e.g.::

    spec.pollingInterval: Invalid value: "string": spec.pollingInterval in body must be of type integer: "string"
    spec.scaleTargetRef.name: Required value
    spec.triggers[0].metricType: Unsupported value: "Bogus": supported values: "AverageValue", "Value"

The phrasing follows k8s.io/apimachinery's field errors (``Invalid value: <value>: <detail>``, ``Required
value``, ``Unsupported value``, ``Too long``, ``Too many``) with the OpenAPI validator's details (``<path>
in body should be greater than or equal to 1``). tests/k8s/test_operator_crds.py checks each pair
against a real API server. Errors the models raise themselves (KEDA's and Kueue's webhook rules) already
carry a Kubernetes reason and keep their message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic_core import ErrorDetails

from capstan.api.errors import Cause

INVALID = "FieldValueInvalid"
REQUIRED = "FieldValueRequired"
TYPE_INVALID = "FieldValueTypeInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
FORBIDDEN = "FieldValueForbidden"

# pydantic's type errors -> the OpenAPI type the schema declares for that field.
_EXPECTED_TYPE = {
    "int_type": "integer", "int_parsing": "integer", "int_from_float": "integer", "int_parsing_size": "integer",
    "float_type": "number", "float_parsing": "number", "decimal_type": "number", "decimal_parsing": "number",
    "string_type": "string", "bool_type": "boolean", "bool_parsing": "boolean",
    "list_type": "array", "tuple_type": "array", "set_type": "array",
    "dict_type": "object", "model_type": "object", "model_attributes_type": "object", "dataclass_type": "object",
}
_TYPE_ORDER = ("integer", "string", "number", "boolean", "array", "object")
_BOUNDS = {"greater_than_equal": ("ge", "greater than or equal to"), "greater_than": ("gt", "greater than"),
           "less_than_equal": ("le", "less than or equal to"), "less_than": ("lt", "less than")}
# pydantic appends the union member it tried to the location ("str", "int", ...): not part of the path.
_UNION_MEMBERS = {"str", "int", "float", "bool", "literal['v1']"}
_PREFIXES = ("Value error, ", "Assertion failed, ")
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


def format_loc(loc: Iterable[int | str]) -> str:
    """A pydantic location as a Kubernetes field path: ``spec.triggers[0].type``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def json_type(value: Any) -> str:
    """The OpenAPI type name of a decoded JSON value, as the API server names it in type errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def shown(value: Any) -> str:
    """A value as field errors print it: strings quoted, numbers and booleans bare, null as null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)  # Go's %v: 1.5, 2 (not 2.0), 1e+21
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, INVALID, f"Invalid value: {shown(value)}: {detail}")


def type_invalid(path: str, value: Any, expected: Sequence[str]) -> Cause:
    actual = json_type(value)
    ordered = sorted(set(expected), key=lambda name: _TYPE_ORDER.index(name) if name in _TYPE_ORDER else 99)
    return Cause(path, TYPE_INVALID,
                 f'Invalid value: "{actual}": {path} in body must be of type {",".join(ordered)}: "{actual}"')


def not_supported(path: str, value: Any, supported: Sequence[str]) -> Cause:
    listed = ", ".join(json.dumps(item, ensure_ascii=False) for item in supported)
    return Cause(path, NOT_SUPPORTED, f"Unsupported value: {shown(value)}: supported values: {listed}")


def causes_from_errors(errors: Sequence[ErrorDetails], *, builtin: bool = False) -> list[Cause]:
    """The API server's causes for pydantic's errors, in pydantic's order. The several type errors a union
    reports for one field become one cause naming every type, as for ``x-kubernetes-int-or-string``.

    ``builtin``: the object is of a kind Kubernetes validates in Go (Deployment, Pod, ...), whose bounds
    read ``Invalid value: -1: must be greater than or equal to 0``, without the OpenAPI validator's
    ``<path> in body should be``."""
    causes: list[Cause] = []
    type_errors: dict[str, tuple[int, Any, list[str]]] = {}
    for error in errors:
        loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
        path = format_loc(p for p in loc if p not in _UNION_MEMBERS)
        expected = _EXPECTED_TYPE.get(error["type"])
        if expected is not None:
            if path in type_errors:
                type_errors[path][2].append(expected)
                continue
            type_errors[path] = (len(causes), error["input"], [expected])
            causes.append(Cause(path, TYPE_INVALID, ""))  # filled in below, once every union member is seen
            continue
        cause = _cause(path, error, builtin)
        if cause not in causes:
            causes.append(cause)
    for path, (index, value, expected_types) in type_errors.items():
        causes[index] = type_invalid(path, value, expected_types)
    return causes


def _cause(path: str, error: ErrorDetails, builtin: bool) -> Cause:
    kind, value, ctx = error["type"], error["input"], error.get("ctx") or {}
    if kind.startswith("FieldValue"):
        return Cause(path, kind, error["msg"])  # the models' own rules, already in Kubernetes' words
    if kind == "missing":
        return Cause(path, REQUIRED, "Required value")
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        if builtin:
            return invalid(path, value, f"must be {words} {shown(ctx[key])}")
        return invalid(path, value, f"{path} in body should be {words} {shown(ctx[key])}")
    if kind == "string_too_short":
        return invalid(path, value, f"{path} in body should be at least {ctx['min_length']} chars long")
    if kind == "string_too_long":
        return Cause(path, TOO_LONG, f"Too long: may not be more than {ctx['max_length']} bytes")
    if kind == "string_pattern_mismatch":
        return invalid(path, value, f"{path} in body should match '{ctx['pattern']}'")
    if kind == "too_short":
        things = "properties" if ctx.get("field_type") == "Dictionary" else "items"
        return invalid(path, ctx["actual_length"], f"{path} in body should have at least {ctx['min_length']} "
                                                   f"{things}")
    if kind == "too_long":
        limit = int(ctx["max_length"])
        return Cause(path, TOO_MANY, f"Too many: {ctx['actual_length']}: must have at most {limit} "
                                     f"item{'' if limit == 1 else 's'}")
    if kind in ("literal_error", "enum"):
        supported = _QUOTED.findall(str(ctx.get("expected", "")))
        if not isinstance(value, str) and supported:
            return type_invalid(path, value, ["string"])
        return not_supported(path, value, supported)
    if kind == "extra_forbidden":
        return Cause(path, FORBIDDEN, "Forbidden: field not declared in schema")
    message = error["msg"]
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    return Cause(path, INVALID, message)
