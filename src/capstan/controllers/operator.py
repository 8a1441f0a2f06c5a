"""Which controllers run in Kubernetes mode (``capstan operator``) and how they run together.

On a real cluster Kubernetes itself provides what embedded mode builds in: kube-controller-manager runs
the Deployment and Job controllers and the garbage collector, kube-scheduler places Pods, and kubelets
register Nodes and run Pods. The operator runs only what Kubernetes lacks: Capstan's own controllers for
the keda.sh and kueue.x-k8s.io kinds. ``OPERATOR_CONTROLLERS`` is that list: one ``ControllerSpec`` line per
controller (or family), each a name and a function that adds its controllers to the ``OperatorContext``'s
manager, the same ``add_*`` functions embedded mode calls.

``run_controllers`` runs informers and controllers as children of one task group, so cancelling it (the
leader elector does so the moment the Lease is lost) cancels every one of them at once, mid-reconcile;
setting ``stop`` instead ends them gracefully.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from capstan.controllers.autoscaling import AutoscalingOptions, add_autoscaling
from capstan.controllers.autoscaling.pod_metrics import kube_pod_metrics
from capstan.controllers.autoscaling.triggers import AuthOptions
from capstan.controllers.batch import AdmissionOptions, add_batch_controllers
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Manager, Runnable
from capstan.store.base import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorOptions:
    namespace: str = "capstan-system"
    """The operator's own namespace: its Lease, and the Secrets of ClusterTriggerAuthentications."""


@dataclass(frozen=True)
class OperatorContext:
    """What a controller factory gets: one store, informers shared by all controllers, options, and the
    manager to add its controllers to."""

    store: Store
    informers: InformerFactory
    manager: Manager
    options: OperatorOptions

    def recorder(self, component: str) -> EventRecorder:
        return EventRecorder(self.store, component)

    def autoscaling_options(self) -> AutoscalingOptions:
        # No filePath authentication (no shared directory); cpu and memory triggers read metrics.k8s.io.
        return AutoscalingOptions(auth=AuthOptions(cluster_object_namespace=self.options.namespace),
                                  pod_metrics=kube_pod_metrics(self.store))


ControllerFactory = Callable[[OperatorContext], object]
"""Adds its controllers to ``context.manager`` (what it returns is ignored)."""


@dataclass(frozen=True)
class ControllerSpec:
    name: str
    build: ControllerFactory


OPERATOR_CONTROLLERS: tuple[ControllerSpec, ...] = (
    ControllerSpec("autoscaling", lambda c: add_autoscaling(c.manager, c.informers, c.store, c.recorder,
                                                            c.autoscaling_options())),
    # Quota only, as Kueue: kube-scheduler places the pods, so node capacity is not checked at admission.
    ControllerSpec("batch", lambda c: add_batch_controllers(c.manager, c.informers, c.store, c.recorder,
                                                            options=AdmissionOptions(physical_fit=False))),
)
"""Everything ``capstan operator`` runs. Never the embedded-only Deployment/Job controllers, garbage
collector, scheduler, node registrar or node agent: Kubernetes runs its own."""


def build_controllers(store: Store, options: OperatorOptions,
                      specs: Iterable[ControllerSpec] = OPERATOR_CONTROLLERS,
                      ) -> tuple[InformerFactory, list[Runnable]]:
    """Fresh informers and controllers (one set per term of leadership: no cache outlives a term)."""
    informers = InformerFactory(store)
    context = OperatorContext(store=store, informers=informers, manager=Manager(informers), options=options)
    for spec in specs:
        spec.build(context)
    return informers, list(context.manager.runnables)


async def run_controllers(store: Store, options: OperatorOptions, stop: asyncio.Event,
                          specs: Iterable[ControllerSpec] = OPERATOR_CONTROLLERS) -> None:
    """Run ``specs`` until ``stop`` is set. Cancelling this coroutine cancels every informer and
    controller before it returns."""
    specs = list(specs)
    informers, runnables = build_controllers(store, options, specs)
    log.info("operator: starting controllers: %s", ", ".join(spec.name for spec in specs) or "(none)")
    async with asyncio.TaskGroup() as group:
        group.create_task(stop.wait(), name="until-stopped")  # the group lives until stop, even when empty
        for informer in informers.all():
            group.create_task(informer.run(stop), name=f"informer-{informer.rt.plural}")
        for runnable in runnables:
            group.create_task(runnable.run(stop), name=getattr(runnable, "name", type(runnable).__name__))
