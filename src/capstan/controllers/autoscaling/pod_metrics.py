"""``PodMetrics``, the usage of a scale target's pods, for the cpu and memory triggers.

Embedded mode (``ProcessPodMetrics``): measured on the pods' local processes by the node agent's
``ProcessRuntime``. The runtime measures whole pods (every container's process tree), so
``container`` narrows nothing there: usage is the pod's, requests are summed over its containers
(or the named one).

Kubernetes mode (``KubePodMetrics``): the ``metrics.k8s.io/v1beta1`` PodMetrics that metrics-server
serves (the source the HPA reads), per container, so ``container`` narrows usage and requests
alike. Without metrics-server the API group is not served and every read fails with a message
saying so; the ScaledObject then shows ``Ready=False`` with it.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httpx

from capstan.api.errors import ApiError, NotFoundError
from capstan.api.quantity import QuantityError, cpu_millis, parse_quantity
from capstan.scalers.base import PodUsage, ScalerError
from capstan.store.base import Obj, Store
from capstan.store.kube import KubeStore


class UsageSource(Protocol):
    def usage(self, pod_uid: str) -> tuple[int, int]: ...


def _requests(pod: Obj, container: str | None) -> tuple[int, int]:
    cpu = memory = 0
    for item in (pod.get("spec") or {}).get("containers") or []:
        if container and item.get("name") != container:
            continue
        requests = (item.get("resources") or {}).get("requests") or {}
        try:
            if "cpu" in requests:
                cpu += cpu_millis(requests["cpu"])
            if "memory" in requests:
                memory += int(parse_quantity(requests["memory"]))
        except QuantityError:
            continue
    return cpu, memory


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class ProcessPodMetrics:
    def __init__(self, store: Store, runtime: UsageSource) -> None:
        self.store = store
        self.runtime = runtime
        self.pods_rt = store.registry.lookup("pods")

    async def usage(self, namespace: str, label_selector: str, container: str | None = None) -> list[PodUsage]:
        listed = await self.store.list(self.pods_rt, namespace, label_selector=label_selector)
        result = []
        for pod in listed.items:
            status = pod.get("status") or {}
            if status.get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
                continue
            cpu, memory = self.runtime.usage(pod["metadata"]["uid"])
            cpu_request, memory_request = _requests(pod, container)
            result.append(PodUsage(cpu, memory, cpu_request, memory_request, _ready(pod)))
        return result


# ---- Kubernetes mode ------------------------------------------------------------------------------

METRICS_API = "/apis/metrics.k8s.io/v1beta1"
NOT_SERVED = "the metrics.k8s.io API is not available on this cluster; install metrics-server"


class RawApi(Protocol):
    """The part of ``KubeStore`` this needs: a raw GET for a group outside the registry."""

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None) -> Obj: ...


def container_usage(pod_metrics: Obj, container: str | None = None) -> tuple[int, int]:
    """(cpu millicores, memory bytes) of one ``PodMetrics`` item: summed over its containers, or the named
    one. Quantities are rounded up to whole millicores as the HPA reads them (``12345n`` is ``1m``)."""
    cpu = memory = 0
    for item in pod_metrics.get("containers") or []:
        if container and item.get("name") != container:
            continue
        usage = item.get("usage") or {}
        if "cpu" in usage:
            cpu += cpu_millis(usage["cpu"])
        if "memory" in usage:
            memory += int(parse_quantity(usage["memory"]))
    return cpu, memory


def usage_of(pods: list[Obj], metrics: list[Obj], container: str | None = None) -> list[PodUsage]:
    """Join the target's pods with their ``PodMetrics``: one record per Running, not deleting pod that
    reports usage (the HPA leaves pods without metrics out of the average as well)."""
    by_name = {(m.get("metadata") or {}).get("name"): m for m in metrics}
    result = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        found = by_name.get(meta.get("name"))
        if found is None or meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
            continue
        try:
            cpu, memory = container_usage(found, container)
        except QuantityError:
            continue  # a malformed reading is treated like a missing one
        cpu_request, memory_request = _requests(pod, container)
        result.append(PodUsage(cpu, memory, cpu_request, memory_request, _ready(pod)))
    return result


class KubePodMetrics:
    """``PodMetrics`` on Kubernetes: the target's pods from the API (requests, phase, Ready condition)
    joined with their ``metrics.k8s.io/v1beta1`` PodMetrics, both listed with the target's selector."""

    def __init__(self, store: Store, api: RawApi) -> None:
        self.store = store
        self.api = api
        self.pods_rt = store.registry.lookup("pods")

    async def usage(self, namespace: str, label_selector: str, container: str | None = None) -> list[PodUsage]:
        pods, metrics = await asyncio.gather(
            self.store.list(self.pods_rt, namespace, label_selector=label_selector),
            self._pod_metrics(namespace, label_selector))
        return usage_of(pods.items, metrics, container)

    async def _pod_metrics(self, namespace: str, label_selector: str) -> list[Obj]:
        path = f"{METRICS_API}/namespaces/{namespace}/pods"
        try:
            body = await self.api.request("GET", path, params={"labelSelector": label_selector})
        except NotFoundError:
            # The group is not served at all: no APIService, so the aggregator answers 404.
            raise ScalerError(NOT_SERVED) from None
        except ApiError as exc:
            if exc.reason == "ServiceUnavailable":
                raise ScalerError("the metrics.k8s.io API is registered but does not answer (is metrics-server "
                                  f"running?): {exc.message}") from None
            raise ScalerError(f"reading pod metrics from metrics.k8s.io: {exc.message}") from None
        except httpx.HTTPError as exc:
            raise ScalerError(f"reading pod metrics from metrics.k8s.io: {exc!r}") from None
        items = body.get("items") or []
        return [item for item in items if isinstance(item, dict)]


def kube_pod_metrics(store: Store) -> KubePodMetrics | None:
    """The operator's pod metrics source: the metrics API of the cluster ``store`` talks to (None for a
    store that is not a Kubernetes API server's)."""
    return KubePodMetrics(store, store) if isinstance(store, KubeStore) else None
