"""cpu and memory triggers on a real control plane without metrics-server (as the test cluster is): the
operator's controllers (the autoscaling entry of OPERATOR_CONTROLLERS, so the real wiring of KubePodMetrics)
run in this process on a KubeStore, and the ScaledObject must say why it cannot scale — Ready=False with the
metrics API's absence in plain words — while the operator keeps running."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from capstan.api.registry import default_registry
from capstan.controllers.operator import OPERATOR_CONTROLLERS, OperatorOptions, run_controllers
from capstan.server.operator import crd_types, install_crds_racing
from capstan.store.kube import KubeStore
from tests.k8s.cluster import KubeCluster

NO_METRICS_API = "the metrics.k8s.io API is not available on this cluster; install metrics-server"


@pytest.fixture
async def store(kube_cluster: KubeCluster) -> AsyncIterator[KubeStore]:
    kube = await KubeStore.connect(default_registry(), kubeconfig=kube_cluster.kubeconfig)
    yield kube
    await kube.close()


@pytest.fixture
async def namespace(store: KubeStore) -> AsyncIterator[str]:
    name = f"pm-{uuid.uuid4().hex[:8]}"
    namespaces = store.registry.lookup("namespaces")
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    await store.delete(namespaces, name)


@pytest.fixture
async def autoscaling(store: KubeStore, namespace: str) -> AsyncIterator[asyncio.Task[None]]:
    """The operator's autoscaling controllers, running until the test ends."""
    await install_crds_racing(store, crd_types())
    stop = asyncio.Event()
    specs = [spec for spec in OPERATOR_CONTROLLERS if spec.name == "autoscaling"]
    task = asyncio.create_task(run_controllers(store, OperatorOptions(namespace=namespace), stop, specs))
    yield task
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=30)


def deployment(name: str) -> dict[str, Any]:
    container = {"name": "worker", "image": "worker:none",
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}}


def scaled_object(name: str, trigger: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": 2, "minReplicaCount": 1,
                     "maxReplicaCount": 5, "triggers": [trigger]}}


async def ready_condition(store: KubeStore, namespace: str, name: str) -> dict[str, Any]:
    """The ScaledObject's Ready condition once it is False (a deadline for a loaded machine)."""
    rt = store.registry.lookup("scaledobjects")
    timeout = 90.0
    obj: dict[str, Any] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        obj = await store.get(rt, name, namespace)
        conditions = (obj.get("status") or {}).get("conditions") or []
        condition: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
        if condition.get("status") == "False":
            return condition
        await asyncio.sleep(0.2)
    raise AssertionError(f"ScaledObject {name} not Ready=False within {timeout:g}s: {obj.get('status')}")


async def test_cpu_and_memory_without_metrics_server_are_not_ready_with_the_reason(
        store: KubeStore, namespace: str, autoscaling: asyncio.Task[None]) -> None:
    triggers = {
        "cpu": {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}},
        "memory": {"type": "memory", "metricType": "AverageValue", "metadata": {"value": "64Mi"}},
    }
    for kind, trigger in triggers.items():
        await store.create({**deployment(kind), "metadata": {"name": kind, "namespace": namespace}})
        await store.create({**scaled_object(kind, trigger), "metadata": {"name": kind, "namespace": namespace}})
    for kind in triggers:
        condition = await ready_condition(store, namespace, kind)
        assert (condition["reason"], condition["message"]) == (
            "TriggerError", f"triggers failed: s0-{kind}: {kind} trigger (triggers[0]): {NO_METRICS_API}")
    rt = store.registry.lookup("scaledobjects")
    cpu = await store.get(rt, "cpu", namespace)
    assert cpu["status"]["health"]["s0-cpu"]["status"] == "Failing"
    assert cpu["status"]["capstanLastDecision"]["triggers"][0]["error"] == \
        f"cpu trigger (triggers[0]): {NO_METRICS_API}"
    # The replicas are left alone and the operator keeps running.
    deployments = store.registry.lookup("deployments")
    assert (await store.get(deployments, "cpu", namespace))["spec"]["replicas"] == 1
    assert not autoscaling.done()
