"""Label and field selectors with Kubernetes syntax."""

from __future__ import annotations

import pytest

from capstan.api.selectors import FieldSelector, LabelSelector, SelectorError, lookup_path

LABELS = {"app": "web", "env": "prod", "tier": "front"}


@pytest.mark.parametrize(("selector", "expected"), [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app=db", False),
    ("app!=db", True),
    ("missing!=x", True),
    ("app=web,env=prod", True),
    ("app=web,env=dev", False),
    ("env in (prod, staging)", True),
    ("env in (dev)", False),
    ("env notin (dev,staging)", True),
    ("missing notin (x)", True),
    ("missing in (x)", False),
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("app=web, env in (prod), !missing", True),
])
def test_label_selector_matching(selector: str, expected: bool) -> None:
    assert LabelSelector.parse(selector).matches(LABELS) is expected


def test_empty_selector_matches_objects_without_labels() -> None:
    assert LabelSelector.parse("").matches(None)
    assert not LabelSelector.parse("app").matches(None)
    assert LabelSelector.parse("app!=x").matches({})


@pytest.mark.parametrize("bad", ["=web", "app in (web", "a b c"])
def test_malformed_label_selectors_raise(bad: str) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse(bad)


def test_from_model_reads_match_labels_and_expressions() -> None:
    selector = LabelSelector.from_model({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]},
                             {"key": "canary", "operator": "DoesNotExist"}],
    })
    assert selector.matches(LABELS)
    assert not selector.matches({**LABELS, "canary": "yes"})
    assert str(selector) == "app=web,env in (prod,staging),!canary"
    assert LabelSelector.parse(str(selector)) == selector


def test_from_model_rejects_unknown_operators() -> None:
    with pytest.raises(SelectorError):
        LabelSelector.from_model({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})


POD = {"metadata": {"name": "p1", "namespace": "ns"}, "spec": {"nodeName": "node-a"},
       "status": {"phase": "Running"}, "involvedObject": {"uid": "u-1"}}


@pytest.mark.parametrize(("selector", "expected"), [
    ("metadata.name=p1", True),
    ("metadata.namespace=ns,status.phase=Running", True),
    ("spec.nodeName!=node-a", False),
    ("status.phase==Pending", False),
    ("involvedObject.uid=u-1", True),
    ("spec.missing=", True),
    ("spec.missing!=", False),
])
def test_field_selector_matching(selector: str, expected: bool) -> None:
    assert FieldSelector.parse(selector).matches(POD) is expected


def test_field_selectors_allow_only_equality() -> None:
    with pytest.raises(SelectorError):
        FieldSelector.parse("status.phase in (Running)")


def test_lookup_path() -> None:
    assert lookup_path(POD, "spec.nodeName") == "node-a"
    assert lookup_path(POD, "spec.nodeName.deeper") is None
    assert lookup_path(POD, "absent") is None
