"""cpu / memory scalers over embedded mode's pod metrics: pods in a real SQLite store, usage from the
node agent's accounting (a fixed table here, keyed by pod uid as the ProcessRuntime keys it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from capstan.api.registry import default_registry
from capstan.controllers.autoscaling.pod_metrics import ProcessPodMetrics
from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError, TargetType
from capstan.scalers.cpu_memory import CpuMemoryScaler
from capstan.store.base import Store
from capstan.store.sqlite import SqliteStore


class Accounting:
    """What the node agent measured per pod uid: (cpu millicores, memory bytes)."""

    def __init__(self) -> None:
        self.by_uid: dict[str, tuple[int, int]] = {}

    def usage(self, pod_uid: str) -> tuple[int, int]:
        return self.by_uid.get(pod_uid, (0, 0))


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    opened = await SqliteStore.open(":memory:", default_registry())
    try:
        yield opened
    finally:
        await opened.close()


async def run_pod(store: Store, accounting: Accounting, name: str, cpu: int, memory: int, *,
                  app: str = "web", ready: bool = True, requests: dict[str, str] | None = None) -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "python",
                                 "resources": {"requests": requests or {"cpu": "200m", "memory": "100Mi"}}}]},
    }
    created = await store.create(pod)
    created["status"] = {"phase": "Running",
                         "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    await store.update_status(created)
    accounting.by_uid[created["metadata"]["uid"]] = (cpu, memory)


def scaler(store: Store, accounting: Accounting, kind: str, metric_type: TargetType, value: str,
           selector: str = "app=web") -> CpuMemoryScaler:
    return CpuMemoryScaler(ScalerConfig(trigger_type=kind, trigger_index=0, metadata={"value": value},
                                        metric_type=metric_type, namespace="default", target_selector=selector,
                                        pod_metrics=ProcessPodMetrics(store, accounting)))


async def read(s: CpuMemoryScaler) -> MetricResult:
    return await s.get_metrics_and_activity(s.metric)


async def test_cpu_utilization_of_the_ready_target_pods(store: Store) -> None:
    accounting = Accounting()
    await run_pod(store, accounting, "web-1", cpu=150, memory=0)
    await run_pod(store, accounting, "web-2", cpu=50, memory=0)
    await run_pod(store, accounting, "web-3", cpu=900, memory=0, ready=False)  # starting up: not counted
    await run_pod(store, accounting, "other", cpu=900, memory=0, app="batch")  # not selected
    s = scaler(store, accounting, "cpu", "Utilization", "60")
    assert await read(s) == MetricResult(50.0, True)  # (150 + 50) / (200 + 200) = 50%


async def test_memory_average_value_reports_the_total(store: Store) -> None:
    accounting = Accounting()
    await run_pod(store, accounting, "web-1", cpu=0, memory=300 * 2**20)
    await run_pod(store, accounting, "web-2", cpu=0, memory=100 * 2**20)
    s = scaler(store, accounting, "memory", "AverageValue", "128Mi")
    assert s.metric_specs()[0].target == 128 * 2**20
    assert await read(s) == MetricResult(400.0 * 2**20, True)  # the HPA asks for ceil(400Mi / 128Mi) = 4


async def test_no_pods_is_zero_and_still_active(store: Store) -> None:
    s = scaler(store, Accounting(), "cpu", "Utilization", "50", selector="app=nothing")
    assert await read(s) == MetricResult(0.0, True)


async def test_utilization_without_requests_is_an_error(store: Store) -> None:
    accounting = Accounting()
    await run_pod(store, accounting, "web-1", cpu=100, memory=0, requests={"memory": "64Mi"})
    s = scaler(store, accounting, "cpu", "Utilization", "50")
    with pytest.raises(ScalerError, match=r"cpu trigger \(triggers\[0\]\): missing request for cpu"):
        await read(s)
