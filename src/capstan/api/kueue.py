"""kueue.x-k8s.io: ResourceFlavor, ClusterQueue, Cohort, LocalQueue, Workload, WorkloadPriorityClass.

Field names follow Kueue's v1beta1 API. The same models also serve v1beta2, which renamed a few
fields; both spellings are accepted under either version and the ``effective_*`` helpers read
whichever is set:

* ClusterQueue ``spec.cohort`` (v1beta1) became ``spec.cohortName`` (v1beta2);
* flavorFungibility ``Borrow`` / ``Preempt`` (v1beta1) became ``MayStopSearch`` (both versions
  accept ``MayStopSearch``; v1beta2 only that);
* Workload ``spec.priorityClassName`` + ``spec.priorityClassSource`` (v1beta1) became
  ``spec.priorityClassRef {group, kind, name}`` (v1beta2);
* LocalQueue ``status.flavorUsage`` (v1beta1) became ``status.flavorsUsage`` (v1beta2);
* Workload ``status.accumulatedPastExexcutionTimeSeconds`` (v1beta1 typo) became
  ``accumulatedPastExecutionTimeSeconds``.

Cohort uses ``spec.parentName`` in both versions.

Validation mirrors Kueue's webhooks and reports Kubernetes-style field paths, for example
``spec.resourceGroups[0].flavors[0].resources[0].borrowingLimit: must be nil when cohort is empty``.
Checks that need other objects (does each named flavor exist?) are pure functions here that the
controller calls: :func:`unknown_flavor_causes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from capstan.api.base import Condition, KubeModel, LabelSelector, Resource
from capstan.api.celrules import CrossFieldRule, cel_validations
from capstan.api.corev1 import PodTemplateSpec, Quantity, Taint, Toleration
from capstan.api.errors import Cause
from capstan.api.quantity import QuantityError, SchemaQuantity, parse_quantity
from capstan.api.registry import ResourceType

GROUP = "kueue.x-k8s.io"
KueueApiVersion = Literal["kueue.x-k8s.io/v1beta1", "kueue.x-k8s.io/v1beta2"]
V1BETA1: Literal["kueue.x-k8s.io/v1beta1"] = "kueue.x-k8s.io/v1beta1"
V1BETA2: Literal["kueue.x-k8s.io/v1beta2"] = "kueue.x-k8s.io/v1beta2"

QueueingStrategy = Literal["StrictFIFO", "BestEffortFIFO"]
StopPolicy = Literal["None", "Hold", "HoldAndDrain"]
WithinClusterQueuePolicy = Literal["Never", "LowerPriority", "LowerOrNewerEqualPriority"]
ReclaimWithinCohortPolicy = Literal["Never", "LowerPriority", "Any"]
BorrowWithinCohortPolicy = Literal["Never", "LowerPriority"]
WhenCanBorrow = Literal["MayStopSearch", "Borrow", "TryNextFlavor"]
WhenCanPreempt = Literal["MayStopSearch", "Preempt", "TryNextFlavor"]
FungibilityPreference = Literal["BorrowingOverPreemption", "PreemptionOverBorrowing"]

WORKLOAD_PRIORITY_CLASS_SOURCE = "kueue.x-k8s.io/workloadpriorityclass"
POD_PRIORITY_CLASS_SOURCE = "scheduling.k8s.io/priorityclass"

# Workload condition types and reasons, as Kueue names them.
COND_QUOTA_RESERVED = "QuotaReserved"
COND_ADMITTED = "Admitted"
COND_EVICTED = "Evicted"
COND_PREEMPTED = "Preempted"
COND_REQUEUED = "Requeued"
COND_FINISHED = "Finished"
COND_PODS_READY = "PodsReady"
REASON_PENDING = "Pending"
REASON_INADMISSIBLE = "Inadmissible"
REASON_EVICTED_BY_PREEMPTION = "Preempted"
REASON_PODS_READY_TIMEOUT = "PodsReadyTimeout"
REASON_CLUSTER_QUEUE_STOPPED = "ClusterQueueStopped"
REASON_LOCAL_QUEUE_STOPPED = "LocalQueueStopped"
REASON_DEACTIVATED = "Deactivated"
REASON_BACKOFF_FINISHED = "BackoffFinished"
REASON_SUCCEEDED = "Succeeded"
REASON_FAILED = "Failed"
PREEMPTION_REASONS = ("InClusterQueue", "InCohortReclamation", "InCohortFairSharing",
                      "InCohortReclaimWhileBorrowing")


# ---- validation plumbing -------------------------------------------------------------------------

Loc = tuple[str | int, ...]


def _error(loc: Loc, message: str, kind: str = "FieldValueInvalid") -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=None)


def _raise_if(title: str, errors: list[InitErrorDetails]) -> None:
    if errors:
        raise ValidationError.from_exception_data(title, errors)


def _amount(value: Quantity) -> Decimal:
    return parse_quantity(value)


# ---- shared pieces --------------------------------------------------------------------------------

class ResourceQuota(KubeModel):
    name: str
    nominal_quota: SchemaQuantity = 0
    borrowing_limit: SchemaQuantity | None = None
    lending_limit: SchemaQuantity | None = None


class FlavorQuotas(KubeModel):
    name: str
    resources: list[ResourceQuota] = Field(default_factory=list)


class ResourceGroup(KubeModel):
    covered_resources: list[str] = Field(default_factory=list)
    flavors: list[FlavorQuotas] = Field(default_factory=list)


class FairSharing(KubeModel):
    weight: SchemaQuantity | None = None


class FairSharingStatus(KubeModel):
    weighted_share: int = 0


class ResourceUsage(KubeModel):
    name: str
    total: Quantity | None = None
    borrowed: Quantity | None = None


class FlavorUsage(KubeModel):
    name: str
    resources: list[ResourceUsage] = Field(default_factory=list)


def resource_group_errors(groups: Sequence[ResourceGroup], *, has_parent: bool, parent_word: str,
                          nominal_bounds_lending: bool, base: Loc = ("spec", "resourceGroups")
                          ) -> list[InitErrorDetails]:
    """Kueue's resource-group rules, with field paths (shared by ClusterQueue and Cohort)."""
    errors: list[InitErrorDetails] = []
    seen_resources: set[str] = set()
    seen_flavors: set[str] = set()
    for i, group in enumerate(groups):
        for j, name in enumerate(group.covered_resources):
            if name in seen_resources:
                errors.append(_error((*base, i, "coveredResources", j), f'Duplicate value: "{name}"',
                                     "FieldValueDuplicate"))
            seen_resources.add(name)
        for j, flavor in enumerate(group.flavors):
            path: Loc = (*base, i, "flavors", j)
            if flavor.name in seen_flavors:
                errors.append(_error((*path, "name"), f'Duplicate value: "{flavor.name}"', "FieldValueDuplicate"))
            seen_flavors.add(flavor.name)
            if len(flavor.resources) != len(group.covered_resources):
                errors.append(_error((*path, "resources"),
                                     "flavors must have the same number of resources as the coveredResources"))
            errors.extend(_flavor_quota_errors(flavor, group.covered_resources, path, has_parent=has_parent,
                                               parent_word=parent_word,
                                               nominal_bounds_lending=nominal_bounds_lending))
    return errors


