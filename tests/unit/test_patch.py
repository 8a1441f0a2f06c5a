"""RFC 7386 JSON merge patch: the RFC's examples, and properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capstan.api.patch import create_merge_patch, merge_patch

# The test cases of RFC 7386 appendix A whose target is an object.
RFC_CASES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC_CASES)
def test_rfc_7386_examples(target: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    assert merge_patch(target, patch) == expected


def test_inputs_are_not_mutated() -> None:
    target = {"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2]}}
    patch = {"metadata": {"labels": {"a": None, "b": "2"}}, "spec": {"list": [3]}}
    before_target, before_patch = copy.deepcopy(target), copy.deepcopy(patch)
    result = merge_patch(target, patch)
    assert result == {"metadata": {"labels": {"b": "2"}}, "spec": {"list": [3]}}
    assert (target, patch) == (before_target, before_patch)
    result["spec"]["list"].append(4)
    assert patch["spec"]["list"] == [3]


def test_a_kubernetes_style_patch() -> None:
    pod = {"metadata": {"name": "p", "finalizers": ["a", "b"]}, "status": {"phase": "Running", "podIP": "1.2.3.4"}}
    patched = merge_patch(pod, {"metadata": {"finalizers": None}, "status": {"phase": "Succeeded", "podIP": None}})
    assert patched == {"metadata": {"name": "p"}, "status": {"phase": "Succeeded"}}


def test_create_merge_patch_is_minimal() -> None:
    original = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "f": "same"}
    modified = {"a": 2, "b": {"c": 2}, "e": [1, 2], "f": "same", "g": True}
    assert create_merge_patch(original, modified) == {"a": 2, "b": {"d": None}, "e": [1, 2], "g": True}
    assert create_merge_patch(original, original) == {}


def test_create_merge_patch_replaces_a_value_of_another_type() -> None:
    assert create_merge_patch({"a": 1}, {"a": True}) == {"a": True}
    assert create_merge_patch({"a": {"x": 1}}, {"a": "flat"}) == {"a": "flat"}


_scalars = st.one_of(st.integers(), st.text(max_size=3), st.booleans())
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abcd"), inner, max_size=3)),
    max_leaves=10,
)
_documents = st.dictionaries(st.sampled_from("abcdef"), _values, max_size=5)


@given(_documents, _documents)
def test_the_created_patch_turns_original_into_modified(original: dict[str, Any], modified: dict[str, Any]) -> None:
    assert merge_patch(original, create_merge_patch(original, modified)) == modified


@given(_documents, _documents)
def test_applying_a_patch_twice_changes_nothing_more(target: dict[str, Any], patch: dict[str, Any]) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once
