"""A tiny controller stand-in for queueing-core tests: applies each cycle's decisions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from capstan.core.scheduling.queueing import (
    AdmittedWorkload,
    ClusterQueueConfig,
    CohortConfig,
    CycleResult,
    Flavor,
    FlavorQuotas,
    NodeCapacity,
    PodSet,
    ResourceGroup,
    ResourceQuota,
    SchedulerMemory,
    Settings,
    Snapshot,
    Workload,
    schedule,
)

CPU = 1000  # one core in millicores


def queue(name: str, flavors: Mapping[str, int | ResourceQuota], cohort: str | None = None,
          resource: str = "cpu", **kwargs: object) -> ClusterQueueConfig:
    """A ClusterQueue with one resource group covering ``resource`` (amounts in cores)."""
    quotas = tuple(FlavorQuotas.of(f, {resource: _scale(q)}) for f, q in flavors.items())
    return ClusterQueueConfig(name, (ResourceGroup((resource,), quotas),), cohort=cohort, **kwargs)  # type: ignore[arg-type]


def cohort(name: str, parent: str | None = None, flavors: Mapping[str, int | ResourceQuota] | None = None,
           **kwargs: object) -> CohortConfig:
    groups = ()
    if flavors:
        groups = (ResourceGroup(("cpu",), tuple(FlavorQuotas.of(f, {"cpu": _scale(q)}) for f, q in flavors.items())),)
    return CohortConfig(name, parent, groups, **kwargs)  # type: ignore[arg-type]


def _scale(q: int | ResourceQuota) -> ResourceQuota:
    if isinstance(q, ResourceQuota):
        return ResourceQuota(q.nominal * CPU, None if q.borrowing_limit is None else q.borrowing_limit * CPU,
                             None if q.lending_limit is None else q.lending_limit * CPU)
    return ResourceQuota(q * CPU)


def job(key: str, cq: str, cpu: float, priority: int = 0, created: float = 0.0, count: int = 1,
        **kwargs: object) -> Workload:
    return Workload(key, cq, (PodSet("main", count, {"cpu": int(cpu * CPU)}),), priority, created, **kwargs)  # type: ignore[arg-type]


@dataclass
class Sim:
    queues: tuple[ClusterQueueConfig, ...]
    flavors: tuple[Flavor | str, ...] = ("default",)
    cohorts: tuple[CohortConfig, ...] = ()
    settings: Settings = field(default_factory=Settings)
    nodes: tuple[NodeCapacity, ...] | None = None
    pending: dict[str, Workload] = field(default_factory=dict)
    admitted: dict[str, AdmittedWorkload] = field(default_factory=dict)
    memory: SchedulerMemory | None = None
    use_memory: bool = True
    history: list[CycleResult] = field(default_factory=list)

    def submit(self, *workloads: Workload) -> None:
        for w in workloads:
            self.pending[w.key] = w

    def finish(self, *keys: str) -> None:
        for key in keys:
            del self.admitted[key]

    def snapshot(self) -> Snapshot:
        return Snapshot.build(self.queues, self.flavors, tuple(self.pending.values()), tuple(self.admitted.values()),
                              self.cohorts, settings=self.settings, nodes=self.nodes,
                              memory=self.memory if self.use_memory else None)

    def cycle(self, now: float = 0.0) -> CycleResult:
        result = schedule(self.snapshot(), now)
        self.history.append(result)
        self.memory = result.memory
        for admission in result.admissions:
            workload = self.pending.pop(admission.workload)
            self.admitted[workload.key] = AdmittedWorkload(workload, admission.assignments, now,
                                                           preempted=admission.preempted)
        for preemption in result.preemptions:  # the controller evicts at once in this stand-in
            victim = self.admitted.pop(preemption.victim)
            self.pending[victim.key] = victim.workload
        return result

    def usage(self, cq: str) -> int:
        return sum(a.usage().get(("default", "cpu"), 0) for a in self.admitted.values()
                   if a.workload.cluster_queue == cq) // CPU


def keys(items: Iterable[object], attr: str = "workload") -> list[str]:
    return [getattr(i, attr) for i in items]


def with_created(workload: Workload, created: float) -> Workload:
    return replace(workload, created=created)