def _flavor_quota_errors(flavor: FlavorQuotas, covered: Sequence[str], path: Loc, *, has_parent: bool,
                         parent_word: str, nominal_bounds_lending: bool) -> list[InitErrorDetails]:
    errors: list[InitErrorDetails] = []
    for k, quota in enumerate(flavor.resources):
        at: Loc = (*path, "resources", k)
        if k < len(covered) and quota.name != covered[k]:
            errors.append(_error((*at, "name"), "must match the name in coveredResources"))
        amounts: dict[str, Decimal] = {}
        for field_name, value in (("nominalQuota", quota.nominal_quota), ("borrowingLimit", quota.borrowing_limit),
                                  ("lendingLimit", quota.lending_limit)):
            if value is None:
                continue
            try:
                amounts[field_name] = _amount(value)
            except QuantityError as exc:
                errors.append(_error((*at, field_name), str(exc)))
                continue
            if amounts[field_name] < 0:
                errors.append(_error((*at, field_name), "must be greater than or equal to 0"))
        for limit in ("borrowingLimit", "lendingLimit"):
            if limit in amounts and not has_parent:
                errors.append(_error((*at, limit), f"must be nil when {parent_word} is empty"))
        if (nominal_bounds_lending and "lendingLimit" in amounts and "nominalQuota" in amounts
                and amounts["lendingLimit"] > amounts["nominalQuota"]):
            errors.append(_error((*at, "lendingLimit"), "must be less than or equal to the nominalQuota"))
    return errors


def _fair_sharing_errors(fair_sharing: FairSharing | None, base: Loc) -> list[InitErrorDetails]:
    if fair_sharing is None or fair_sharing.weight is None:
        return []
    try:
        weight = _amount(fair_sharing.weight)
    except QuantityError as exc:
        return [_error((*base, "weight"), str(exc))]
    return [_error((*base, "weight"), "must be greater than or equal to 0")] if weight < 0 else []


