"""The embedded Deployment controller: Deployment -> Pods, directly.

Kubernetes runs Deployments through ReplicaSets; Capstan's embedded controller has **no
ReplicaSets**. It owns Pods itself and tells templates apart by the ``pod-template-hash``
label (see ``capstan.core.workloads.deployment`` for the rollout rules and the differences
from Kubernetes this brings). Against a real cluster this controller is not run:
kube-controller-manager does the job.

Every reconcile reads the Deployment and its pods from the store (not the informer cache, which
may lag behind this controller's own writes) and converges, so repeats and restarts are safe:
pods are created with ``generateName`` and counted from what exists, never from memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from capstan.api.appsv1 import DeploymentStatus
from capstan.api.errors import ConflictError, NotFoundError
from capstan.api.selectors import LabelSelector
from capstan.controllers.events import EventRecorder, utcnow
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Controller, ObjectKey, Result, controller_owner
from capstan.core.workloads.deployment import plan_deployment, pod_for
from capstan.core.workloads.pods import PodRef, is_controlled_by
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)


class DeploymentController(Controller):
    name = "deployment"

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 clock: Callable[[], datetime] = utcnow, workers: int = 2) -> None:
        super().__init__(informers, workers=workers)
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.deployments_rt = store.registry.lookup("deployments")
        self.pods_rt = store.registry.lookup("pods")
        self.watch(informers.informer(self.deployments_rt))
        self.watch(informers.informer(self.pods_rt), controller_owner("Deployment"))

    async def reconcile(self, key: ObjectKey) -> Result | None:
        namespace, name = key
        try:
            deployment = await self.store.get(self.deployments_rt, name, namespace)
        except NotFoundError:
            return None  # its pods go with it (the store cascades; GC is the safety net)
        if deployment["metadata"].get("deletionTimestamp"):
            return None
        pods = await self._controlled_pods(deployment)
        plan = plan_deployment(deployment, pods, self.clock())

        for ref in plan.delete:
            await self._delete_pod(namespace, ref)
        for _ in range(plan.create):
            await self.store.create(pod_for(deployment, plan.template_hash))
        for event in plan.events:
            await self.recorder.record(deployment, "Warning" if event.type == "Warning" else "Normal",
                                       event.reason, event.message)
        await self._write_status(deployment, dict(plan.status))
        return Result(plan.requeue_after) if plan.requeue_after is not None else None

    async def _controlled_pods(self, deployment: Obj) -> list[Obj]:
        meta = deployment["metadata"]
        selector = LabelSelector.from_model(deployment["spec"].get("selector"))
        listed = await self.store.list(self.pods_rt, meta.get("namespace"), label_selector=str(selector))
        return [pod for pod in listed.items if is_controlled_by(pod, meta["uid"])]

    async def _delete_pod(self, namespace: str, ref: PodRef) -> None:
        # Already gone, or the name now belongs to another pod: nothing to do either way.
        with contextlib.suppress(NotFoundError, ConflictError):
            await self.store.delete(self.pods_rt, ref.name, namespace, uid=ref.uid)

    async def _write_status(self, deployment: Obj, status: dict[str, Any]) -> None:
        wanted = DeploymentStatus.model_validate(status).to_wire()
        if wanted == (deployment.get("status") or {}):
            return
        await self.store.update_status({**deployment, "status": wanted})
