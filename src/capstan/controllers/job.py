"""The embedded Job controller: Job -> Pods, conditions, deadlines, suspension and TTL.

Against a real cluster kube-controller-manager does this. Every reconcile reads the Job and
all the pods it controls (finished ones included; they are kept, as Kubernetes keeps them) from
the store and derives the counts from them, so a restart neither loses nor double-counts a
finished pod (see ``capstan.core.workloads.job``).
"""

from __future__ import annotations

import logging

from capstan.api.batchv1 import JobStatus
from capstan.api.errors import ConflictError, NotFoundError
from capstan.controllers.podowner import PodOwnerController
from capstan.controllers.runtime import ObjectKey, Result
from capstan.core.workloads.job import CONTROLLER_UID_LABEL, plan_job, pod_for
from capstan.store.base import Obj

log = logging.getLogger(__name__)


class JobController(PodOwnerController):
    name = "job"
    owner_plural = "jobs"
    owner_kind = "Job"
    status_model = JobStatus

    async def reconcile(self, key: ObjectKey) -> Result | None:
        namespace, name = key
        job = await self.load_owner(namespace, name)
        if job is None:
            return None
        pods = await self.controlled_pods(job, f"{CONTROLLER_UID_LABEL}={job['metadata']['uid']}")
        plan = plan_job(job, pods, self.clock())

        if plan.delete_job:
            await self._delete_expired(job)
            return None
        await self.delete_pods(namespace, plan.delete)
        for _ in range(plan.create):
            created = await self.store.create(pod_for(job))
            await self.recorder.record(job, "Normal", "SuccessfulCreate",
                                       f"Created pod: {created['metadata']['name']}")
        if plan.status is not None:
            await self.write_status(job, dict(plan.status))
        await self.record_events(job, plan.events)
        return Result(plan.requeue_after) if plan.requeue_after is not None else None

    async def _delete_expired(self, job: Obj) -> None:
        meta = job["metadata"]
        try:
            await self.store.delete(self.owner_rt, meta["name"], meta.get("namespace"),
                                    propagation_policy="Background", uid=meta["uid"])
        except (NotFoundError, ConflictError):
            return
        log.info("deleted finished job %s/%s after its TTL", meta.get("namespace"), meta["name"])
