"""Everything embedded mode runs besides the API: the parts Kubernetes would otherwise provide
(Deployment/Job controllers, garbage collector, scheduler, node registration, the kubelet-like
node agent), wired onto one store and one set of shared informers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from capstan.controllers.autoscaling import AutoscalingOptions, add_autoscaling
from capstan.controllers.autoscaling.pod_metrics import ProcessPodMetrics
from capstan.controllers.autoscaling.triggers import AuthOptions
from capstan.controllers.batch import add_batch_controllers
from capstan.controllers.deployment import DeploymentController
from capstan.controllers.events import EventRecorder
from capstan.controllers.gc import GarbageCollector
from capstan.controllers.informer import InformerFactory
from capstan.controllers.job import JobController
from capstan.controllers.node import NodeRegistrar
from capstan.controllers.nodeagent import NodeAgent
from capstan.controllers.runtime import Manager
from capstan.controllers.scheduler import Scheduler
from capstan.runtime.process import ProcessRuntime
from capstan.store.base import Store

RESYNC_SECONDS = 300.0


@dataclass(frozen=True)
class EmbeddedOptions:
    data_dir: Path
    node_name: str | None = None
    cpu: str | None = None
    memory: str | None = None
    extended_resources: Mapping[str, int] = field(default_factory=dict)
    keep_workloads: bool = False

    @property
    def pods_root(self) -> Path:
        return self.data_dir / "pods"

    @property
    def runtime_dir(self) -> Path:
        return self.data_dir / "runtime"


async def build_embedded(store: Store, options: EmbeddedOptions) -> Manager:
    """Register the node and assemble the embedded controllers; ``Manager.run`` runs them."""
    # A periodic resync re-examines every object now and then, a safety net for anything a
    # level-triggered reconcile could miss (a clock-based condition nobody requeued for).
    informers = InformerFactory(store, resync_period=RESYNC_SECONDS)
    registrar = NodeRegistrar(store, node_name=options.node_name, cpu=options.cpu, memory=options.memory,
                              extended_resources=options.extended_resources)
    await registrar.register()
    node_name = registrar.node_name
    runtime = ProcessRuntime(options.runtime_dir, options.pods_root)

    def recorder(component: str) -> EventRecorder:
        return EventRecorder(store, component, host=node_name)

    manager = Manager(informers)
    manager.add(registrar)
    manager.add(DeploymentController(informers, store, recorder("deployment-controller")))
    manager.add(JobController(informers, store, recorder("job-controller")))
    manager.add(GarbageCollector(informers, store, recorder("garbage-collector")))
    manager.add(Scheduler(informers, store, recorder("default-scheduler"), node_name=node_name))
    add_batch_controllers(manager, informers, store, recorder)
    manager.add(NodeAgent(informers, store, recorder("kubelet"), runtime, node_name=node_name,
                          keep_workloads=options.keep_workloads))
    add_autoscaling(manager, informers, store, recorder, AutoscalingOptions(
        auth=AuthOptions(file_auth_root=options.data_dir / "trigger-auth"),
        pod_metrics=ProcessPodMetrics(store, runtime)))
    return manager
