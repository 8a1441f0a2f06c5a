"""The embedded Job controller: Job -> Pods, conditions, deadlines, suspension and TTL.

Against a real cluster kube-controller-manager does this. Every reconcile reads the Job and
all the pods it controls (finished ones included; they are kept, as Kubernetes keeps them) from
the store and derives the counts from them, so a restart neither loses nor double-counts a
finished pod (see ``capstan.core.workloads.job``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from capstan.api.batchv1 import JobStatus
from capstan.api.errors import ConflictError, NotFoundError
from capstan.controllers.events import EventRecorder, utcnow
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Controller, ObjectKey, Result, controller_owner
from capstan.core.workloads.job import CONTROLLER_UID_LABEL, plan_job, pod_for
from capstan.core.workloads.pods import PodRef, is_controlled_by
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)


class JobController(Controller):
    name = "job"

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 clock: Callable[[], datetime] = utcnow, workers: int = 2) -> None:
        super().__init__(informers, workers=workers)
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.jobs_rt = store.registry.lookup("jobs")
        self.pods_rt = store.registry.lookup("pods")
        self.watch(informers.informer(self.jobs_rt))
        self.watch(informers.informer(self.pods_rt), controller_owner("Job"))

    async def reconcile(self, key: ObjectKey) -> Result | None:
        namespace, name = key
        try:
            job = await self.store.get(self.jobs_rt, name, namespace)
        except NotFoundError:
            return None
        if job["metadata"].get("deletionTimestamp"):
            return None
        pods = await self._controlled_pods(job)
        plan = plan_job(job, pods, self.clock())

        if plan.delete_job:
            await self._delete_expired(job)
            return None
        for ref in plan.delete:
            await self._delete_pod(namespace, ref)
        for _ in range(plan.create):
            created = await self.store.create(pod_for(job))
            await self.recorder.record(job, "Normal", "SuccessfulCreate",
                                       f"Created pod: {created['metadata']['name']}")
        if plan.status is not None:
            await self._write_status(job, dict(plan.status))
        for event in plan.events:
            await self.recorder.record(job, "Warning" if event.type == "Warning" else "Normal",
                                       event.reason, event.message)
        return Result(plan.requeue_after) if plan.requeue_after is not None else None

    async def _controlled_pods(self, job: Obj) -> list[Obj]:
        meta = job["metadata"]
        listed = await self.store.list(self.pods_rt, meta.get("namespace"),
                                       label_selector=f"{CONTROLLER_UID_LABEL}={meta['uid']}")
        return [pod for pod in listed.items if is_controlled_by(pod, meta["uid"])]

    async def _delete_pod(self, namespace: str, ref: PodRef) -> None:
        # Already gone, or the name now belongs to another pod: nothing to do either way.
        with contextlib.suppress(NotFoundError, ConflictError):
            await self.store.delete(self.pods_rt, ref.name, namespace, uid=ref.uid)

    async def _delete_expired(self, job: Obj) -> None:
        meta = job["metadata"]
        try:
            await self.store.delete(self.jobs_rt, meta["name"], meta.get("namespace"),
                                    propagation_policy="Background", uid=meta["uid"])
        except (NotFoundError, ConflictError):
            return
        log.info("deleted finished job %s/%s after its TTL", meta.get("namespace"), meta["name"])

    async def _write_status(self, job: Obj, status: dict[str, Any]) -> None:
        wanted = JobStatus.model_validate(status).to_wire()
        if wanted == (job.get("status") or {}):
            return
        await self.store.update_status({**job, "status": wanted})
