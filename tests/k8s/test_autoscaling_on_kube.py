"""Autoscaling on a real control plane: ``capstan operator`` (a subprocess, admin kubeconfig, CRDs installed
by ``--install-crds``) scales a Deployment 0 -> N -> 0 from a real Redis list (tests.services).

Everything but the ScaledObject controller is Kubernetes': kube-controller-manager turns the Deployment's
replicas into a ReplicaSet and Pods, kube-scheduler binds them to one of 50 kwok nodes, and kwok moves them
to Running (and deletes them when they are scaled away). kwok Pods run no processes, so the test plays the
workers: while Pods are Running it pops one message per Running Pod per tick. The replica trajectory is
read from a watch on the API server, and the ScaledObject's Events must explain every change.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.k8s.cluster import REPO_ROOT, KubeCluster, wait_until

NODES = 50
NODE_LABEL = "capstan-autoscaling-test"
MESSAGES, LIST_LENGTH, MAX_REPLICAS = 10, 2, 10
PEAK = min(math.ceil(MESSAGES / LIST_LENGTH), MAX_REPLICAS)  # the HPA's count for the full list: 5
# Without ``behavior`` the HPA's legacy scale-up limit applies: at most max(2 * current, 4) per step, so the
# way up from the activation's 1 Pod is 1 -> 4 -> 5.
WAY_UP = [1, 4, PEAK]
POLLING, COOLDOWN = 2, 5
TICK = 0.3


def kwok_node(name: str) -> dict[str, Any]:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {NODE_LABEL: "kwok", "type": "kwok", "kubernetes.io/hostname": name,
                                    "kubernetes.io/os": "linux"}},
            "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]},
            "status": {"capacity": capacity, "allocatable": capacity}}


@pytest.fixture(scope="module")
def kwok_nodes(kube_cluster: KubeCluster) -> Iterator[set[str]]:
    if not kube_cluster.has_kwok:
        pytest.skip("kwok was not built: no Pod can become Running")
    names = {f"capstan-as-kwok-{i}" for i in range(NODES)}
    with kube_cluster.client() as api:
        for name in sorted(names):
            response = api.post("/api/v1/nodes", json=kwok_node(name))
            assert response.status_code in (201, 409), response.text
        wait_until(lambda: api.get("/api/v1/nodes", params={"labelSelector": f"{NODE_LABEL}=kwok"}).json(),
                   lambda nodes: sum(1 for node in nodes["items"] if _ready(node)) == NODES,
                   f"{NODES} kwok nodes to be Ready", timeout=120)
    yield names
    with kube_cluster.client() as api:
        for name in sorted(names):
            api.delete(f"/api/v1/nodes/{name}")


def _ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"as-{uuid.uuid4().hex[:8]}"
    with kube_cluster.client() as api:
        api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": name}}).raise_for_status()
    yield name
    with kube_cluster.client() as api:
        api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def operator(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """``capstan operator`` with the admin kubeconfig; its Lease in the test's namespace. Yields its log."""
    output = tmp_path / "operator.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "capstan.cli.main", "operator", "--kubeconfig", str(kube_cluster.kubeconfig),
             "--namespace", namespace, "--identity", "as-operator", "--install-crds",
             "--metrics-port", "0", "--metrics-host", "127.0.0.1"],
            cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        found = wait_until(lambda: re.search(r"metrics on (http://\S+)", output.read_text()),
                           lambda match: match is not None or process.poll() is not None,
                           "the operator to start", timeout=90, interval=0.1)
        assert found is not None, output.read_text()
        wait_until(lambda: httpx.get(f"{found.group(1)}/leader", timeout=10).text,
                   lambda text: text.startswith("leader as-operator "), "the operator to lead", timeout=60,
                   interval=0.2)
        yield output
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(timeout=10)
    assert code == 0, output.read_text()


@pytest.fixture
def redis_client() -> Iterator[tuple[Any, Any]]:
    redis = pytest.importorskip("redis")
    from tests.services import service

    info = service("redis")
    client = redis.Redis.from_url(info.url)
    yield info, client
    client.close()


class Trajectory:
    """The successive ``spec.replicas`` of a Deployment, from a watch on the API server (in a thread)."""

    def __init__(self, cluster: KubeCluster, namespace: str, name: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.changes: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    @property
    def values(self) -> list[int]:
        with self._lock:
            return [replicas for _, replicas in self.changes]

    def reached(self, replicas: int) -> float | None:
        with self._lock:
            return next((moment for moment, value in self.changes if value == replicas), None)

    def _follow(self) -> None:
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        params = {"watch": "true", "fieldSelector": f"metadata.name={self.name}"}
        client = self.cluster.client(timeout=5)
        client.timeout = httpx.Timeout(5, read=None)
        with client:
            while not self._stop.is_set():
                try:
                    with client.stream("GET", path, params=params) as response:
                        for line in response.iter_lines():
                            if self._stop.is_set():
                                return
                            event = json.loads(line) if line else {}
                            if event.get("type") in ("ADDED", "MODIFIED"):
                                self._record(int(event["object"]["spec"].get("replicas") or 0))
                except httpx.HTTPError:
                    time.sleep(0.2)

    def _record(self, replicas: int) -> None:
        with self._lock:
            if not self.changes or self.changes[-1][1] != replicas:
                self.changes.append((time.monotonic(), replicas))

    def __enter__(self) -> Trajectory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def deployment(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "nodeSelector": {NODE_LABEL: "kwok"},
                         "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists",
                                          "effect": "NoSchedule"}],
                         "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "worker", "image": "worker:kwok"}]}}}}


