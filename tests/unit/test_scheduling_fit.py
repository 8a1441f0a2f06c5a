"""Pure scheduling: requests, fit, messages, burst placement (examples and properties)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from capstan.core.scheduling import (
    check_fit,
    node_allocatable,
    plan_bindings,
    pod_requests,
    requested_on_node,
    scheduling_order,
    unschedulable_message,
)


def pod(name: str, *, cpu: str | None = None, memory: str | None = None, init: list[dict[str, Any]] | None = None,
        priority: int | None = None, created: str = "2024-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    containers = [{"name": "main", "command": ["sleep"], "resources": {"requests": requests}}]
    body: dict[str, Any] = {"containers": containers, **spec}
    if init is not None:
        body["initContainers"] = init
    if priority is not None:
        body["priority"] = priority
    return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": created}, "spec": body}


def node(cpu: str = "2", memory: str = "4Gi", pods: int = 110, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "local", "labels": {"kubernetes.io/hostname": "local", "disk": "ssd"}},
            "spec": spec, "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": str(pods)}}}


def test_requests_sum_containers_take_max_with_init_and_count_one_pod() -> None:
    spec = pod("p", cpu="500m", memory="1Gi", init=[
        {"name": "setup", "resources": {"requests": {"cpu": "2"}}},
        {"name": "migrate", "resources": {"limits": {"memory": "512Mi"}}},
    ])
    spec["spec"]["containers"].append({"name": "side", "resources": {"requests": {"cpu": "250m"}}})
    assert pod_requests(spec) == {"cpu": 2000, "memory": 2**30, "pods": 1}


def test_limits_stand_in_for_missing_requests() -> None:
    spec = pod("p")
    spec["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1", "nvidia.com/gpu": "2"}}
    assert pod_requests(spec) == {"cpu": 1000, "nvidia.com/gpu": 2, "pods": 1}


def test_terminal_and_foreign_pods_do_not_use_the_node() -> None:
    bound = [pod("a", cpu="1", nodeName="local"), pod("b", cpu="1", nodeName="other"),
             {**pod("c", cpu="1", nodeName="local"), "status": {"phase": "Succeeded"}}]
    assert requested_on_node(bound, "local") == {"cpu": 1000, "pods": 1}


def test_insufficient_cpu_message_names_amounts() -> None:
    result = check_fit(pod("big", cpu="4"), node(), {"cpu": 500, "pods": 1})
    assert not result.fits
    assert unschedulable_message([result]) == (
        "0/1 nodes are available: 1 Insufficient cpu (requested 4, free 1500m of 2 allocatable).")


def test_several_shortages_and_too_many_pods() -> None:
    result = check_fit(pod("big", cpu="3", memory="8Gi"), node(pods=2), {"pods": 2})
    assert unschedulable_message([result]) == (
        "0/1 nodes are available: 1 Insufficient cpu (requested 3, free 2 of 2 allocatable), "
        "1 Insufficient memory (requested 8Gi, free 4Gi of 4Gi allocatable), "
        "1 Too many pods (requested 1, free 0 of 2 allocatable).")


def test_extended_resource_absent_from_node() -> None:
    spec = pod("gpu")
    spec["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    assert check_fit(spec, node(), {}).reasons == (
        "Insufficient nvidia.com/gpu (requested 1, free 0 of 0 allocatable)",)


def test_node_selector_taints_and_cordon() -> None:
    assert check_fit(pod("p", nodeSelector={"disk": "ssd"}), node(), {}).fits
    assert check_fit(pod("p", nodeSelector={"disk": "hdd"}), node(), {}).reasons == (
        "node(s) didn't match Pod's node affinity/selector",)

    tainted = node(taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                           {"key": "soft", "effect": "PreferNoSchedule"}])
    assert check_fit(pod("p"), tainted, {}).reasons == ("node(s) had untolerated taint {dedicated: gpu}",)
    tolerant = pod("p", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu"}])
    assert check_fit(tolerant, tainted, {}).fits
    assert check_fit(pod("p", tolerations=[{"operator": "Exists"}]), tainted, {}).fits
    wrong_effect = pod("p", tolerations=[{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}])
    assert not check_fit(wrong_effect, tainted, {}).fits

    cordoned = node(unschedulable=True)
    assert unschedulable_message([check_fit(pod("p"), cordoned, {})]) == (
        "0/1 nodes are available: 1 node(s) were unschedulable.")
    assert check_fit(pod("p", tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]),
                     cordoned, {}).fits


def test_order_is_priority_then_age() -> None:
    pods = [pod("young", created="2024-01-02T00:00:00Z"), pod("old", created="2024-01-01T00:00:00Z"),
            pod("urgent", priority=100, created="2024-01-03T00:00:00Z")]
    assert [p["metadata"]["name"] for p in scheduling_order(pods)] == ["urgent", "old", "young"]


def test_a_burst_of_twenty_on_room_for_ten_binds_exactly_ten() -> None:
    pending = [pod(f"p{i:02d}", cpu="200m") for i in range(20)]
    placements = plan_bindings(pending, node(cpu="2"), {})
    bound = [p.pod["metadata"]["name"] for p in placements if p.result.fits]
    assert bound == [f"p{i:02d}" for i in range(10)]


def test_a_big_pod_does_not_block_smaller_ones() -> None:
    placements = plan_bindings([pod("a-big", cpu="3", created="2024-01-01T00:00:00Z"),
                                pod("b-small", cpu="1", created="2024-01-02T00:00:00Z")], node(cpu="2"), {})
    assert [(p.pod["metadata"]["name"], p.result.fits) for p in placements] == [("a-big", False), ("b-small", True)]


cpu_amounts = st.integers(min_value=0, max_value=4000).map(lambda m: f"{m}m")
memory_amounts = st.integers(min_value=0, max_value=8 * 1024).map(lambda m: f"{m}Mi")


@settings(max_examples=200, deadline=None)
@given(requests=st.lists(st.tuples(cpu_amounts, memory_amounts), max_size=30),
       allocatable_cpu=st.integers(min_value=0, max_value=16000),
       allocatable_memory=st.integers(min_value=0, max_value=32 * 1024),
       max_pods=st.integers(min_value=0, max_value=40))
def test_never_admits_more_than_allocatable(requests: list[tuple[str, str]], allocatable_cpu: int,
                                            allocatable_memory: int, max_pods: int) -> None:
    target = node(cpu=f"{allocatable_cpu}m", memory=f"{allocatable_memory}Mi", pods=max_pods)
    pending = [pod(f"p{i:03d}", cpu=c, memory=m) for i, (c, m) in enumerate(requests)]
    placements = plan_bindings(pending, target, {})
    admitted = [p.pod for p in placements if p.result.fits]
    total_cpu = sum(pod_requests(p).get("cpu", 0) for p in admitted)
    total_memory = sum(pod_requests(p).get("memory", 0) for p in admitted)
    limits = node_allocatable(target)
    assert total_cpu <= limits["cpu"]
    assert total_memory <= limits["memory"]
    assert len(admitted) <= max_pods
    # Greedy and maximal: every rejected pod really did not fit what was left at its turn.
    for placement in placements:
        if not placement.result.fits:
            assert placement.result.shortages


@settings(max_examples=200, deadline=None)
@given(cpu=st.integers(min_value=1, max_value=8000), used=st.integers(min_value=0, max_value=8000))
def test_fit_agrees_with_arithmetic(cpu: int, used: int) -> None:
    result = check_fit(pod("p", cpu=f"{cpu}m"), node(cpu="4"), {"cpu": used})
    assert result.fits == (cpu <= 4000 - used)
    if not result.fits:
        [shortage] = result.shortages
        assert (shortage.requested, shortage.free, shortage.allocatable) == (cpu, 4000 - used, 4000)
