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

from capstan.api.appsv1 import DeploymentStatus
from capstan.api.selectors import LabelSelector
from capstan.controllers.podowner import PodOwnerController
from capstan.controllers.runtime import ObjectKey, Result
from capstan.core.workloads.deployment import plan_deployment, pod_for


class DeploymentController(PodOwnerController):
    name = "deployment"
    owner_plural = "deployments"
    owner_kind = "Deployment"
    status_model = DeploymentStatus

    async def reconcile(self, key: ObjectKey) -> Result | None:
        namespace, name = key
        deployment = await self.load_owner(namespace, name)
        if deployment is None:
            return None
        selector = LabelSelector.from_model(deployment["spec"].get("selector"))
        pods = await self.controlled_pods(deployment, str(selector))
        plan = plan_deployment(deployment, pods, self.clock())
        await self.delete_pods(namespace, plan.delete)
        for _ in range(plan.create):
            await self.store.create(pod_for(deployment, plan.template_hash))
        await self.record_events(deployment, plan.events)
        await self.write_status(deployment, dict(plan.status))
        return Result(plan.requeue_after) if plan.requeue_after is not None else None