# ---- ResourceFlavor -------------------------------------------------------------------------------

class ResourceFlavorSpec(KubeModel):
    node_labels: dict[str, str] | None = None
    node_taints: list[Taint] | None = Field(default=None, max_length=8)
    tolerations: list[Toleration] | None = Field(default=None, max_length=8)
    topology_name: str | None = None


class ResourceFlavor(Resource):
    api_version: KueueApiVersion = V1BETA1
    kind: Literal["ResourceFlavor"] = "ResourceFlavor"
    spec: ResourceFlavorSpec = Field(default_factory=ResourceFlavorSpec)


# ---- ClusterQueue ---------------------------------------------------------------------------------

class BorrowWithinCohort(KubeModel):
    policy: BorrowWithinCohortPolicy = "Never"
    max_priority_threshold: int | None = None


NEVER_RECLAIM_MEANS_NEVER_BORROW = CrossFieldRule(
    "!(self.reclaimWithinCohort == 'Never' && has(self.borrowWithinCohort)"
    " && self.borrowWithinCohort.policy != 'Never')",
    "reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never")


class ClusterQueuePreemption(KubeModel):
    model_config = ConfigDict(json_schema_extra=cel_validations(NEVER_RECLAIM_MEANS_NEVER_BORROW))

    within_cluster_queue: WithinClusterQueuePolicy = "Never"
    reclaim_within_cohort: ReclaimWithinCohortPolicy = "Never"
    borrow_within_cohort: BorrowWithinCohort | None = None


class FlavorFungibility(KubeModel):
    when_can_borrow: WhenCanBorrow = "MayStopSearch"
    when_can_preempt: WhenCanPreempt = "TryNextFlavor"
    preference: FungibilityPreference | None = None


class AdmissionCheckStrategyRule(KubeModel):
    name: str
    on_flavors: list[str] | None = None


class AdmissionChecksStrategy(KubeModel):
    admission_checks: list[AdmissionCheckStrategyRule] | None = None


class ClusterQueueSpec(KubeModel):
    resource_groups: list[ResourceGroup] = Field(default_factory=list)
    cohort: str | None = None  # v1beta1
    cohort_name: str | None = None  # v1beta2
    queueing_strategy: QueueingStrategy = "BestEffortFIFO"
    namespace_selector: LabelSelector | None = None
    flavor_fungibility: FlavorFungibility = Field(default_factory=FlavorFungibility)
    preemption: ClusterQueuePreemption = Field(default_factory=ClusterQueuePreemption)
    admission_checks: list[str] | None = None  # v1beta1 only; kept
    admission_checks_strategy: AdmissionChecksStrategy | None = None
    stop_policy: StopPolicy = "None"
    fair_sharing: FairSharing | None = None

    @property
    def effective_cohort(self) -> str | None:
        """The cohort, whichever version's field names it."""
        return self.cohort_name or self.cohort or None


class ClusterQueuePendingWorkload(KubeModel):
    name: str
    namespace: str


class ClusterQueueStatus(KubeModel):
    conditions: list[Condition] | None = None
    flavors_reservation: list[FlavorUsage] | None = None
    flavors_usage: list[FlavorUsage] | None = None
    pending_workloads: int = 0
    reserving_workloads: int = 0
    admitted_workloads: int = 0
    fair_sharing: FairSharingStatus | None = None


class ClusterQueue(Resource):
    api_version: KueueApiVersion = V1BETA1
    kind: Literal["ClusterQueue"] = "ClusterQueue"
    spec: ClusterQueueSpec = Field(default_factory=ClusterQueueSpec)
    status: ClusterQueueStatus | None = None

    @model_validator(mode="after")
    def _validate(self) -> ClusterQueue:
        _raise_if("ClusterQueue", cluster_queue_errors(self.spec))
        return self


def cluster_queue_errors(spec: ClusterQueueSpec) -> list[InitErrorDetails]:
    errors: list[InitErrorDetails] = []
    if spec.cohort and spec.cohort_name and spec.cohort != spec.cohort_name:
        errors.append(_error(("spec", "cohortName"), f'must equal spec.cohort ("{spec.cohort}") when both are set'))
    errors.extend(resource_group_errors(spec.resource_groups, has_parent=bool(spec.effective_cohort),
                                        parent_word="cohort", nominal_bounds_lending=True))
    preemption = spec.preemption
    if (preemption.reclaim_within_cohort == "Never" and preemption.borrow_within_cohort is not None
            and preemption.borrow_within_cohort.policy != "Never"):
        errors.append(_error(("spec", "preemption"), NEVER_RECLAIM_MEANS_NEVER_BORROW.cause_message()))
    fungibility = spec.flavor_fungibility
    if fungibility.preference is not None and (fungibility.when_can_borrow != "TryNextFlavor"
                                               or fungibility.when_can_preempt != "TryNextFlavor"):
        errors.append(_error(("spec", "flavorFungibility", "preference"),
                             f'preference "{fungibility.preference}" requires both whenCanBorrow and '
                             f"whenCanPreempt to be TryNextFlavor"))
    errors.extend(_fair_sharing_errors(spec.fair_sharing, ("spec", "fairSharing")))
    return errors