def scaled_object(name: str, address: str, queue: str) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"name": name}, "pollingInterval": POLLING, "cooldownPeriod": COOLDOWN,
                     "maxReplicaCount": MAX_REPLICAS,
                     "triggers": [{"type": "redis", "metadata": {"address": address, "listName": queue,
                                                                 "listLength": str(LIST_LENGTH)}}]}}


def pods(api: httpx.Client, namespace: str, app: str) -> list[dict[str, Any]]:
    found = api.get(f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": f"app={app}"})
    found.raise_for_status()
    return [pod for pod in found.json()["items"] if not pod["metadata"].get("deletionTimestamp")]


def running(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [pod for pod in items if pod.get("status", {}).get("phase") == "Running"]


def condition(api: httpx.Client, namespace: str, name: str, kind: str) -> str | None:
    obj = api.get(f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects/{name}").json()
    found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind]
    return found[0]["status"] if found else None


def test_a_scaled_object_takes_a_deployment_from_zero_to_the_hpa_count_and_back_on_kubernetes(
        kube_cluster: KubeCluster, kwok_nodes: set[str], namespace: str, operator: Path,
        redis_client: tuple[Any, Any]) -> None:
    info, redis = redis_client
    queue = f"kube-jobs-{uuid.uuid4().hex[:8]}"
    name = "worker"
    with kube_cluster.client() as api, Trajectory(kube_cluster, namespace, name) as trajectory:
        api.post(f"/apis/apps/v1/namespaces/{namespace}/deployments", json=deployment(name)).raise_for_status()
        api.post(f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects",
                 json=scaled_object(name, f"{info.host}:{info.port}", queue)).raise_for_status()
        wait_until(lambda: condition(api, namespace, name, "Ready"), lambda ready: ready == "True",
                   "the ScaledObject to be Ready", timeout=60)
        assert trajectory.values == [0]

        started = time.monotonic()
        redis.rpush(queue, *[f"m{i}" for i in range(MESSAGES)])
        wait_until(lambda: trajectory.values, lambda values: PEAK in values, f"{PEAK} replicas", timeout=60)
        peak_at = trajectory.reached(PEAK)
        assert peak_at is not None
        # kube-controller-manager made the Pods, kube-scheduler bound them to kwok nodes, kwok runs them.
        at_peak = wait_until(lambda: pods(api, namespace, name), lambda items: len(running(items)) == PEAK,
                             f"{PEAK} Running pods", timeout=60)
        assert {pod["spec"]["nodeName"] for pod in at_peak} <= kwok_nodes
        assert all(pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for pod in at_peak)
        assert all(pod["spec"]["schedulerName"] == "default-scheduler" for pod in at_peak)

        # The workers: every Running Pod takes one message per tick, until the list is empty.
        consumed: list[tuple[int, bytes]] = []
        while redis.llen(queue) > 0:
            workers = len(running(pods(api, namespace, name)))
            assert workers > 0, f"no Running pod while {redis.llen(queue)} messages wait: {trajectory.values}"
            for _ in range(workers):
                item = redis.lpop(queue)
                if item is not None:
                    consumed.append((workers, item))
            time.sleep(TICK)
        drained_at = time.monotonic()

        wait_until(lambda: trajectory.values, lambda values: values[-1] == 0 and len(values) > 2,
                   f"back to 0: {trajectory.values}", timeout=COOLDOWN + 8 * POLLING + 30)
        zero_at = trajectory.changes[-1][0]
        wait_until(lambda: pods(api, namespace, name), lambda items: not items, "the Pods to be deleted",
                   timeout=60)
        events = api.get(f"/api/v1/namespaces/{namespace}/events", params={
            "fieldSelector": f"involvedObject.kind=ScaledObject,involvedObject.name={name}"}).json()["items"]

    # 0 -> 1 (activation) -> the HPA count for the full list -> 1 (walk-down after the cooldown) -> 0.
    assert trajectory.values == [0, *WAY_UP, 1, 0]
    assert sorted(item.decode() for _, item in consumed) == sorted(f"m{i}" for i in range(MESSAGES))
    assert zero_at - drained_at >= COOLDOWN - 1.0  # nothing moved toward zero before the cooldown
    scaled = sorted((e for e in events if e["reason"] != "ScaledObjectReady"), key=lambda e: e["firstTimestamp"])
    stories = [(e["reason"], re.sub(r": .*", "", e["message"])) for e in scaled]
    assert (("KEDAScaleTargetActivated", "Scaled Deployment/worker from 0 to 1") in stories), stories
    assert ("SuccessfulRescale", "Scaled Deployment/worker from 1 to 4") in stories, stories
    assert ("SuccessfulRescale", f"Scaled Deployment/worker from 4 to {PEAK}") in stories, stories
    assert ("SuccessfulRescale", f"Scaled Deployment/worker from {PEAK} to 1") in stories, stories
    assert ("KEDAScaleTargetDeactivated", "Scaled Deployment/worker from 1 to 0") in stories, stories
    why_limited = next(e["message"] for e in scaled if "from 1 to 4" in e["message"])
    assert f"metrics want {PEAK}" in why_limited and "capped at the scale-up limit max(2 x 1, 4) = 4" in why_limited
    why_up = next(e["message"] for e in scaled if f"from 4 to {PEAK}" in e["message"])
    assert f"value {MESSAGES} / target {LIST_LENGTH} per pod -> {PEAK}" in why_up, why_up
    why_down = next(e["message"] for e in scaled if f"from {PEAK} to 1" in e["message"])
    assert "cooldown over: stepping down to 1 before zero" in why_down, why_down
    assert "Traceback" not in operator.read_text(), operator.read_text()
    for event in scaled:
        print(f"{event['reason']}: {event['message']}")
    print(f"\ntrajectory {trajectory.values}; {PEAK} replicas {peak_at - started:.1f}s after the push; "
          f"0 reached {zero_at - drained_at:.1f}s after the list was drained")
