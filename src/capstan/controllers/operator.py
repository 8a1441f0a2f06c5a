"""Which controllers run in Kubernetes mode (``capstan operator``) and how they run together.

On a real cluster Kubernetes itself provides what embedded mode builds in: kube-controller-manager runs
the Deployment and Job controllers and the garbage collector, kube-scheduler places Pods, and kubelets
register Nodes and run Pods. The operator runs only what Kubernetes lacks: Capstan's own controllers for
the keda.sh and kueue.x-k8s.io kinds. ``OPERATOR_CONTROLLERS`` is that list: one ``ControllerSpec`` line per
controller, each a name and a factory taking the ``OperatorContext`` (store, shared informers, Event
recorders, options).

``run_controllers`` runs informers and controllers as children of one task group, so cancelling it (the
leader elector does so the moment the Lease is lost) cancels every one of them at once, mid-reconcile;
setting ``stop`` instead ends them gracefully.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Runnable
from capstan.store.base import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorOptions:
    namespace: str = "capstan-system"
    """The operator's own namespace: its Lease, and the Secrets of ClusterTriggerAuthentications."""


@dataclass(frozen=True)
class OperatorContext:
    """What a controller factory gets: one store, informers shared by all controllers, options."""

    store: Store
    informers: InformerFactory
    options: OperatorOptions

    def recorder(self, component: str) -> EventRecorder:
        return EventRecorder(self.store, component)


ControllerFactory = Callable[[OperatorContext], Runnable]


@dataclass(frozen=True)
class ControllerSpec:
    name: str
    build: ControllerFactory


OPERATOR_CONTROLLERS: tuple[ControllerSpec, ...] = (
    # One line per controller, e.g.
    # ControllerSpec("batch-job", lambda c: JobIntegration(c.informers, c.store, c.recorder("kueue-job"))),
)
"""Everything ``capstan operator`` runs. Never the embedded-only Deployment/Job controllers, garbage
collector, scheduler, node registrar or node agent: Kubernetes runs its own."""


def build_controllers(store: Store, options: OperatorOptions,
                      specs: Iterable[ControllerSpec] = OPERATOR_CONTROLLERS,
                      ) -> tuple[InformerFactory, list[Runnable]]:
    """Fresh informers and controllers (one set per term of leadership: no cache outlives a term)."""
    context = OperatorContext(store=store, informers=InformerFactory(store), options=options)
    return context.informers, [spec.build(context) for spec in specs]


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
        for spec, runnable in zip(specs, runnables, strict=True):
            group.create_task(runnable.run(stop), name=spec.name)
