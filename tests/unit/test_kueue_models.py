"""Kueue API models: both served versions, defaults, and validation with field paths."""

from __future__ import annotations

from typing import Any

import pytest

from capstan.api.errors import InvalidError
from capstan.api.kueue import KUEUE_TYPES, ClusterQueue, Workload, unknown_flavor_causes
from capstan.api.registry import BUILTIN_TYPES, Registry

registry = Registry((*BUILTIN_TYPES, *KUEUE_TYPES))


def cluster_queue(spec: dict[str, Any], version: str = "v1beta1") -> dict[str, Any]:
    return {"apiVersion": f"kueue.x-k8s.io/{version}", "kind": "ClusterQueue", "metadata": {"name": "team"},
            "spec": spec}


def group(*flavors: dict[str, Any], covered: tuple[str, ...] = ("cpu",)) -> dict[str, Any]:
    return {"coveredResources": list(covered), "flavors": list(flavors)}


def flavor(name: str, **quota: Any) -> dict[str, Any]:
    return {"name": name, "resources": [{"name": "cpu", "nominalQuota": 10, **quota}]}


def invalid(obj: dict[str, Any]) -> str:
    with pytest.raises(InvalidError) as caught:
        registry.for_object(obj).normalize(obj)
    return caught.value.message


def test_short_names_and_both_versions_resolve() -> None:
    assert [registry.lookup(n).kind for n in ("cq", "lq", "queue", "queues", "wl", "rf", "flavor", "flavors")] == [
        "ClusterQueue", "LocalQueue", "LocalQueue", "LocalQueue", "Workload", "ResourceFlavor", "ResourceFlavor",
        "ResourceFlavor"]
    for version in ("v1beta1", "v1beta2"):
        obj = cluster_queue({"resourceGroups": [group(flavor("default"))]}, version)
        assert registry.for_object(obj).kind == "ClusterQueue"


def test_cluster_queue_defaults_match_kueue() -> None:
    wire = registry.lookup("cq").normalize(cluster_queue({}))
    assert wire["spec"]["queueingStrategy"] == "BestEffortFIFO"
    assert wire["spec"]["stopPolicy"] == "None"
    assert wire["spec"]["preemption"] == {"withinClusterQueue": "Never", "reclaimWithinCohort": "Never"}
    assert wire["spec"]["flavorFungibility"] == {"whenCanBorrow": "MayStopSearch", "whenCanPreempt": "TryNextFlavor"}


def test_cohort_field_renamed_in_v1beta2_is_read_from_either_spelling() -> None:
    old = ClusterQueue.model_validate(cluster_queue({"cohort": "org"}))
    new = ClusterQueue.model_validate(cluster_queue({"cohortName": "org"}, "v1beta2"))
    assert old.spec.effective_cohort == new.spec.effective_cohort == "org"


def test_borrowing_limit_without_a_cohort_is_rejected_with_its_path() -> None:
    message = invalid(cluster_queue({"resourceGroups": [group(flavor("default", borrowingLimit=5))]}))
    assert message == ('ClusterQueue "team" is invalid: spec.resourceGroups[0].flavors[0].resources[0].borrowingLimit: '
                       "must be nil when cohort is empty")


def test_lending_limit_above_nominal_and_duplicate_flavors() -> None:
    spec = {"cohort": "org", "resourceGroups": [group(flavor("a", lendingLimit=11), flavor("a"))]}
    message = invalid(cluster_queue(spec))
    assert "spec.resourceGroups[0].flavors[0].resources[0].lendingLimit: must be less than or equal to the " \
           "nominalQuota" in message
    assert 'spec.resourceGroups[0].flavors[1].name: Duplicate value: "a"' in message


