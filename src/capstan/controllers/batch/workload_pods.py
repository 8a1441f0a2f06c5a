"""Plain Pods as workloads: pod groups (gangs) and single queued pods.

A Pod labelled ``kueue.x-k8s.io/queue-name`` (and not controlled by another object, e.g. a Job)
is created with the scheduling gate ``kueue.x-k8s.io/admission`` (``gate_queued_pods``, the
mutating admission step), so the scheduler leaves it alone. Pods with the same
``kueue.x-k8s.io/pod-group-name`` label and a ``kueue.x-k8s.io/pod-group-total-count``
(annotation, as Kueue has it, or label) form one Workload named after the group; a queued Pod
without a group is a group of one named after the pod.

The Workload has one pod set ``main`` of ``total-count`` pods with the first pod's requests
(pods of a group are expected to be alike). It is not ready until all ``total-count`` pods
exist. When it is admitted every pod is ungated at once, with the flavors' nodeLabels merged into
its nodeSelector. On eviction the group's unfinished pods are deleted (a pod cannot be gated
again); the Workload then waits for replacement pods. When every pod has finished the Workload is
Finished (Succeeded if all succeeded).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from capstan.api.errors import AlreadyExistsError, ConflictError, NotFoundError
from capstan.controllers.batch.common import (
    ADMISSION_GATE,
    ADMITTED,
    DEPENDS_ON,
    EVICTED,
    FINISHED,
    MANAGED_LABEL,
    POD_GROUP_COUNT,
    POD_GROUP_LABEL,
    PRIORITY_CLASS_LABEL,
    QUEUE_LABEL,
    QUOTA_RESERVED,
    REQUEUED,
    WORKLOAD_SOURCE,
    admission_flavors,
    conditions_of,
    holds_quota,
    is_evicted,
    is_finished,
    is_running_admitted,
    now_rfc3339,
    with_condition,
)
from capstan.controllers.events import EventRecorder, utcnow
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Controller, ObjectKey, Result
from capstan.core.scheduling.conditions import find_condition
from capstan.core.workloads.pods import is_finished as pod_is_finished
from capstan.core.workloads.pods import phase
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

KUEUE_API = "kueue.x-k8s.io/v1beta1"
GROUP_WORKLOAD_LABEL = "kueue.x-k8s.io/pod-group"


def _controlled(pod: Obj) -> bool:
    return any(ref.get("controller") for ref in pod["metadata"].get("ownerReferences") or [])


def is_queued_pod(pod: Obj) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return bool(labels.get(QUEUE_LABEL)) and not _controlled(pod)


def gate_queued_pods(new: Obj, old: Obj | None) -> None:
    """Mutating hook for Pod creates: a queued pod starts gated and joins its group."""
    if old is not None or not is_queued_pod(new):
        return
    meta = new["metadata"]
    labels = meta.setdefault("labels", {})
    labels[MANAGED_LABEL] = "true"
    if not labels.get(POD_GROUP_LABEL):
        labels[POD_GROUP_LABEL] = meta["name"]
        meta.setdefault("annotations", {})[POD_GROUP_COUNT] = "1"
    spec = new.setdefault("spec", {})
    gates = list(spec.get("schedulingGates") or [])
    if not any(g.get("name") == ADMISSION_GATE for g in gates):
        gates.append({"name": ADMISSION_GATE})
    spec["schedulingGates"] = gates


def group_of(pod: Obj) -> str | None:
    labels = pod["metadata"].get("labels") or {}
    if labels.get(MANAGED_LABEL) != "true":
        return None
    return labels.get(POD_GROUP_LABEL) or None


def total_count(pod: Obj) -> int:
    meta = pod["metadata"]
    raw = (meta.get("annotations") or {}).get(POD_GROUP_COUNT) or (meta.get("labels") or {}).get(POD_GROUP_COUNT)
    try:
        return max(1, int(raw)) if raw else 1
    except ValueError:
        return 1


def group_pods(pods: list[Obj], group: str) -> list[Obj]:
    return [p for p in pods if group_of(p) == group]


class PodGroupIntegration(Controller):
    name = "batch-pod-group"

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 clock: Callable[[], datetime] = utcnow, workers: int = 1) -> None:
        super().__init__(informers, workers=workers)
        self.store = store
        self.recorder = recorder
        self.clock = clock
        registry = store.registry
        self.pods_rt = registry.lookup("pods")
        self.workloads_rt = registry.lookup("workloads.kueue.x-k8s.io")
        self.pods = informers.informer(self.pods_rt)
        self.workloads = informers.informer(self.workloads_rt)
        self.priorities = informers.informer(registry.lookup("workloadpriorityclasses.kueue.x-k8s.io"))
        self.flavors = informers.informer(registry.lookup("resourceflavors.kueue.x-k8s.io"))
        self.watch(self.pods, self._group_key)
        self.watch(self.workloads, self._workload_key)

    @staticmethod
    def _group_key(pod: Obj) -> list[ObjectKey]:
        group = group_of(pod)
        return [(pod["metadata"].get("namespace") or "", group)] if group else []

    @staticmethod
    def _workload_key(workload: Obj) -> list[ObjectKey]:
        group = (workload["metadata"].get("labels") or {}).get(GROUP_WORKLOAD_LABEL)
        return [(workload["metadata"].get("namespace") or "", group)] if group else []

    async def reconcile(self, key: ObjectKey) -> Result | None:
        namespace, group = key
        pods = group_pods(self.pods.list(namespace), group)
        workload = self.workloads.get(group, namespace)
        if workload is None:
            if pods and not all(pod_is_finished(p) for p in pods):
                await self._create_workload(namespace, group, pods)
            return None
        if (workload["metadata"].get("labels") or {}).get(GROUP_WORKLOAD_LABEL) != group:
            return None  # a namesake we did not create
        if not pods:
            if is_finished(workload) or not holds_quota(workload):
                await self._delete_workload(workload)
            return None
        total = total_count(pods[0])
        finished = [p for p in pods if pod_is_finished(p)]
        if len(finished) >= total:
            await self._finish(workload, finished)
            return None
        if is_finished(workload):
            return None
        if is_running_admitted(workload):
            await self._ungate(workload, pods)
        elif is_evicted(workload) and holds_quota(workload):
            live = [p for p in pods if not pod_is_finished(p)]
            if live:
                for pod in live:
                    await self._delete_pod(pod)
            else:
                await self._requeue(workload)
        return None

    async def _create_workload(self, namespace: str, group: str, pods: list[Obj]) -> None:
        first = min(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        meta = first["metadata"]
        labels = meta.get("labels") or {}
        template = {"metadata": {"labels": {k: v for k, v in labels.items() if k != MANAGED_LABEL}},
                    "spec": {k: copy.deepcopy(v) for k, v in (first.get("spec") or {}).items()
                             if k not in ("schedulingGates", "nodeName")}}
        spec: dict[str, Any] = {"queueName": labels[QUEUE_LABEL],
                                "podSets": [{"name": "main", "count": total_count(first), "template": template}],
                                "priority": 0}
        priority_class = labels.get(PRIORITY_CLASS_LABEL)
        if priority_class:
            found = self.priorities.get(priority_class)
            spec.update(priority=int(found.get("value") or 0) if found else 0, priorityClassName=priority_class,
                        priorityClassSource=WORKLOAD_SOURCE)
        annotations = {DEPENDS_ON: meta["annotations"][DEPENDS_ON]} if DEPENDS_ON in (
            meta.get("annotations") or {}) else {}
        workload = {"apiVersion": KUEUE_API, "kind": "Workload",
                    "metadata": {"name": group, "namespace": namespace, "labels": {GROUP_WORKLOAD_LABEL: group},
                                 **({"annotations": annotations} if annotations else {})},
                    "spec": spec}
        try:
            await self.store.create(workload)
        except AlreadyExistsError:
            return

    async def _ungate(self, workload: Obj, pods: list[Obj]) -> None:
        labels: dict[str, str] = {}
        tolerations: list[Obj] = []
        names = {f for by_resource in admission_flavors(workload).values() for f in by_resource.values()}
        for flavor in (self.flavors.get(n) for n in sorted(names)):
            if flavor is not None:
                labels.update((flavor.get("spec") or {}).get("nodeLabels") or {})
                tolerations.extend((flavor.get("spec") or {}).get("tolerations") or [])
        for pod in pods:
            gates = (pod.get("spec") or {}).get("schedulingGates") or []
            if not any(g.get("name") == ADMISSION_GATE for g in gates) or pod_is_finished(pod):
                continue
            updated = copy.deepcopy(pod)
            spec = updated["spec"]
            remaining = [g for g in gates if g.get("name") != ADMISSION_GATE]
            if remaining:
                spec["schedulingGates"] = remaining
            else:
                spec.pop("schedulingGates", None)
            if labels:
                spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **labels}
            if tolerations:
                spec["tolerations"] = [*(spec.get("tolerations") or []),
                                       *(t for t in tolerations if t not in (spec.get("tolerations") or []))]
            try:
                await self.store.update(updated)
            except NotFoundError:
                continue

    async def _delete_pod(self, pod: Obj) -> None:
        if pod["metadata"].get("deletionTimestamp"):
            return
        try:
            await self.store.delete(self.pods_rt, pod["metadata"]["name"], pod["metadata"].get("namespace"),
                                    uid=pod["metadata"]["uid"])
        except (NotFoundError, ConflictError):
            return

    async def _delete_workload(self, workload: Obj) -> None:
        try:
            await self.store.delete(self.workloads_rt, workload["metadata"]["name"],
                                    workload["metadata"].get("namespace"), uid=workload["metadata"]["uid"])
        except (NotFoundError, ConflictError):
            return

    async def _finish(self, workload: Obj, finished: list[Obj]) -> None:
        if is_finished(workload):
            return
        failed = [p for p in finished if phase(p) == "Failed"]
        status = dict(workload.get("status") or {})
        status["conditions"] = with_condition(
            conditions_of(workload), FINISHED, "True", "Failed" if failed else "Succeeded",
            f"{len(failed)} pod(s) failed" if failed else "Pods succeeded", now_rfc3339(self.clock()))
        await self._write_status(workload, status)

    async def _requeue(self, workload: Obj) -> None:
        stamp = now_rfc3339(self.clock())
        evicted = find_condition(conditions_of(workload), EVICTED) or {}
        reason = str(evicted.get("reason") or "Evicted")
        conditions = with_condition(conditions_of(workload), QUOTA_RESERVED, "False", "Pending",
                                    f"The workload was evicted: {evicted.get('message') or reason}", stamp)
        conditions = with_condition(conditions, ADMITTED, "False", "NoReservation", "The workload has no reservation",
                                    stamp)
        conditions = with_condition(conditions, REQUEUED, "True", reason, "The workload was requeued", stamp)
        status = {**(workload.get("status") or {}), "conditions": conditions, "admission": None}
        await self._write_status(workload, status)

    async def _write_status(self, workload: Obj, status: dict[str, Any]) -> None:
        try:
            await self.store.update_status({**workload, "status": status})
        except NotFoundError:
            return
