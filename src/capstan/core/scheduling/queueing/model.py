"""Frozen records in and out of the queueing core.

Amounts are integers in each resource's accounting unit (millicores for cpu, bytes for memory,
units otherwise; see :func:`capstan.api.quantity.resource_amount`). A flavor-resource pair
``(flavor, resource)`` is the unit of quota accounting.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from capstan.api.quantity import format_amount, resource_amount

FlavorResource = tuple[str, str]
QueueingStrategy = Literal["StrictFIFO", "BestEffortFIFO"]
StopPolicy = Literal["None", "Hold", "HoldAndDrain"]
WithinPolicy = Literal["Never", "LowerPriority", "LowerOrNewerEqualPriority"]
ReclaimPolicy = Literal["Never", "LowerPriority", "Any"]
BorrowPolicy = Literal["Never", "LowerPriority"]
FungibilityPolicy = Literal["MayStopSearch", "Borrow", "Preempt", "TryNextFlavor"]
FairSharingStrategy = Literal["LessThanOrEqualToFinalShare", "LessThanInitialShare"]


class Amounts(Mapping[str, int]):
    """An immutable, hashable resource -> amount mapping."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, int] | None = None, /, **amounts: int) -> None:
        merged = {**(items or {}), **amounts}
        self._items: dict[str, int] = {k: int(v) for k, v in sorted(merged.items())}
        self._hash = hash(tuple(self._items.items()))

    @classmethod
    def of(cls, quantities: Mapping[str, str | int | float]) -> Amounts:
        """Parse Kubernetes quantities ("500m", "2Gi") into accounting units."""
        return cls({name: resource_amount(name, value) for name, value in quantities.items()})

    def __getitem__(self, key: str) -> int:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Amounts):
            return self._items == other._items
        return isinstance(other, Mapping) and self._items == dict(other)

    def __repr__(self) -> str:
        return f"Amounts({self._items!r})"

    def scaled(self, factor: int) -> Amounts:
        return Amounts({k: v * factor for k, v in self._items.items()})


def _amounts(value: Mapping[str, int]) -> Amounts:
    return value if isinstance(value, Amounts) else Amounts(value)


def _freeze_labels(value: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(value.items()))


def fmt(resource: str, amount: int) -> str:
    """An amount as Kubernetes would print it ("1500m", "2Gi", "3")."""
    return format_amount(resource, amount)


# ---- configuration -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ResourceQuota:
    """Quota of one resource in one flavor. ``None`` limits mean unlimited borrowing / all lendable."""

    nominal: int
    borrowing_limit: int | None = None
    lending_limit: int | None = None


@dataclass(frozen=True, slots=True)
class FlavorQuotas:
    name: str
    resources: tuple[tuple[str, ResourceQuota], ...]

    @staticmethod
    def of(name: str, quotas: Mapping[str, ResourceQuota | int]) -> FlavorQuotas:
        items = tuple((res, q if isinstance(q, ResourceQuota) else ResourceQuota(q)) for res, q in quotas.items())
        return FlavorQuotas(name, items)


@dataclass(frozen=True, slots=True)
class ResourceGroup:
    covered_resources: tuple[str, ...]
    flavors: tuple[FlavorQuotas, ...]


@dataclass(frozen=True, slots=True)
class Preemption:
    """ClusterQueue.spec.preemption."""

    within_cluster_queue: WithinPolicy = "Never"
    reclaim_within_cohort: ReclaimPolicy = "Never"
    borrow_within_cohort: BorrowPolicy = "Never"
    max_priority_threshold: int | None = None


@dataclass(frozen=True, slots=True)
class FlavorFungibility:
    """``Borrow`` and ``Preempt`` are the v1beta1 spellings of ``MayStopSearch``."""

    when_can_borrow: FungibilityPolicy = "MayStopSearch"
    when_can_preempt: FungibilityPolicy = "TryNextFlavor"


@dataclass(frozen=True, slots=True)
class ClusterQueueConfig:
    name: str
    resource_groups: tuple[ResourceGroup, ...] = ()
    cohort: str | None = None
    queueing_strategy: QueueingStrategy = "BestEffortFIFO"
    preemption: Preemption = Preemption()
    flavor_fungibility: FlavorFungibility = FlavorFungibility()
    fair_weight: float = 1.0
    stop_policy: StopPolicy = "None"


