"""A ClusterQueue naming a flavor that no ResourceFlavor has is rejected at create and update, with the
field path, by the batch admission hooks on a real SqliteStore (the functions the Kubernetes webhook
calls too). A flavor deleted later leaves the queue writable and inactive (test_batch_admission.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.workloads_kit import open_store

from capstan.api.errors import Cause, InvalidError, NotFoundError
from capstan.controllers.batch import install_admission_hooks
from capstan.controllers.batch.validation import (
    NOT_FOUND,
    check_cluster_queue_flavors,
    missing_flavor_causes,
    required_references,
)
from capstan.server.webhook import AdmissionWebhook, capstan_admission_hooks
from capstan.store.base import Obj, Store

KUEUE = "kueue.x-k8s.io/v1beta1"
CQ = "clusterqueues.kueue.x-k8s.io"
FLAVORS = "resourceflavors.kueue.x-k8s.io"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path)
    install_admission_hooks(opened)
    try:
        yield opened
    finally:
        await opened.close()


def flavor(name: str) -> Obj:
    return {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": name}}


def cluster_queue(name: str, *flavors: str, api_version: str = KUEUE, **spec: Any) -> Obj:
    return {"apiVersion": api_version, "kind": "ClusterQueue", "metadata": {"name": name}, "spec": {
        "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
            {"name": f, "resources": [{"name": "cpu", "nominalQuota": "2"}]} for f in flavors]}], **spec}}


async def rejected(write: Any) -> InvalidError:
    with pytest.raises(InvalidError) as caught:
        await write
    return caught.value


async def test_a_cluster_queue_naming_an_unknown_flavor_is_rejected_with_the_field_path(store: Store) -> None:
    await store.create(flavor("on-demand"))
    error = await rejected(store.create(cluster_queue("cq", "on-demand", "spot")))
    assert error.message == ('ClusterQueue "cq" is invalid: spec.resourceGroups[0].flavors[1].name: '
                             'Not found: "spot": no ResourceFlavor named "spot"')
    assert error.causes == [Cause("spec.resourceGroups[0].flavors[1].name", "FieldValueNotFound",
                                  'Not found: "spot": no ResourceFlavor named "spot"')]
    assert error.to_status()["code"] == 422
    with pytest.raises(NotFoundError):
        await store.get(store.registry.lookup(CQ), "cq")

    await store.create(flavor("spot"))
    created = await store.create(cluster_queue("cq", "on-demand", "spot"))
    assert [f["name"] for f in created["spec"]["resourceGroups"][0]["flavors"]] == ["on-demand", "spot"]


async def test_every_unknown_flavor_is_reported_in_field_order_under_either_api_version(store: Store) -> None:
    queue = cluster_queue("cq2", "a100", "h100", api_version="kueue.x-k8s.io/v1beta2")
    queue["spec"]["resourceGroups"].append({"coveredResources": ["memory"], "flavors": [
        {"name": "big-mem", "resources": [{"name": "memory", "nominalQuota": "1Gi"}]}]})
    error = await rejected(store.create(queue))
    assert [(c.field, c.message) for c in error.causes] == [
        ("spec.resourceGroups[0].flavors[0].name", 'Not found: "a100": no ResourceFlavor named "a100"'),
        ("spec.resourceGroups[0].flavors[1].name", 'Not found: "h100": no ResourceFlavor named "h100"'),
        ("spec.resourceGroups[1].flavors[0].name", 'Not found: "big-mem": no ResourceFlavor named "big-mem"'),
    ]


async def test_the_dry_run_rejects_it_too(store: Store) -> None:
    error = await rejected(store.create(cluster_queue("dry", "spot"), dry_run=True))
    assert error.causes[0].field == "spec.resourceGroups[0].flavors[0].name"
    await store.create(flavor("spot"))
    assert (await store.create(cluster_queue("dry", "spot"), dry_run=True))["metadata"]["name"] == "dry"


async def test_the_schema_rules_come_first_and_the_flavor_check_after_them(store: Store) -> None:
    queue = cluster_queue("both", "spot")
    queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["borrowingLimit"] = "1"
    error = await rejected(store.create(queue))
    assert [c.field for c in error.causes] == ["spec.resourceGroups[0].flavors[0].resources[0].borrowingLimit"]
    assert error.causes[0].message == "must be nil when cohort is empty"


async def test_an_update_that_adds_an_unknown_flavor_is_rejected(store: Store) -> None:
    await store.create(flavor("default"))
    queue = await store.create(cluster_queue("grow", "default"))
    queue["spec"]["resourceGroups"][0]["flavors"].append(
        {"name": "spot", "resources": [{"name": "cpu", "nominalQuota": "1"}]})
    error = await rejected(store.update(queue))
    assert error.message == ('ClusterQueue "grow" is invalid: spec.resourceGroups[0].flavors[1].name: '
                             'Not found: "spot": no ResourceFlavor named "spot"')
    patch = {"spec": {"resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
        {"name": "gpu", "resources": [{"name": "cpu", "nominalQuota": "1"}]}]}]}}
    error = await rejected(store.patch(store.registry.lookup(CQ), "grow", None, patch))
    assert error.causes[0].field == "spec.resourceGroups[0].flavors[0].name"
    stored = await store.get(store.registry.lookup(CQ), "grow")
    assert [f["name"] for f in stored["spec"]["resourceGroups"][0]["flavors"]] == ["default"]


async def test_a_queue_whose_flavor_was_deleted_stays_writable(store: Store) -> None:
    await store.create(flavor("gone"))
    cqs = store.registry.lookup(CQ)
    await store.create(cluster_queue("orphan", "gone"))
    await store.delete(store.registry.lookup(FLAVORS), "gone")
    # Labels, quota and the status the admission loop writes: the flavor name was there before.
    patched = await store.patch(cqs, "orphan", None, {"metadata": {"labels": {"team": "a"}}})
    assert patched["metadata"]["labels"] == {"team": "a"}
    patched["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuota"] = "3"
    updated = await store.update(patched)
    assert updated["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuota"] == "3"
    updated["status"] = {"conditions": [{"type": "Active", "status": "False", "reason": "FlavorNotFound",
                                         "message": "x", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}
    assert (await store.update_status(updated))["status"]["conditions"][0]["reason"] == "FlavorNotFound"
    # Adding another missing flavor is still refused, naming only the new one.
    updated = await store.get(cqs, "orphan")
    updated["spec"]["resourceGroups"][0]["flavors"].append(
        {"name": "spot", "resources": [{"name": "cpu", "nominalQuota": "1"}]})
    error = await rejected(store.update(updated))
    assert [c.field for c in error.causes] == ["spec.resourceGroups[0].flavors[1].name"]


# ---- the pieces the webhook and capstan apply call ------------------------------------------------

def test_missing_flavor_causes_is_a_pure_check_of_the_names_a_write_introduces() -> None:
    new = cluster_queue("cq", "default", "spot", "gpu")
    old = cluster_queue("cq", "gpu")
    assert missing_flavor_causes(new, old, {"default"}) == [
        Cause("spec.resourceGroups[0].flavors[1].name", NOT_FOUND, 'Not found: "spot": no ResourceFlavor named "spot"')]
    assert missing_flavor_causes(new, None, {"default", "spot", "gpu"}) == []


async def test_the_check_reads_the_store_only_when_a_name_is_new(store: Store) -> None:
    class NoReads:
        registry = store.registry

        async def list(self, *_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError("listed flavors for a write that names no new flavor")

    queue = cluster_queue("cq", "anything")
    await check_cluster_queue_flavors(NoReads(), queue, queue)  # type: ignore[arg-type]


def test_required_references_name_the_fields_the_validators_check() -> None:
    assert required_references(cluster_queue("cq", "default", "spot")) == {
        "spec.resourceGroups[0].flavors[0].name": ("ResourceFlavor", "default"),
        "spec.resourceGroups[0].flavors[1].name": ("ResourceFlavor", "spot")}
    labels = {"kueue.x-k8s.io/queue-name": "lq", "kueue.x-k8s.io/priority-class": "urgent"}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "labels": labels}}
    assert required_references(job) == {
        "metadata.labels[kueue.x-k8s.io/priority-class]": ("WorkloadPriorityClass", "urgent")}
    unqueued = {**job, "metadata": {"name": "j", "labels": {"kueue.x-k8s.io/priority-class": "urgent"}}}
    assert required_references(unqueued) == {}


async def test_the_kubernetes_webhook_denies_it_with_the_same_cause(store: Store) -> None:
    # The webhook's hooks are the ones install_admission_hooks registers, reading flavors from its store.
    await store.create(flavor("on-demand"))
    webhook = AdmissionWebhook(capstan_admission_hooks(store))

    def review(operation: str, obj: Obj, old: Obj | None = None) -> dict[str, Any]:
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1", "kind": {"group": "kueue.x-k8s.io", "version": "v1beta1", "kind": "ClusterQueue"},
            "operation": operation, "object": obj, "oldObject": old}}

    answer = await webhook.review(review("CREATE", cluster_queue("cq", "on-demand", "spot")), mutating=False)
    assert answer["response"]["allowed"] is False
    status = answer["response"]["status"]
    assert (status["code"], status["message"]) == (422, 'ClusterQueue "cq" is invalid: '
                                                   'spec.resourceGroups[0].flavors[1].name: Not found: "spot": '
                                                   'no ResourceFlavor named "spot"')
    assert status["details"]["causes"] == [{"field": "spec.resourceGroups[0].flavors[1].name",
                                            "reason": "FieldValueNotFound",
                                            "message": 'Not found: "spot": no ResourceFlavor named "spot"'}]
    unchanged = cluster_queue("cq", "spot")
    answer = await webhook.review(review("UPDATE", unchanged, unchanged), mutating=False)
    assert answer["response"]["allowed"] is True
