"""pydantic errors in the API server's words (capstan.api.fielderrors); each phrase was taken from
kube-apiserver v1.36.3 (tests/k8s/test_operator_crds.py checks the kinds' pairs against a real one)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from capstan.api.celrules import CrossFieldRule
from capstan.api.fielderrors import causes_from_errors
from capstan.api.quantity import KUBE_QUANTITY_PATTERN, SchemaQuantity


class Spec(BaseModel):
    count: int = Field(default=1, ge=1, le=10)
    ratio: float = Field(default=1.0, gt=0)
    name: str = Field(default="x", min_length=1, max_length=3)
    mode: Literal["A", "B"] = "A"
    items: list[str] = Field(default_factory=lambda: ["a"], min_length=1, max_length=1)
    flag: bool = False
    quantity: SchemaQuantity = 0
    required: str


def causes(data: dict[str, object], *, builtin: bool = False) -> list[tuple[str, str, str]]:
    with pytest.raises(ValidationError) as caught:
        Spec.model_validate({"required": "r", **data})
    return [(c.field, c.reason, c.message) for c in causes_from_errors(caught.value.errors(), builtin=builtin)]


@pytest.mark.parametrize(("data", "expected"), [
    ({"count": 0}, ("count", "FieldValueInvalid",
                    "Invalid value: 0: count in body should be greater than or equal to 1")),
    ({"count": 11}, ("count", "FieldValueInvalid",
                     "Invalid value: 11: count in body should be less than or equal to 10")),
    ({"ratio": 0.0}, ("ratio", "FieldValueInvalid", "Invalid value: 0: ratio in body should be greater than 0")),
    ({"count": "often"}, ("count", "FieldValueTypeInvalid",
                          'Invalid value: "string": count in body must be of type integer: "string"')),
    ({"count": 1.5}, ("count", "FieldValueTypeInvalid",
                      'Invalid value: "number": count in body must be of type integer: "number"')),
    ({"flag": "maybe"}, ("flag", "FieldValueTypeInvalid",
                         'Invalid value: "string": flag in body must be of type boolean: "string"')),
    ({"items": "a"}, ("items", "FieldValueTypeInvalid",
                      'Invalid value: "string": items in body must be of type array: "string"')),
    ({"name": ""}, ("name", "FieldValueInvalid", 'Invalid value: "": name in body should be at least 1 chars long')),
    ({"name": "long"}, ("name", "FieldValueTooLong", "Too long: may not be more than 3 bytes")),
    ({"items": []}, ("items", "FieldValueInvalid", "Invalid value: 0: items in body should have at least 1 items")),
    ({"items": ["a", "b"]}, ("items", "FieldValueTooMany", "Too many: 2: must have at most 1 item")),
    ({"mode": "C"}, ("mode", "FieldValueNotSupported", 'Unsupported value: "C": supported values: "A", "B"')),
    ({"quantity": "lots"}, ("quantity", "FieldValueInvalid",
                            f"Invalid value: \"lots\": quantity in body should match '{KUBE_QUANTITY_PATTERN}'")),
    ({"quantity": 1.5}, ("quantity", "FieldValueTypeInvalid",
                         'Invalid value: "number": quantity in body must be of type integer,string: "number"')),
])
def test_each_failure_reads_as_the_api_server_words_it(data: dict[str, object],
                                                       expected: tuple[str, str, str]) -> None:
    assert causes(data) == [expected]


def test_a_missing_field_is_a_required_value() -> None:
    with pytest.raises(ValidationError) as caught:
        Spec.model_validate({})
    assert [(c.field, c.reason, c.message) for c in causes_from_errors(caught.value.errors())] == [
        ("required", "FieldValueRequired", "Required value")]


def test_built_in_kinds_use_the_go_validation_words_for_bounds() -> None:
    assert causes({"count": 0}, builtin=True) == [
        ("count", "FieldValueInvalid", "Invalid value: 0: must be greater than or equal to 1")]


def test_valid_quantities_pass() -> None:
    for value in ("1.5Gi", "500m", "2", "1e3", 4):
        assert Spec.model_validate({"required": "r", "quantity": value}).quantity == value


def test_a_cross_field_rule_gives_cel_and_the_same_message() -> None:
    rule = CrossFieldRule("self.a <= self.b", "a (%d) must not be greater than b (%d)", ("self.a", "self.b"), ".a")
    assert rule.validation() == {
        "rule": "self.a <= self.b", "fieldPath": ".a",
        "messageExpression": "'a (%d) must not be greater than b (%d)'.format([self.a, self.b])"}
    assert rule.cause_message(5, 2) == "Invalid value: a (5) must not be greater than b (2)"
    with pytest.raises(ValueError):
        CrossFieldRule("true", "it's")