@dataclass(frozen=True, slots=True)
class CohortConfig:
    """A Cohort object: a node of the cohort tree that may hold its own quota."""

    name: str
    parent: str | None = None
    resource_groups: tuple[ResourceGroup, ...] = ()
    fair_weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


@dataclass(frozen=True, slots=True)
class Flavor:
    """A ResourceFlavor as the core needs it."""

    name: str
    node_labels: tuple[tuple[str, str], ...] = ()
    node_taints: tuple[Taint, ...] = ()

    @staticmethod
    def of(name: str, node_labels: Mapping[str, str] | None = None, node_taints: tuple[Taint, ...] = ()) -> Flavor:
        return Flavor(name, _freeze_labels(node_labels or {}), node_taints)


# ---- workloads ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PodSet:
    """``count`` identical pods, each requesting ``requests``."""

    name: str
    count: int
    requests: Mapping[str, int]
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "requests", _amounts(self.requests))

    @property
    def total(self) -> Amounts:
        return _amounts(self.requests).scaled(self.count)


@dataclass(frozen=True, slots=True)
class Workload:
    """A pending workload. ``created`` orders equal priorities (Kueue: creation or eviction time).

    ``not_ready`` holds why the workload may not be admitted yet (e.g. unfinished dependencies);
    ``requeue_at`` delays it (eviction backoff). Both are set by the controller.
    """

    key: str
    cluster_queue: str
    pod_sets: tuple[PodSet, ...]
    priority: int = 0
    created: float = 0.0
    local_queue: str = ""
    not_ready: str | None = None
    requeue_at: float | None = None
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Hashed every cycle (settled-workload fingerprints): computed once.
        object.__setattr__(self, "_hash", hash((self.key, self.cluster_queue, self.pod_sets, self.priority,
                                                self.created, self.local_queue, self.not_ready, self.requeue_at)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class PodSetAssignment:
    name: str
    count: int
    flavors: tuple[tuple[str, str], ...]  # (resource, flavor)
    usage: Mapping[str, int]  # total over the pod set's pods

    def __post_init__(self) -> None:
        object.__setattr__(self, "usage", _amounts(self.usage))

    @property
    def flavor_of(self) -> dict[str, str]:
        return dict(self.flavors)


@dataclass(frozen=True, slots=True)
class AdmittedWorkload:
    """A workload holding quota. ``evicting``: eviction issued, quota not yet released.

    ``preempted`` names the workloads that were preempted to admit this one; they may never
    preempt it back (the loop guard). The core reports it in :class:`Admission`; persisting it is
    optional because the core also remembers it in :class:`SchedulerMemory`.
    """

    workload: Workload
    assignments: tuple[PodSetAssignment, ...]
    admitted_at: float = 0.0
    evicting: bool = False
    preempted: frozenset[str] = frozenset()
    _usage: dict[FlavorResource, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = self._usage  # computed once: every cycle adds every admitted workload's usage
        for assignment in self.assignments:
            flavors = assignment.flavor_of
            for resource, amount in assignment.usage.items():
                fr = (flavors.get(resource, ""), resource)
                total[fr] = total.get(fr, 0) + amount

    @property
    def key(self) -> str:
        return self.workload.key

    def usage(self) -> dict[FlavorResource, int]:
        return dict(self._usage)


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """Free resources on one node (allocatable minus everything running or admitted there)."""

    name: str
    free: Mapping[str, int]
    labels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "free", _amounts(self.free))


@dataclass(frozen=True, slots=True)
class Settings:
    fair_sharing: bool = False
    fair_sharing_strategies: tuple[FairSharingStrategy, ...] = ("LessThanOrEqualToFinalShare",
                                                                "LessThanInitialShare")
    wait_reason_ahead_sample: int = 3


@dataclass(frozen=True)
class SchedulerMemory:
    """What one cycle hands to the next (pass ``result.memory`` back in the next snapshot).

    * ``settled``: per cohort-tree root, the fingerprint of the tree's quota state and the workloads
      found inadmissible in exactly that state (with their reasons). While the fingerprint is
      unchanged they are not evaluated again (Kueue issue 9715).
    * ``nominated``: preemptor -> victims it is waiting for.
    * ``guards``: admitted workload -> workloads it preempted (the loop guard).
    """

    settled: Mapping[str, tuple[int, Mapping[str, tuple[int, Reason]]]] = field(default_factory=dict)
    nominated: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    guards: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    cluster_queues: Mapping[str, ClusterQueueConfig]
    flavors: Mapping[str, Flavor]
    pending: tuple[Workload, ...] = ()
    admitted: tuple[AdmittedWorkload, ...] = ()
    cohorts: Mapping[str, CohortConfig] = field(default_factory=dict)
    nodes: tuple[NodeCapacity, ...] | None = None
    local_queue_stop_policies: Mapping[str, StopPolicy] = field(default_factory=dict)
    settings: Settings = Settings()
    memory: SchedulerMemory | None = None

    @staticmethod
    def build(cluster_queues: tuple[ClusterQueueConfig, ...], flavors: tuple[Flavor, ...] | tuple[str, ...],
              pending: tuple[Workload, ...] = (), admitted: tuple[AdmittedWorkload, ...] = (),
              cohorts: tuple[CohortConfig, ...] = (), **kwargs: object) -> Snapshot:
        """Convenience: lists instead of name-keyed mappings; plain flavor names allowed."""
        flavor_map = {f.name if isinstance(f, Flavor) else f: f if isinstance(f, Flavor) else Flavor(f)
                      for f in flavors}
        return Snapshot({cq.name: cq for cq in cluster_queues}, flavor_map, pending, admitted,
                        {c.name: c for c in cohorts}, **kwargs)  # type: ignore[arg-type]


# ---- results --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Shortage:
    """One flavor-resource that is short: requested vs available now, and what limits it."""

    flavor: str
    resource: str
    requested: int
    available: int
    limited_by: str

    @property
    def short_by(self) -> int:
        return self.requested - self.available

    def describe(self) -> str:
        r = self.resource
        return (f'{r} in flavor "{self.flavor}": requested {fmt(r, self.requested)}, available '
                f"{fmt(r, self.available)}, short by {fmt(r, self.short_by)} ({self.limited_by})")


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a workload is not admitted. ``code`` is machine-readable; ``message`` is for people.

    Codes: InsufficientQuota, ExceedsMaxQuota, NoMatchingFlavor, PreemptionPending,
    BlockedByStrictFIFO, WaitingForCapacity, NotReady, Backoff, ClusterQueueStopped,
    LocalQueueStopped, ClusterQueueNotFound, Misconfigured, PreemptionInProgress.
    """

    code: str
    message: str
    shortages: tuple[Shortage, ...] = ()


@dataclass(frozen=True, slots=True)
class WaitReason:
    workload: str
    cluster_queue: str
    position: int | None  # 0-based in its ClusterQueue's order; None when not queued (not ready)
    reason: Reason
    higher_priority_ahead: int = 0
    ahead_sample: tuple[str, ...] = ()

    @property
    def code(self) -> str:
        return self.reason.code

    @property
    def message(self) -> str:
        return self.reason.message

    def describe(self) -> str:
        if self.position is None:
            return self.reason.message
        where = f'position {self.position + 1} in ClusterQueue "{self.cluster_queue}"'
        if self.higher_priority_ahead:
            where += (f" ({self.higher_priority_ahead} higher-priority workload(s) ahead, first: "
                      f"{', '.join(self.ahead_sample)})")
        return f"{where}: {self.reason.message}"


@dataclass(frozen=True, slots=True)
class Admission:
    workload: str
    cluster_queue: str
    assignments: tuple[PodSetAssignment, ...]
    borrowing: bool
    preempted: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PreemptionDecision:
    """Evict ``victim`` so that ``preemptor`` can be admitted. ``reason`` uses Kueue's names."""

    victim: str
    victim_cluster_queue: str
    preemptor: str
    preemptor_cluster_queue: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Eviction:
    """Evict for a reason other than preemption (ClusterQueueStopped, LocalQueueStopped)."""

    workload: str
    cluster_queue: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """ClusterQueue status after this cycle's admissions (Kueue's status fields)."""

    pending: int
    reserving: int
    usage: Mapping[FlavorResource, int]
    borrowed: Mapping[FlavorResource, int]
    weighted_share: int


@dataclass(frozen=True)
class CycleResult:
    admissions: tuple[Admission, ...]
    preemptions: tuple[PreemptionDecision, ...]
    evictions: tuple[Eviction, ...]
    waiting: Mapping[str, WaitReason]
    queues: Mapping[str, QueueFigures]
    memory: SchedulerMemory
    evaluated: int = 0  # workloads whose flavors were actually assigned this cycle (for benchmarks)
