"""Smoke test: the real control plane stores objects, runs its controllers and scheduler, and kwok plays
the kubelet for fake nodes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.k8s.cluster import KubeCluster, wait_until

pytestmark = [pytest.mark.k8s]

Obj = dict[str, Any]
FAKE_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}


@pytest.fixture
def api(kube_cluster: KubeCluster) -> Iterator[httpx.Client]:
    with kube_cluster.client() as client:
        yield client


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:6]


def create(api: httpx.Client, path: str, body: Obj) -> Obj:
    response = api.post(path, json=body)
    assert response.status_code == 201, response.text
    result: Obj = response.json()
    return result


def get(api: httpx.Client, path: str) -> Obj:
    response = api.get(path)
    assert response.status_code == 200, response.text
    result: Obj = response.json()
    return result


def fake_node(name: str) -> Obj:
    """A Node that kwok (run with --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake) adopts."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {"taints": [FAKE_NODE_TAINT]},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def node_is_ready(node: Obj) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def deployment(name: str, replicas: int) -> Obj:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.invalid/never-pulled:1"}],
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                },
            },
        },
    }


def test_api_server_reports_the_built_version(api: httpx.Client) -> None:
    assert get(api, "/version")["gitVersion"] == "v1.36.3"


def test_namespace_and_configmap_round_trip(api: httpx.Client, suffix: str) -> None:
    ns = f"smoke-cm-{suffix}"
    create(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        created = create(
            api,
            f"/api/v1/namespaces/{ns}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": "k8s"}},
        )
        fetched = get(api, f"/api/v1/namespaces/{ns}/configmaps/settings")
        assert fetched["data"] == {"mode": "k8s"}
        assert fetched["metadata"]["uid"] == created["metadata"]["uid"]

        duplicate = api.post(
            f"/api/v1/namespaces/{ns}/configmaps",
            json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
        )
        assert duplicate.status_code == 409
        assert duplicate.json()["reason"] == "AlreadyExists"
    finally:
        api.delete(f"/api/v1/namespaces/{ns}")


def test_deployment_pods_are_created_scheduled_and_run_on_kwok_nodes(
    kube_cluster: KubeCluster, api: httpx.Client, suffix: str
) -> None:
    if not kube_cluster.has_kwok:
        pytest.skip("kwok was not built (see hack/kube-build output); nothing would mark Pods Running")
    ns = f"smoke-deploy-{suffix}"
    node_names = [f"kwok-{suffix}-{i}" for i in range(3)]
    create(api, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        for name in node_names:
            create(api, "/api/v1/nodes", fake_node(name))
        wait_until(
            lambda: [get(api, f"/api/v1/nodes/{n}") for n in node_names],
            lambda nodes: all(node_is_ready(node) for node in nodes),
            "kwok to mark the 3 fake nodes Ready",
        )

        create(api, f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", replicas=2))

        def pods() -> list[Obj]:
            items: list[Obj] = get(api, f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dweb")["items"]
            return items

        created = wait_until(pods, lambda p: len(p) == 2, "kube-controller-manager to create 2 Pods")
        assert all(pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for pod in created)

        bound = wait_until(
            pods, lambda p: all(pod["spec"].get("nodeName") for pod in p), "kube-scheduler to bind both Pods"
        )
        assert len(bound) == 2
        assert {pod["spec"]["nodeName"] for pod in bound} <= set(node_names)

        running = wait_until(
            pods, lambda p: all(pod["status"].get("phase") == "Running" for pod in p), "kwok to run both Pods"
        )
        assert len(running) == 2
        assert all(pod["status"].get("podIP") for pod in running)

        available = wait_until(
            lambda: get(api, f"/apis/apps/v1/namespaces/{ns}/deployments/web"),
            lambda d: d["status"].get("availableReplicas") == 2,
            "the Deployment to report 2 available replicas",
        )
        assert available["status"]["replicas"] == 2
    finally:
        api.delete(f"/api/v1/namespaces/{ns}")
        for name in node_names:
            api.delete(f"/api/v1/nodes/{name}")