def unknown_flavor_causes(spec: ClusterQueueSpec | CohortSpec, known_flavors: Iterable[str]) -> list[Cause]:
    """The cross-object check: every flavor a queue or cohort names must exist as a ResourceFlavor.

    Kueue does not reject such queues; it marks them inactive (reason FlavorNotFound). The controller
    calls this and sets the Active condition from the result.
    """
    known = set(known_flavors)
    causes = []
    for i, group in enumerate(spec.resource_groups):
        for j, flavor in enumerate(group.flavors):
            if flavor.name not in known:
                causes.append(Cause(field=f"spec.resourceGroups[{i}].flavors[{j}].name", reason="FlavorNotFound",
                                    message=f'ResourceFlavor "{flavor.name}" not found'))
    return causes


# ---- Cohort ---------------------------------------------------------------------------------------

class CohortSpec(KubeModel):
    parent_name: str | None = None
    resource_groups: list[ResourceGroup] = Field(default_factory=list)
    fair_sharing: FairSharing | None = None


class CohortStatus(KubeModel):
    fair_sharing: FairSharingStatus | None = None
    conditions: list[Condition] | None = None


class Cohort(Resource):
    api_version: KueueApiVersion = V1BETA1
    kind: Literal["Cohort"] = "Cohort"
    spec: CohortSpec = Field(default_factory=CohortSpec)
    status: CohortStatus | None = None

    @model_validator(mode="after")
    def _validate(self) -> Cohort:
        errors = resource_group_errors(self.spec.resource_groups, has_parent=bool(self.spec.parent_name),
                                       parent_word="parent", nominal_bounds_lending=False)
        errors.extend(_fair_sharing_errors(self.spec.fair_sharing, ("spec", "fairSharing")))
        if self.spec.parent_name and self.spec.parent_name == self.metadata.name:
            errors.append(_error(("spec", "parentName"), "must not name the cohort itself"))
        _raise_if("Cohort", errors)
        return self


# ---- LocalQueue -----------------------------------------------------------------------------------

class LocalQueueSpec(KubeModel):
    cluster_queue: str | None = None
    stop_policy: StopPolicy = "None"
    fair_sharing: FairSharing | None = None


class LocalQueueResourceUsage(KubeModel):
    name: str
    total: Quantity | None = None


class LocalQueueFlavorUsage(KubeModel):
    name: str
    resources: list[LocalQueueResourceUsage] = Field(default_factory=list)


class LocalQueueStatus(KubeModel):
    conditions: list[Condition] | None = None
    pending_workloads: int = 0
    reserving_workloads: int = 0
    admitted_workloads: int = 0
    flavors_reservation: list[LocalQueueFlavorUsage] | None = None
    flavor_usage: list[LocalQueueFlavorUsage] | None = None  # v1beta1
    flavors_usage: list[LocalQueueFlavorUsage] | None = None  # v1beta2
    fair_sharing: FairSharingStatus | None = None


class LocalQueue(Resource):
    api_version: KueueApiVersion = V1BETA1
    kind: Literal["LocalQueue"] = "LocalQueue"
    spec: LocalQueueSpec = Field(default_factory=LocalQueueSpec)
    status: LocalQueueStatus | None = None


# ---- Workload -------------------------------------------------------------------------------------

class PodSet(KubeModel):
    name: str = "main"
    count: int = Field(default=1, ge=0)
    min_count: int | None = Field(default=None, ge=0)
    template: PodTemplateSpec
    topology_request: dict[str, Any] | None = None


class PriorityClassRef(KubeModel):
    group: str
    kind: str
    name: str


