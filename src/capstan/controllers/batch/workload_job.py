"""The batch/v1 Job integration: a queued Job is a Workload, and runs only while it is admitted.

A Job labelled ``kueue.x-k8s.io/queue-name`` is created suspended (``suspend_queued_jobs``, the
mutating admission step; on Kubernetes a webhook does the same) and gets a Workload owned by it:
one pod set ``main`` of ``parallelism`` (at most ``completions``) pods with the template's
requests, priority from the ``kueue.x-k8s.io/priority-class`` label (a WorkloadPriorityClass).

The Job follows its Workload (level-triggered, every look):

* admitted (quota reserved, not evicted): the assigned flavors' nodeLabels become the template's
  nodeSelector and their tolerations are added; the original scheduling fields are kept in the
  ``capstan.io/original-scheduling`` annotation; ``suspend`` becomes false;
* not admitted or evicted: ``suspend`` becomes true, alone in its write: the template of a Job that
  has started is immutable on Kubernetes. Once the Job is suspended, has no active pod and its
  ``status.startTime`` is cleared (the Job controller does both on suspension), a later write
  restores the original nodeSelector/tolerations (Kueue's order);
* evicted, no pod left and the template restored: the quota is released (admission cleared, ``QuotaReserved=False``,
  ``Requeued=True``) and the workload queues again after a back-off (``requeueState``);
* Job Complete/Failed: the Workload is ``Finished`` and its quota released.

If the Store offers no mutating hook the reconciler still suspends an unadmitted Job on its
first look (the embedded Job controller may then have created pods, which suspension deletes).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from capstan.api.errors import AlreadyExistsError, ConflictError, NotFoundError
from capstan.controllers.batch.common import (
    ADMITTED,
    DEPENDS_ON,
    EVICTED,
    FINISHED,
    JOB_UID_LABEL,
    ORIGINAL_SCHEDULING,
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
from capstan.core.workloads.job import CONTROLLER_UID_LABEL, finished_condition
from capstan.core.workloads.pods import is_finished as pod_is_finished
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

KUEUE_API = "kueue.x-k8s.io/v1beta1"


def is_queued_job(job: Obj) -> bool:
    return bool(((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL))


def suspend_queued_jobs(new: Obj, old: Obj | None) -> None:
    """Mutating hook for Job creates: a queued Job starts suspended (Kueue's webhook)."""
    if old is None and is_queued_job(new):
        new.setdefault("spec", {})["suspend"] = True


def workload_name(job: Obj) -> str:
    meta = job["metadata"]
    return f"job-{meta['name'][:50]}-{meta['uid'][:5]}"


def pod_count(job_spec: dict[str, Any]) -> int:
    parallelism = int(job_spec.get("parallelism", 1) if job_spec.get("parallelism") is not None else 1)
    completions = job_spec.get("completions")
    return min(parallelism, int(completions)) if completions is not None else parallelism


def backoff_seconds(count: int, base: float, cap: float) -> float:
    return float(min(cap, base * (2 ** max(0, count - 1))))


class JobIntegration(Controller):
    name = "batch-job"

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 clock: Callable[[], datetime] = utcnow, requeue_base: float = 1.0, requeue_max: float = 60.0,
                 workers: int = 2) -> None:
        super().__init__(informers, workers=workers)
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.requeue_base = requeue_base
        self.requeue_max = requeue_max
        registry = store.registry
        self.jobs_rt = registry.lookup("jobs")
        self.workloads_rt = registry.lookup("workloads.kueue.x-k8s.io")
        self.priority_rt = registry.lookup("workloadpriorityclasses.kueue.x-k8s.io")
        self.jobs = informers.informer(self.jobs_rt)
        self.workloads = informers.informer(self.workloads_rt)
        self.pods = informers.informer(registry.lookup("pods"))
        self.priorities = informers.informer(self.priority_rt)
        self.watch(self.jobs, predicate=lambda _c, obj, _o: is_queued_job(obj))
        self.watch(self.workloads, self._job_of_workload, predicate=_workload_change_matters)
        # (namespace, Job name) -> names of the Workloads a Job of that name controls (any uid):
        # finding orphans costs what they are, not a scan of the namespace's Workloads.
        self._workloads_of_job: dict[ObjectKey, set[str]] = {}
        self.workloads.add_handler(self._index_workload)
        self.watch(self.pods, self._job_of_pod, predicate=lambda change, obj, _o: change == "DELETED"
                   or pod_is_finished(obj) or bool(obj["metadata"].get("deletionTimestamp")))

    @staticmethod
    def _job_of_workload(workload: Obj) -> list[ObjectKey]:
        meta = workload["metadata"]
        return [(meta.get("namespace") or "", ref["name"]) for ref in meta.get("ownerReferences") or []
                if ref.get("kind") == "Job" and ref.get("controller")]

    def _index_workload(self, change: str, workload: Obj, old: Obj | None) -> None:
        name = workload["metadata"]["name"]
        if old is not None:
            for key in self._job_of_workload(old):
                owned = self._workloads_of_job.get(key)
                if owned is not None:
                    owned.discard(name)
                    if not owned:
                        del self._workloads_of_job[key]
        if change != "DELETED":
            for key in self._job_of_workload(workload):
                self._workloads_of_job.setdefault(key, set()).add(name)

    def _job_of_pod(self, pod: Obj) -> list[ObjectKey]:
        meta = pod["metadata"]
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                job = self.jobs.get(ref["name"], meta.get("namespace"))
                return [(meta.get("namespace") or "", ref["name"])] if job is not None and is_queued_job(job) else []
        return []

    # ---- reconcile ----------------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Result | None:
        namespace, name = key
        job = self.jobs.get(name, namespace)
        await self._delete_orphans(namespace, name, job)
        if job is None or not is_queued_job(job) or job["metadata"].get("deletionTimestamp"):
            return None
        workload = self.workloads.get(workload_name(job), namespace)
        if workload is None:
            try:  # the cache may lag a deletion: never create a Workload for a Job that is gone
                job = await self.store.get(self.jobs_rt, name, namespace)
            except NotFoundError:
                return None
            if job["metadata"].get("deletionTimestamp") or not is_queued_job(job):
                return None
            if finished_condition(job) is None:
                if not (job.get("spec") or {}).get("suspend"):
                    await self._suspend(job)
                await self._create_workload(job)
            return None
        if finished_condition(job) is not None:
            await self._finish(workload, dict(finished_condition(job) or {}))
            return None
        if is_finished(workload):
            if not (job.get("spec") or {}).get("suspend"):
                await self._suspend(job)
            return None
        if is_running_admitted(workload):
            if (job.get("spec") or {}).get("suspend"):
                await self._start(job, workload)
            return None
        if not (job.get("spec") or {}).get("suspend"):
            await self._suspend(job)
            return None
        if _original_scheduling(job) is not None:
            if self._still_started(job):
                return None  # the pods' deletion and the Job's status update trigger the next look
            await self._restore_template(job)
            return None  # the Job update triggers the next look, which requeues
        if is_evicted(workload) and holds_quota(workload):
            if self._live_pods(job):
                return None  # their deletion triggers the next look
            await self._requeue(workload)
        return None

    # ---- the Workload ---------------------------------------------------------------------------

    async def _delete_orphans(self, namespace: str, name: str, job: Obj | None) -> None:
        """Workloads of an earlier Job of this name (or of one that is gone): the garbage collector's job,
        done here at once so that their quota is never held by nothing."""
        uid = job["metadata"]["uid"] if job is not None else None
        owned = (self.workloads.get(n, namespace) for n in sorted(self._workloads_of_job.get((namespace, name), ())))
        for workload in [w for w in owned if w is not None]:
            for ref in workload["metadata"].get("ownerReferences") or []:
                if ref.get("kind") == "Job" and ref.get("controller") and ref.get("name") == name \
                        and ref.get("uid") != uid:
                    if job is None:
                        with contextlib.suppress(NotFoundError):
                            await self.store.get(self.jobs_rt, name, namespace)
                            return  # the cache lags a new Job of this name: decide on the next look
                    with contextlib.suppress(NotFoundError, ConflictError):
                        await self.store.delete(self.workloads_rt, workload["metadata"]["name"], namespace,
                                                uid=workload["metadata"]["uid"])

    def _priority(self, job: Obj) -> tuple[int, str | None]:
        name = (job["metadata"].get("labels") or {}).get(PRIORITY_CLASS_LABEL)
        if not name:
            return 0, None
        found = self.priorities.get(name)
        return (int(found.get("value") or 0), name) if found is not None else (0, name)

    async def _create_workload(self, job: Obj) -> None:
        meta = job["metadata"]
        spec = job.get("spec") or {}
        priority, priority_class = self._priority(job)
        template = copy.deepcopy(spec.get("template") or {})
        original = _original_scheduling(job)
        if original is not None:  # a template we injected into must not become the request
            template.setdefault("spec", {}).update(_restored_fields(template.get("spec") or {}, original))
        workload_spec: dict[str, Any] = {
            "queueName": (meta.get("labels") or {})[QUEUE_LABEL],
            "podSets": [{"name": "main", "count": pod_count(spec), "template": template}],
            "priority": priority,
        }
        if priority_class:
            workload_spec.update(priorityClassName=priority_class, priorityClassSource=WORKLOAD_SOURCE)
        annotations = {DEPENDS_ON: meta["annotations"][DEPENDS_ON]} if DEPENDS_ON in (
            meta.get("annotations") or {}) else {}
        workload = {
            "apiVersion": KUEUE_API, "kind": "Workload",
            "metadata": {"name": workload_name(job), "namespace": meta.get("namespace") or "default",
                         "labels": {JOB_UID_LABEL: meta["uid"]},
                         **({"annotations": annotations} if annotations else {}),
                         "ownerReferences": [{"apiVersion": job.get("apiVersion", "batch/v1"), "kind": "Job",
                                              "name": meta["name"], "uid": meta["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": workload_spec,
        }
        try:
            created = await self.store.create(workload)
        except AlreadyExistsError:
            return
        created_meta = created["metadata"]
        await self.recorder.record(job, "Normal", "CreatedWorkload",
                                   f"Created Workload: {created_meta['namespace']}/{created_meta['name']}")

    async def _finish(self, workload: Obj, job_condition: dict[str, Any]) -> None:
        if is_finished(workload):
            return
        succeeded = job_condition.get("type") == "Complete"
        now = now_rfc3339(self.clock())
        status = dict(workload.get("status") or {})
        status["conditions"] = with_condition(
            conditions_of(workload), FINISHED, "True", "Succeeded" if succeeded else "Failed",
            job_condition.get("message") or ("Job finished successfully" if succeeded else "Job failed"), now)
        await self._write_status(workload, status)

    async def _requeue(self, workload: Obj) -> None:
        """The evicted workload's pods are gone: release its quota and queue it again later."""
        now = self.clock()
        stamp = now_rfc3339(now)
        status = dict(workload.get("status") or {})
        evicted = find_condition(conditions_of(workload), EVICTED) or {}
        reason = str(evicted.get("reason") or "Evicted")
        conditions = with_condition(conditions_of(workload), QUOTA_RESERVED, "False", "Pending",
                                    f"The workload was evicted: {evicted.get('message') or reason}", stamp)
        conditions = with_condition(conditions, ADMITTED, "False", "NoReservation", "The workload has no reservation",
                                    stamp)
        conditions = with_condition(conditions, REQUEUED, "True", reason, "The workload was requeued", stamp)
        count = int(((status.get("requeueState") or {}).get("count")) or 0) + 1
        delay = backoff_seconds(count, self.requeue_base, self.requeue_max)
        status.update(conditions=conditions, admission=None,
                      requeueState={"count": count, "requeueAt": now_rfc3339(now + timedelta(seconds=delay))})
        await self._write_status(workload, status)

    async def _write_status(self, workload: Obj, status: dict[str, Any]) -> None:
        try:
            await self.store.update_status({**workload, "status": status})
        except NotFoundError:
            return

    # ---- the Job --------------------------------------------------------------------------------

    def _live_pods(self, job: Obj) -> list[Obj]:
        uid = job["metadata"]["uid"]
        return [p for p in self.pods.list(job["metadata"].get("namespace") or "")
                if (p["metadata"].get("labels") or {}).get(CONTROLLER_UID_LABEL) == uid and not pod_is_finished(p)]

    async def _start(self, job: Obj, workload: Obj) -> None:
        flavors = self._flavors(workload)
        updated = copy.deepcopy(job)
        spec = updated["spec"]
        pod_spec = spec.setdefault("template", {}).setdefault("spec", {})
        annotations = updated["metadata"].setdefault("annotations", {})
        if ORIGINAL_SCHEDULING not in annotations:
            annotations[ORIGINAL_SCHEDULING] = json.dumps(
                {"nodeSelector": pod_spec.get("nodeSelector"), "tolerations": pod_spec.get("tolerations")},
                separators=(",", ":"))
        labels: dict[str, str] = {}
        tolerations: list[Obj] = list(pod_spec.get("tolerations") or [])
        for flavor in flavors:
            labels.update((flavor.get("spec") or {}).get("nodeLabels") or {})
            for toleration in (flavor.get("spec") or {}).get("tolerations") or []:
                if toleration not in tolerations:
                    tolerations.append(toleration)
        if labels:
            pod_spec["nodeSelector"] = {**(pod_spec.get("nodeSelector") or {}), **labels}
        if tolerations:
            pod_spec["tolerations"] = tolerations
        spec["suspend"] = False
        await self._update(updated)
        cq = ((workload.get("status") or {}).get("admission") or {}).get("clusterQueue")
        await self.recorder.record(job, "Normal", "Started", f'Admitted by clusterQueue {cq}')

    def _flavors(self, workload: Obj) -> list[Obj]:
        flavors_rt = self.store.registry.lookup("resourceflavors.kueue.x-k8s.io")
        informer = self.informers.informer(flavors_rt)
        names = {f for by_resource in admission_flavors(workload).values() for f in by_resource.values()}
        return [f for f in (informer.get(n) for n in sorted(names)) if f is not None]

    async def _suspend(self, job: Obj) -> None:
        """Only ``suspend: true``: a started Job's template cannot change in the same write."""
        updated = copy.deepcopy(job)
        updated.setdefault("spec", {})["suspend"] = True
        await self._update(updated)

    def _still_started(self, job: Obj) -> bool:
        """Whether the Job still counts as started, so that its template is immutable on Kubernetes."""
        status = job.get("status") or {}
        return bool(status.get("startTime")) or bool(status.get("active")) or bool(self._live_pods(job))

    async def _restore_template(self, job: Obj) -> None:
        """Put back the nodeSelector/tolerations the Job had before a flavor's were injected."""
        original = _original_scheduling(job)
        if original is None:
            return
        updated = copy.deepcopy(job)
        pod_spec = updated.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
        restored = _restored_fields(pod_spec, original)
        for field_name in ("nodeSelector", "tolerations"):
            if restored.get(field_name) is None:
                pod_spec.pop(field_name, None)
            else:
                pod_spec[field_name] = restored[field_name]
        updated["metadata"]["annotations"].pop(ORIGINAL_SCHEDULING, None)
        await self._update(updated)

    async def _update(self, job: Obj) -> None:
        try:
            await self.store.update(job)
        except NotFoundError:
            return
        except ConflictError:
            raise


def _workload_state(workload: Obj) -> tuple[object, ...]:
    """Everything of a Workload that the Job integration acts on."""
    status = workload.get("status") or {}
    return (workload["metadata"].get("uid"), holds_quota(workload), is_evicted(workload), is_finished(workload),
            status.get("admission"))


def _workload_change_matters(change: str, workload: Obj, old: Obj | None) -> bool:
    """Skip Workload updates the Job does not follow (a refreshed wait reason, an annotation): at scale
    they are most updates, and each would cost a reconcile."""
    return change != "MODIFIED" or old is None or old is workload or _workload_state(old) != _workload_state(workload)


def _original_scheduling(job: Obj) -> dict[str, Any] | None:
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(ORIGINAL_SCHEDULING)
    if not raw:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _restored_fields(pod_spec: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    return {"nodeSelector": original.get("nodeSelector"), "tolerations": original.get("tolerations")}
