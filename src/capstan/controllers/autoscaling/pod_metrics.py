"""``PodMetrics`` for embedded mode: the usage of a scale target's pods, measured on their local
processes by the node agent's ``ProcessRuntime``.

The runtime measures whole pods (every container's process tree), so ``container`` narrows
nothing here: usage is the pod's, requests are summed over its containers (or the named one).
"""

from __future__ import annotations

from typing import Protocol

from capstan.api.quantity import QuantityError, cpu_millis, parse_quantity
from capstan.scalers.base import PodUsage
from capstan.store.base import Obj, Store


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