class WorkloadSpec(KubeModel):
    pod_sets: list[PodSet] = Field(min_length=1, max_length=8)
    queue_name: str | None = None
    priority_class_name: str | None = None  # v1beta1
    priority_class_source: str | None = None  # v1beta1
    priority_class_ref: PriorityClassRef | None = None  # v1beta2
    priority: int | None = None
    active: bool = True
    maximum_execution_time_seconds: int | None = Field(default=None, ge=1)

    @property
    def effective_priority_class(self) -> tuple[str, str] | None:
        """(source, name) of the priority class, from either version's fields."""
        if self.priority_class_ref is not None:
            ref = self.priority_class_ref
            source = (WORKLOAD_PRIORITY_CLASS_SOURCE if ref.group == GROUP else POD_PRIORITY_CLASS_SOURCE)
            return source, ref.name
        if self.priority_class_name:
            return self.priority_class_source or POD_PRIORITY_CLASS_SOURCE, self.priority_class_name
        return None


class PodSetAssignment(KubeModel):
    name: str
    flavors: dict[str, str] | None = None
    resource_usage: dict[str, Quantity] | None = None
    count: int | None = None


class Admission(KubeModel):
    cluster_queue: str
    pod_set_assignments: list[PodSetAssignment] = Field(default_factory=list)


class RequeueState(KubeModel):
    count: int | None = None
    requeue_at: str | None = None


class AdmissionCheckState(KubeModel):
    name: str
    state: str
    last_transition_time: str | None = None
    message: str | None = None


class WorkloadStatus(KubeModel):
    conditions: list[Condition] | None = None
    admission: Admission | None = None
    requeue_state: RequeueState | None = None
    admission_checks: list[AdmissionCheckState] | None = None
    accumulated_past_exexcution_time_seconds: int | None = None  # v1beta1 spelling
    accumulated_past_execution_time_seconds: int | None = None  # v1beta2 spelling

    def condition(self, condition_type: str) -> Condition | None:
        return next((c for c in self.conditions or [] if c.type == condition_type), None)


class Workload(Resource):
    api_version: KueueApiVersion = V1BETA1
    kind: Literal["Workload"] = "Workload"
    spec: WorkloadSpec
    status: WorkloadStatus | None = None

    @model_validator(mode="after")
    def _validate(self) -> Workload:
        errors: list[InitErrorDetails] = []
        names: set[str] = set()
        for i, pod_set in enumerate(self.spec.pod_sets):
            if pod_set.name in names:
                errors.append(_error(("spec", "podSets", i, "name"), f'Duplicate value: "{pod_set.name}"',
                                     "FieldValueDuplicate"))
            names.add(pod_set.name)
            if pod_set.min_count is not None and pod_set.min_count > pod_set.count:
                errors.append(_error(("spec", "podSets", i, "minCount"), "should be less than or equal to count"))
        _raise_if("Workload", errors)
        return self


class WorkloadPriorityClass(Resource):
    api_version: KueueApiVersion = V1BETA1
    kind: Literal["WorkloadPriorityClass"] = "WorkloadPriorityClass"
    value: int
    description: str | None = None


KUEUE_TYPES: tuple[ResourceType, ...] = (
    ResourceType(GROUP, "v1beta1", "ResourceFlavor", "resourceflavors", ResourceFlavor, namespaced=False,
                 short_names=("flavor", "flavors", "rf"), has_status=False, served_versions=("v1beta2",)),
    ResourceType(GROUP, "v1beta1", "ClusterQueue", "clusterqueues", ClusterQueue, namespaced=False,
                 short_names=("cq",), served_versions=("v1beta2",)),
    ResourceType(GROUP, "v1beta1", "Cohort", "cohorts", Cohort, namespaced=False, served_versions=("v1beta2",)),
    ResourceType(GROUP, "v1beta1", "LocalQueue", "localqueues", LocalQueue,
                 short_names=("queue", "queues", "lq"), served_versions=("v1beta2",)),
    ResourceType(GROUP, "v1beta1", "Workload", "workloads", Workload, short_names=("wl",),
                 served_versions=("v1beta2",)),
    ResourceType(GROUP, "v1beta1", "WorkloadPriorityClass", "workloadpriorityclasses", WorkloadPriorityClass,
                 namespaced=False, has_status=False, served_versions=("v1beta2",)),
)

__all__ = [
    "KUEUE_TYPES", "Admission", "BorrowWithinCohort", "ClusterQueue", "ClusterQueuePreemption",
    "ClusterQueueSpec", "ClusterQueueStatus", "Cohort", "CohortSpec", "FairSharing", "FlavorFungibility",
    "FlavorQuotas", "FlavorUsage", "LocalQueue", "LocalQueueSpec", "LocalQueueStatus", "PodSet",
    "PodSetAssignment", "RequeueState", "ResourceFlavor", "ResourceFlavorSpec", "ResourceGroup",
    "ResourceQuota", "Workload", "WorkloadPriorityClass", "WorkloadSpec", "WorkloadStatus",
    "cluster_queue_errors", "unknown_flavor_causes",
]
