"""AdmissionReview handling of ``capstan.server.webhook`` without an API server: JSONPatch answers, denials,
operations the hooks do not see. (The API server applying them is tests/k8s/test_webhook_admission.py.)"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from capstan.api.errors import Cause, InvalidError
from capstan.server.webhook import AdmissionHooks, AdmissionWebhook, json_patch


def review(operation: str, obj: dict[str, Any] | None, old: dict[str, Any] | None = None,
           kind: str = "Job") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "batch", "version": "v1", "kind": kind}, "operation": operation,
        "namespace": "team-a", "object": obj, "oldObject": old}}


def test_json_patch_escapes_label_keys_and_removes_what_is_gone() -> None:
    before = {"metadata": {"labels": {"a/b": "1", "gone": "x"}}, "spec": {"suspend": False, "list": [1]}}
    after = {"metadata": {"labels": {"a/b": "2", "new~key": "y"}}, "spec": {"suspend": True, "list": [1, 2]}}
    assert json_patch(before, after) == [
        {"op": "remove", "path": "/metadata/labels/gone"},
        {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"},
        {"op": "add", "path": "/metadata/labels/new~0key", "value": "y"},
        {"op": "replace", "path": "/spec/suspend", "value": True},
        {"op": "replace", "path": "/spec/list", "value": [1, 2]},
    ]
    assert json_patch(after, after) == []


async def test_a_mutation_is_answered_with_a_json_patch() -> None:
    hooks = AdmissionHooks()
    hooks.add_mutator("Job", lambda new, old: new["spec"].__setitem__("suspend", True) if old is None else None)
    webhook = AdmissionWebhook(hooks)
    answer = await webhook.review(review("CREATE", {"metadata": {"name": "j"}, "spec": {}}), mutating=True)
    response = answer["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == ("u-1", True, "JSONPatch")
    assert json.loads(base64.b64decode(response["patch"])) == [{"op": "add", "path": "/spec/suspend", "value": True}]
    unchanged = await webhook.review(review("UPDATE", {"metadata": {"name": "j"}, "spec": {}}, {"spec": {}}),
                                     mutating=True)
    assert unchanged["response"] == {"uid": "u-1", "allowed": True}


async def test_a_validator_error_is_a_denial_with_its_status() -> None:
    def refuse(new: dict[str, Any], old: dict[str, Any] | None) -> None:
        raise InvalidError.from_causes("Job", new["metadata"]["name"], [Cause("spec.x", "FieldValueInvalid", "no")])

    hooks = AdmissionHooks()
    hooks.add_validator("Job", refuse)
    answer = await AdmissionWebhook(hooks).review(review("CREATE", {"metadata": {"name": "j"}}), mutating=False)
    response = answer["response"]
    assert response["allowed"] is False
    status = response["status"]
    assert (status["code"], status["reason"], status["message"]) == (422, "Invalid", 'Job "j" is invalid: spec.x: no')
    assert status["details"]["causes"] == [{"field": "spec.x", "reason": "FieldValueInvalid", "message": "no"}]


async def test_deletes_and_unknown_kinds_pass_untouched(tmp_path: Path) -> None:
    hooks = AdmissionHooks()
    hooks.add_validator("Job", lambda new, old: (_ for _ in ()).throw(AssertionError("called")))
    webhook = AdmissionWebhook(hooks)
    assert (await webhook.review(review("DELETE", None), mutating=False))["response"]["allowed"] is True
    other = await webhook.review(review("CREATE", {"metadata": {"name": "c"}}, kind="ConfigMap"), mutating=False)
    assert other["response"] == {"uid": "u-1", "allowed": True}
