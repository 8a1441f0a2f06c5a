"""KubePodMetrics: PodMetrics JSON and the pods' requests turned into PodUsage, and the metrics API's absence
turned into the trigger's clear error. The API server is played by an httpx MockTransport behind a KubeStore."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from capstan.api.registry import default_registry
from capstan.controllers.autoscaling.pod_metrics import (
    NOT_SERVED,
    KubePodMetrics,
    container_usage,
    kube_pod_metrics,
    usage_of,
)
from capstan.core.autoscaling.keda import (
    PauseState,
    ScaledObjectSettings,
    ScaledObjectState,
    TriggerReading,
    decide_scaled_object,
)
from capstan.scalers.base import PodUsage, ScalerConfig, ScalerError
from capstan.scalers.cpu_memory import CpuMemoryScaler
from capstan.store.kube import KubeStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pod(name: str, *, phase: str = "Running", ready: bool = True, deleting: bool = False,
        containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "labels": {"app": "w"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": containers if containers is not None else [
                {"name": "app", "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}},
                {"name": "sidecar", "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod_metrics(name: str, app: tuple[str, str] = ("100m", "64Mi"),
                sidecar: tuple[str, str] = ("12345n", "256Ki")) -> dict[str, Any]:
    return {"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "w"}},
            "timestamp": "2026-01-01T00:00:00Z", "window": "15s",
            "containers": [{"name": "app", "usage": {"cpu": app[0], "memory": app[1]}},
                           {"name": "sidecar", "usage": {"cpu": sidecar[0], "memory": sidecar[1]}}]}


# ---- pure parts ----------------------------------------------------------------------------------


def test_nanocores_round_up_to_a_millicore_and_binary_suffixes_are_bytes() -> None:
    only_sidecar = container_usage(pod_metrics("a"), "sidecar")
    assert only_sidecar == (1, 256 * 1024)  # 12345n is 0.012345m: the HPA reads it as 1m


def test_containers_are_summed_unless_one_is_named() -> None:
    assert container_usage(pod_metrics("a")) == (101, 64 * 2**20 + 256 * 1024)
    assert container_usage(pod_metrics("a"), "app") == (100, 64 * 2**20)
    assert container_usage(pod_metrics("a", app=("1500000000n", "1Gi")), "app") == (1500, 2**30)
    assert container_usage(pod_metrics("a"), "absent") == (0, 0)


def test_usage_joins_metrics_with_requests_and_readiness() -> None:
    pods = [pod("a"), pod("b", ready=False)]
    metrics = [pod_metrics("a"), pod_metrics("b", app=("300m", "100Mi"))]
    assert usage_of(pods, metrics) == [
        PodUsage(101, 64 * 2**20 + 256 * 1024, 300, 160 * 2**20, ready=True),
        PodUsage(301, 100 * 2**20 + 256 * 1024, 300, 160 * 2**20, ready=False)]
    assert usage_of(pods, metrics, "app") == [PodUsage(100, 64 * 2**20, 250, 128 * 2**20, ready=True),
                                              PodUsage(300, 100 * 2**20, 250, 128 * 2**20, ready=False)]


def test_pods_without_metrics_not_running_or_deleting_are_left_out() -> None:
    pods = [pod("no-metrics"), pod("pending", phase="Pending"), pod("going", deleting=True), pod("ok")]
    metrics = [pod_metrics(name) for name in ("pending", "going", "ok", "orphan")]
    assert [u.cpu_millis for u in usage_of(pods, metrics)] == [101]


def test_a_malformed_reading_counts_as_missing() -> None:
    assert usage_of([pod("a")], [pod_metrics("a", app=("lots", "1Mi"))]) == []


def test_a_pod_without_requests_reports_zero_requests() -> None:
    usage = usage_of([pod("a", containers=[{"name": "app"}])], [pod_metrics("a")])
    assert (usage[0].cpu_request_millis, usage[0].memory_request_bytes) == (0, 0)


# ---- against a (mock) API server -----------------------------------------------------------------


def api_server(metrics: httpx.Response | None, pods: list[dict[str, Any]],
               seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/v1/namespaces/ns/pods":
            return httpx.Response(200, json={"kind": "PodList", "apiVersion": "v1",
                                             "metadata": {"resourceVersion": "7"}, "items": pods})
        if request.url.path == "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods" and metrics is not None:
            return metrics
        return httpx.Response(404, json={"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "message": "the server could not find the requested resource",
                                         "reason": "NotFound", "code": 404})
    return httpx.MockTransport(handle)


def kube(transport: httpx.MockTransport) -> KubeStore:
    return KubeStore(httpx.AsyncClient(transport=transport, base_url="https://kube.test"), default_registry())


def cpu_scaler(source: KubePodMetrics, metric_type: str = "Utilization", value: str = "50") -> CpuMemoryScaler:
    return CpuMemoryScaler(ScalerConfig(trigger_type="cpu", trigger_index=0, metadata={"value": value},
                                        metric_type=metric_type,  # type: ignore[arg-type]
                                        namespace="ns", target_selector="app=w", pod_metrics=source))


async def test_utilization_from_the_metrics_api() -> None:
    seen: list[httpx.Request] = []
    body = {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
            "items": [pod_metrics("a", app=("200m", "64Mi"), sidecar=("40m", "1Mi")),
                      pod_metrics("b", app=("100m", "64Mi"), sidecar=("20m", "1Mi"))]}
    store = kube(api_server(httpx.Response(200, json=body), [pod("a"), pod("b")], seen))
    source = kube_pod_metrics(store)
    assert source is not None
    result = await cpu_scaler(source).get_metrics_and_activity("s0-cpu")
    assert (result.value, result.active) == (60.0, True)  # 360m of 600m requested
    assert {r.url.params["labelSelector"] for r in seen} == {"app=w"}
    total = await cpu_scaler(source, "AverageValue", "100m").get_metrics_and_activity("s0-cpu")
    assert total.value == pytest.approx(0.36)
    await store.close()


async def test_no_metrics_api_is_the_clear_error() -> None:
    store = kube(api_server(None, [pod("a")], []))
    source = kube_pod_metrics(store)
    assert source is not None
    with pytest.raises(ScalerError) as caught:
        await cpu_scaler(source).get_metrics_and_activity("s0-cpu")
    assert str(caught.value) == f"cpu trigger (triggers[0]): {NOT_SERVED}"
    assert str(caught.value) == ("cpu trigger (triggers[0]): the metrics.k8s.io API is not available on this "
                                 "cluster; install metrics-server")
    await store.close()


async def test_a_registered_but_unavailable_metrics_api_says_so() -> None:
    unavailable = httpx.Response(503, json={"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                            "message": "service unavailable", "reason": "ServiceUnavailable",
                                            "code": 503})
    store = kube(api_server(unavailable, [pod("a")], []))
    source = kube_pod_metrics(store)
    assert source is not None
    with pytest.raises(ScalerError, match=r"^memory trigger \(triggers\[0\]\): the metrics.k8s.io API is "
                       r"registered but does not answer \(is metrics-server running\?\): service unavailable$"):
        await CpuMemoryScaler(ScalerConfig(
            trigger_type="memory", trigger_index=0, metadata={"value": "64Mi"}, metric_type="AverageValue",
            namespace="ns", target_selector="app=w", pod_metrics=source)).get_metrics_and_activity("s0-memory")
    await store.close()


def test_only_a_kubernetes_store_has_a_metrics_api() -> None:
    assert kube_pod_metrics(object()) is None  # type: ignore[arg-type]


# ---- what the ScaledObject says ------------------------------------------------------------------


def _ready_after(readings: tuple[TriggerReading, ...]) -> tuple[str, str, str]:
    decision = decide_scaled_object(ScaledObjectSettings(min_replicas=1, max_replicas=5), PauseState(), readings,
                                    ScaledObjectState(2, created_at=T0), T0)
    ready = next(c for c in decision.conditions if c.type == "Ready")
    return ready.status, ready.reason, ready.message


def test_a_lone_failing_cpu_trigger_is_not_ready_although_cpu_counts_as_active() -> None:
    failing = TriggerReading("s0-cpu", target=50, metric_type="Utilization", trigger_type="cpu",
                             error=f"cpu trigger (triggers[0]): {NOT_SERVED}")
    assert _ready_after((failing,)) == (
        "False", "TriggerError", f"triggers failed: s0-cpu: cpu trigger (triggers[0]): {NOT_SERVED}")
    reading = TriggerReading("s1-memory", 30.0, 50, metric_type="Utilization", trigger_type="memory")
    assert _ready_after((failing, reading))[:2] == ("Unknown", "PartialTriggerError")
