"""Deployment decisions: scaling, replacement, rolling update budgets, Recreate, status."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capstan.core.workloads.deployment import (
    TEMPLATE_HASH_LABEL,
    plan_deployment,
    pod_for,
    resolve_fenceposts,
    template_hash,
)
from capstan.core.workloads.pods import deletion_order, format_time

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
_ids = itertools.count()


def deployment(replicas: int = 3, image: str = "v1", *, strategy: dict[str, Any] | None = None,
               paused: bool = False, min_ready: int = 0, generation: int = 1,
               status: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "main", "image": image}]}},
        "minReadySeconds": min_ready,
    }
    if strategy is not None:
        spec["strategy"] = strategy
    if paused:
        spec["paused"] = True
    obj: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "web", "namespace": "default", "uid": "dep-uid",
                                        "generation": generation}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def pod(hash_value: str, *, phase: str = "Running", ready: bool = True, ready_for: float = 3600,
        node: str | None = "local", deleting: bool = False, age: float = 3600, name: str | None = None,
        restarts: int = 0) -> dict[str, Any]:
    number = next(_ids)
    conditions = [{"type": "Ready", "status": "True" if ready else "False",
                   "lastTransitionTime": format_time(NOW - timedelta(seconds=ready_for))}]
    meta: dict[str, Any] = {"name": name or f"web-{hash_value}-{number}", "uid": f"uid-{number}",
                            "namespace": "default", "labels": {"app": "web", TEMPLATE_HASH_LABEL: hash_value},
                            "creationTimestamp": format_time(NOW - timedelta(seconds=age))}
    if deleting:
        meta["deletionTimestamp"] = format_time(NOW)
    spec: dict[str, Any] = {"containers": [{"name": "main"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [{"name": "main", "restartCount": restarts}]}}


def current_hash(dep: dict[str, Any]) -> str:
    return template_hash(dep["spec"]["template"])


def test_template_hash_is_stable_label_safe_and_changes_with_the_template() -> None:
    a, b = deployment(image="v1"), deployment(image="v2")
    assert current_hash(a) == current_hash(deployment(image="v1"))
    assert current_hash(a) != current_hash(b)
    assert len(current_hash(a)) == 10 and current_hash(a).isalnum()


def test_pod_for_carries_labels_owner_and_generate_name() -> None:
    dep = deployment()
    dep["metadata"]["uid"] = "u1"
    made = pod_for(dep, "abc")
    assert made["metadata"]["generateName"] == "web-abc-"
    assert made["metadata"]["labels"] == {"app": "web", TEMPLATE_HASH_LABEL: "abc"}
    assert made["metadata"]["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                                    "uid": "u1", "controller": True, "blockOwnerDeletion": True}]
    assert made["spec"] == dep["spec"]["template"]["spec"]


@pytest.mark.parametrize(("surge", "unavailable", "replicas", "expected"), [
    (None, None, 10, (3, 2)),          # Kubernetes' defaults: 25 % up, 25 % down
    ("25%", "25%", 1, (1, 0)),
    ("0%", "0%", 4, (0, 1)),          # both zero would never progress
    (2, "50%", 3, (2, 1)),
    ("10%", 5, 3, (1, 3)),            # unavailable capped at replicas
])
def test_resolve_fenceposts(surge: Any, unavailable: Any, replicas: int, expected: tuple[int, int]) -> None:
    assert resolve_fenceposts(surge, unavailable, replicas) == expected


def test_scale_up_from_nothing_and_status() -> None:
    dep = deployment(replicas=3)
    plan = plan_deployment(dep, [], NOW)
    assert plan.create == 3 and plan.delete == ()
    assert [(e.reason, e.message) for e in plan.events] == [("ScalingReplicaSet", "Scaled up to 3 pods")]
    assert plan.status["replicas"] == 3 and plan.status["updatedReplicas"] == 3
    assert plan.status["availableReplicas"] == 0 and plan.status["unavailableReplicas"] == 3
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["Available"]["reason"] == "MinimumReplicasUnavailable"
    assert conditions["Progressing"]["reason"] == "PodsUpdated"


def test_scale_down_prefers_unscheduled_then_pending_then_unready_then_newest() -> None:
    dep = deployment(replicas=1)
    h = current_hash(dep)
    oldest_ready = pod(h, age=5000, name="oldest")
    newest_ready = pod(h, age=10, name="newest")
    unready = pod(h, ready=False, name="unready")
    pending = pod(h, phase="Pending", ready=False, name="pending")
    unscheduled = pod(h, phase="Pending", ready=False, node=None, name="unscheduled")
    pods = [oldest_ready, newest_ready, unready, pending, unscheduled]
    assert [p["metadata"]["name"] for p in deletion_order(pods)] == \
        ["unscheduled", "pending", "unready", "newest", "oldest"]
    plan = plan_deployment(dep, pods, NOW)
    assert [r.name for r in plan.delete] == ["unscheduled", "pending", "unready", "newest"]
    assert plan.events[-1].message == "Scaled down to 1 pod"


def test_finished_pods_are_deleted_and_replaced_terminating_do_not_count() -> None:
    dep = deployment(replicas=3)
    h = current_hash(dep)
    failed = pod(h, phase="Failed", ready=False, name="failed")
    leaving = pod(h, deleting=True, name="leaving")
    pods = [pod(h), pod(h), failed, leaving]
    plan = plan_deployment(dep, pods, NOW)
    assert [r.name for r in plan.delete] == ["failed"]
    assert plan.create == 1
    assert plan.status["availableReplicas"] == 2 and plan.status["replicas"] == 3


def test_min_ready_seconds_delays_availability_and_asks_to_look_again() -> None:
    dep = deployment(replicas=1, min_ready=30)
    plan = plan_deployment(dep, [pod(current_hash(dep), ready_for=10)], NOW)
    assert plan.status["readyReplicas"] == 1 and plan.status["availableReplicas"] == 0
    assert plan.requeue_after == pytest.approx(20)


def test_complete_rollout_reports_new_pods_available() -> None:
    dep = deployment(replicas=2)
    h = current_hash(dep)
    plan = plan_deployment(dep, [pod(h), pod(h)], NOW)
    assert plan.create == 0 and plan.delete == () and plan.events == ()
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert (conditions["Progressing"]["status"], conditions["Progressing"]["reason"]) == ("True", "NewPodsAvailable")
    assert plan.status["observedGeneration"] == 1


def test_rolling_update_first_step_respects_budgets() -> None:
    dep = deployment(replicas=4, image="v2",
                     strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}})
    old = [pod("old") for _ in range(4)]
    plan = plan_deployment(dep, old, NOW)
    assert plan.create == 1          # 4 + 1 surge
    assert len(plan.delete) == 1     # 4 - 1 unavailable
    assert {e.message for e in plan.events} == {"Scaled up new pods to 1 pod", "Scaled down old pods to 3 pods"}


def test_rolling_update_deletes_unavailable_old_pods_first() -> None:
    dep = deployment(replicas=3, image="v2",
                     strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
    broken = pod("old", ready=False, name="broken")
    plan = plan_deployment(dep, [pod("old"), pod("old"), broken], NOW)
    assert [r.name for r in plan.delete] == ["broken"]
    assert plan.create == 0  # no surge: the new pod comes once the old one is gone


def test_recreate_deletes_all_old_then_creates() -> None:
    dep = deployment(replicas=2, image="v2", strategy={"type": "Recreate"})
    plan = plan_deployment(dep, [pod("old"), pod("old")], NOW)
    assert len(plan.delete) == 2 and plan.create == 0
    terminating = [pod("old", deleting=True)]
    assert plan_deployment(dep, terminating, NOW).create == 2


def test_paused_deployment_scales_but_does_not_roll() -> None:
    dep = deployment(replicas=3, image="v2", paused=True)
    plan = plan_deployment(dep, [pod("old"), pod("old")], NOW)
    assert plan.create == 1 and plan.delete == ()
    progressing = {c["type"]: c for c in plan.status["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused")


def test_progress_deadline_exceeded_without_progress() -> None:
    dep = deployment(replicas=2)
    h = current_hash(dep)
    pods = [pod(h), pod(h, ready=False)]
    first = plan_deployment(dep, pods, NOW)
    later = deployment(replicas=2, status=dict(first.status))
    later["spec"]["progressDeadlineSeconds"] = 60
    still = plan_deployment(later, pods, NOW + timedelta(seconds=30))
    assert still.status == first.status and still.requeue_after == pytest.approx(30)
    timed_out = plan_deployment(later, pods, NOW + timedelta(seconds=61))
    progressing = {c["type"]: c for c in timed_out.status["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")


def test_repeating_a_plan_on_its_own_status_changes_nothing() -> None:
    dep = deployment(replicas=2)
    h = current_hash(dep)
    pods = [pod(h), pod(h)]
    first = plan_deployment(dep, pods, NOW)
    again = plan_deployment(deployment(replicas=2, status=dict(first.status)), pods, NOW + timedelta(seconds=5))
    assert again.status == first.status


# ---- property: a rolling update stays within its budgets and finishes ------------------------

@settings(max_examples=150, deadline=None)
@given(replicas=st.integers(0, 8), surge=st.one_of(st.integers(0, 4), st.sampled_from(["0%", "25%", "50%", "100%"])),
       unavailable=st.one_of(st.integers(0, 4), st.sampled_from(["0%", "25%", "50%"])),
       readiness=st.lists(st.lists(st.booleans(), min_size=12, max_size=12), min_size=40, max_size=40))
def test_rolling_update_never_exceeds_surge_nor_drops_below_availability(
        replicas: int, surge: int | str, unavailable: int | str, readiness: list[list[bool]]) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
    if str(surge).rstrip("%") == "0" and str(unavailable).rstrip("%") == "0":
        strategy["rollingUpdate"]["maxUnavailable"] = 1  # both zero is rejected by validation
    dep = deployment(replicas=replicas, image="v2", strategy=strategy)
    max_surge, max_unavailable = resolve_fenceposts(strategy["rollingUpdate"]["maxSurge"],
                                                    strategy["rollingUpdate"]["maxUnavailable"], replicas)
    pods = [pod("old") for _ in range(replicas)]
    h = current_hash(dep)
    for step, flips in enumerate(readiness):
        plan = plan_deployment(dep, pods, NOW)
        gone = {r.uid for r in plan.delete}
        pods = [p for p in pods if p["metadata"]["uid"] not in gone]
        pods += [pod(h, ready=False) for _ in range(plan.create)]
        assert len(pods) <= replicas + max_surge
        assert sum(1 for p in pods if p["status"]["conditions"][0]["status"] == "True") >= replicas - max_unavailable
        # The kubelet makes some of the new pods ready (all of them every fourth step).
        for p, flip in zip(pods, flips + [True] * len(pods), strict=False):
            if flip or step % 4 == 3:
                p["status"]["conditions"][0]["status"] = "True"
    assert len(pods) == replicas
    assert all(p["metadata"]["labels"][TEMPLATE_HASH_LABEL] == h for p in pods)