def test_resource_not_in_covered_resources() -> None:
    bad = {"name": "default", "resources": [{"name": "memory", "nominalQuota": "1Gi"}]}
    message = invalid(cluster_queue({"resourceGroups": [group(bad)]}))
    assert message == ('ClusterQueue "team" is invalid: spec.resourceGroups[0].flavors[0].resources[0].name: '
                       "must match the name in coveredResources")
    missing = invalid(cluster_queue({"resourceGroups": [group({"name": "f", "resources": []})]}))
    assert "flavors must have the same number of resources as the coveredResources" in missing


def test_preemption_and_fungibility_combinations() -> None:
    borrow = {"borrowWithinCohort": {"policy": "LowerPriority"}}
    message = invalid(cluster_queue({"cohort": "org", "preemption": borrow}))
    assert message.endswith("spec.preemption: Invalid value: reclaimWithinCohort=Never and "
                            "borrowWithinCohort.Policy!=Never")
    message = invalid(cluster_queue({"flavorFungibility": {"preference": "PreemptionOverBorrowing"}}))
    assert "spec.flavorFungibility.preference" in message
    assert "spec.queueingStrategy" in invalid(cluster_queue({"queueingStrategy": "LIFO"}))


def test_cohort_limits_need_a_parent() -> None:
    obj = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Cohort", "metadata": {"name": "org"},
           "spec": {"resourceGroups": [group(flavor("default", lendingLimit=3))]}}
    assert invalid(obj) == ('Cohort "org" is invalid: spec.resourceGroups[0].flavors[0].resources[0].lendingLimit: '
                            "must be nil when parent is empty")
    obj["spec"]["parentName"] = "root"
    assert registry.for_object(obj).normalize(obj)["spec"]["parentName"] == "root"


def test_unknown_flavors_are_a_cross_object_check() -> None:
    cq = ClusterQueue.model_validate(cluster_queue({"resourceGroups": [group(flavor("default"), flavor("spot"))]}))
    causes = unknown_flavor_causes(cq.spec, ["default"])
    assert [(c.field, c.message) for c in causes] == [
        ("spec.resourceGroups[0].flavors[1].name", 'ResourceFlavor "spot" not found')]


def test_workload_both_priority_class_spellings_and_status() -> None:
    template = {"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}
    old = Workload.model_validate({
        "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload", "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"podSets": [{"name": "main", "count": 2, "template": template}], "queueName": "lq",
                 "priorityClassName": "high", "priorityClassSource": "kueue.x-k8s.io/workloadpriorityclass"},
        "status": {"admission": {"clusterQueue": "cq", "podSetAssignments": [
            {"name": "main", "flavors": {"cpu": "default"}, "resourceUsage": {"cpu": "2"}, "count": 2}]},
            "conditions": [{"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved"}]}})
    new = Workload.model_validate({
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload", "metadata": {"name": "w", "namespace": "ns"},
        "spec": {"podSets": [{"name": "main", "count": 2, "template": template}],
                 "priorityClassRef": {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass", "name": "high"}}})
    assert old.spec.effective_priority_class == new.spec.effective_priority_class == (
        "kueue.x-k8s.io/workloadpriorityclass", "high")
    assert old.status is not None and old.status.condition("QuotaReserved") is not None
    bad = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload", "metadata": {"name": "w"},
           "spec": {"podSets": [{"name": "main", "count": 1, "minCount": 2, "template": template}]}}
    assert invalid(bad) == 'Workload "w" is invalid: spec.podSets[0].minCount: should be less than or equal to count'


def test_local_queue_and_priority_class() -> None:
    lq = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue", "metadata": {"name": "q", "namespace": "ns"},
          "spec": {"clusterQueue": "team", "stopPolicy": "Hold"}}
    assert registry.for_object(lq).normalize(lq)["spec"] == {"clusterQueue": "team", "stopPolicy": "Hold"}
    wpc = {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "WorkloadPriorityClass", "metadata": {"name": "high"},
           "value": 1000, "description": "urgent"}
    assert registry.for_object(wpc).normalize(wpc)["value"] == 1000
