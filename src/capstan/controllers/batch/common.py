"""Names, Workload status helpers and the wire -> core conversions shared by the batch controllers.

Everything here reads plain wire dicts (as any Store serves them) and never writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from capstan.api.quantity import format_amount, parse_quantity, resource_amount
from capstan.core.scheduling.conditions import find_condition, set_condition
from capstan.core.scheduling.queueing import (
    AdmittedWorkload,
    ClusterQueueConfig,
    CohortConfig,
    Flavor,
    FlavorFungibility,
    FlavorQuotas,
    PodSet,
    PodSetAssignment,
    Preemption,
    ResourceGroup,
    ResourceQuota,
    Taint,
    Toleration,
    Workload,
)
from capstan.core.scheduling.resources import pod_requests
from capstan.store.base import Obj

# ---- names (Kueue's where Kueue has one) --------------------------------------------------------

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"
POD_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
POD_GROUP_COUNT = "kueue.x-k8s.io/pod-group-total-count"
MANAGED_LABEL = "kueue.x-k8s.io/managed"
ADMISSION_GATE = "kueue.x-k8s.io/admission"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
WORKLOAD_SOURCE = "kueue.x-k8s.io/workloadpriorityclass"
DEPENDS_ON = "capstan.io/depends-on"
ORIGINAL_SCHEDULING = "capstan.io/original-scheduling"
ADMISSION_ATTEMPT = "capstan.io/admission-attempt"

QUOTA_RESERVED = "QuotaReserved"
ADMITTED = "Admitted"
EVICTED = "Evicted"
PREEMPTED = "Preempted"
REQUEUED = "Requeued"
FINISHED = "Finished"

LOCAL_QUEUE_MISSING = "LocalQueueDoesNotExist"
DEPENDENCY_FAILED = "DependencyFailed"


def now_rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def epoch(value: object, default: float = 0.0) -> float:
    parsed = parse_time(value)
    return parsed.timestamp() if parsed is not None else default


# ---- Workload status --------------------------------------------------------------------------

def conditions_of(obj: Obj) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def condition_true(obj: Obj, kind: str) -> bool:
    found = find_condition(conditions_of(obj), kind)
    return found is not None and found.get("status") == "True"


def with_condition(conditions: Sequence[Mapping[str, Any]] | None, kind: str, status: str, reason: str,
                   message: str, now: str) -> list[dict[str, Any]]:
    return set_condition(conditions, kind, status, now, reason=reason, message=message)


def is_finished(workload: Obj) -> bool:
    return condition_true(workload, FINISHED)


def holds_quota(workload: Obj) -> bool:
    """Quota is reserved (status.admission set, QuotaReserved=True) and not yet released."""
    return bool((workload.get("status") or {}).get("admission")) and condition_true(workload, QUOTA_RESERVED)


def is_evicted(workload: Obj) -> bool:
    return condition_true(workload, EVICTED)


def is_running_admitted(workload: Obj) -> bool:
    """Admitted and not being evicted: the job may run."""
    return holds_quota(workload) and not is_evicted(workload) and not is_finished(workload)


def workload_key(workload: Obj) -> str:
    meta = workload["metadata"]
    return f"{meta.get('namespace') or 'default'}/{meta['name']}"


def queue_time(workload: Obj) -> float:
    """Where a pending workload queues in FIFO order: its creation, or its last requeue after an
    eviction (Kueue's ``requeuingStrategy.timestamp: Eviction``)."""
    requeued = find_condition(conditions_of(workload), REQUEUED)
    if requeued is not None and requeued.get("status") == "True":
        return epoch(requeued.get("lastTransitionTime"))
    return epoch(workload["metadata"].get("creationTimestamp"))


def queue_order(workload: Obj) -> tuple[int, float, str]:
    """The order of pending workloads in a ClusterQueue (the core's, without nominations)."""
    return (-int((workload.get("spec") or {}).get("priority") or 0), queue_time(workload), workload_key(workload))


def admission_flavors(workload: Obj) -> dict[str, dict[str, str]]:
    """pod set name -> resource -> flavor, from status.admission."""
    admission = (workload.get("status") or {}).get("admission") or {}
    return {a.get("name", "main"): dict(a.get("flavors") or {}) for a in admission.get("podSetAssignments") or []}


def attempt_of(workload: Obj) -> dict[str, Any] | None:
    raw = ((workload.get("metadata") or {}).get("annotations") or {}).get(ADMISSION_ATTEMPT)
    if not raw:
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


# ---- wire -> core -----------------------------------------------------------------------------

def _quota(raw: Mapping[str, Any], resource: str) -> ResourceQuota:
    def amount(field: str) -> int | None:
        value = raw.get(field)
        return None if value is None else resource_amount(resource, value)

    return ResourceQuota(amount("nominalQuota") or 0, amount("borrowingLimit"), amount("lendingLimit"))


def resource_groups(spec: Mapping[str, Any]) -> tuple[ResourceGroup, ...]:
    groups = []
    for group in spec.get("resourceGroups") or []:
        flavors = []
        for flavor in group.get("flavors") or []:
            quotas = tuple((r["name"], _quota(r, r["name"])) for r in flavor.get("resources") or [])
            flavors.append(FlavorQuotas(flavor["name"], quotas))
        groups.append(ResourceGroup(tuple(group.get("coveredResources") or ()), tuple(flavors)))
    return tuple(groups)


def _weight(spec: Mapping[str, Any]) -> float:
    weight = (spec.get("fairSharing") or {}).get("weight")
    return float(parse_quantity(weight)) if weight is not None else 1.0


def cluster_queue_config(cq: Obj) -> ClusterQueueConfig:
    spec = cq.get("spec") or {}
    preemption = spec.get("preemption") or {}
    borrow = preemption.get("borrowWithinCohort") or {}
    fungibility = spec.get("flavorFungibility") or {}
    return ClusterQueueConfig(
        name=cq["metadata"]["name"],
        resource_groups=resource_groups(spec),
        cohort=spec.get("cohortName") or spec.get("cohort") or None,
        queueing_strategy=spec.get("queueingStrategy") or "BestEffortFIFO",
        preemption=Preemption(preemption.get("withinClusterQueue") or "Never",
                              preemption.get("reclaimWithinCohort") or "Never",
                              borrow.get("policy") or "Never", borrow.get("maxPriorityThreshold")),
        flavor_fungibility=FlavorFungibility(fungibility.get("whenCanBorrow") or "MayStopSearch",
                                             fungibility.get("whenCanPreempt") or "TryNextFlavor"),
        fair_weight=_weight(spec),
        stop_policy=spec.get("stopPolicy") or "None",
    )


def cohort_config(cohort: Obj) -> CohortConfig:
    spec = cohort.get("spec") or {}
    return CohortConfig(cohort["metadata"]["name"], spec.get("parentName") or None, resource_groups(spec),
                        _weight(spec))


def flavor_of(rf: Obj) -> Flavor:
    spec = rf.get("spec") or {}
    taints = tuple(Taint(t.get("key", ""), t.get("value") or "", t.get("effect") or "NoSchedule")
                   for t in spec.get("nodeTaints") or [])
    return Flavor.of(rf["metadata"]["name"], spec.get("nodeLabels") or {}, taints)


def _tolerations(pod_spec: Mapping[str, Any]) -> tuple[Toleration, ...]:
    return tuple(Toleration(t.get("key") or "", t.get("operator") or "Equal", t.get("value") or "",
                            t.get("effect") or "") for t in pod_spec.get("tolerations") or [])


def pod_sets(workload: Obj) -> tuple[PodSet, ...]:
    found = []
    for raw in (workload.get("spec") or {}).get("podSets") or []:
        template = raw.get("template") or {}
        pod_spec = template.get("spec") or {}
        requests = {k: v for k, v in pod_requests({"spec": pod_spec}).items() if k != "pods"}
        found.append(PodSet(raw.get("name") or "main", int(raw.get("count", 1)), requests,
                            tuple(sorted((pod_spec.get("nodeSelector") or {}).items())), _tolerations(pod_spec)))
    return tuple(found)


def core_workload(workload: Obj, cluster_queue: str, *, not_ready: str | None = None,
                  sets: tuple[PodSet, ...] | None = None) -> Workload:
    spec = workload.get("spec") or {}
    requeue = ((workload.get("status") or {}).get("requeueState") or {}).get("requeueAt")
    local_queue = f"{workload['metadata'].get('namespace') or 'default'}/{spec.get('queueName') or ''}"
    sets = pod_sets(workload) if sets is None else sets
    return Workload(workload_key(workload), cluster_queue, sets, int(spec.get("priority") or 0),
                    queue_time(workload), local_queue, not_ready,
                    epoch(requeue) if requeue else None)


def core_admitted(workload: Obj, sets: tuple[PodSet, ...] | None = None) -> AdmittedWorkload:
    status = workload.get("status") or {}
    admission = status.get("admission") or {}
    cq = admission.get("clusterQueue") or ""
    sets = pod_sets(workload) if sets is None else sets
    by_name = {p.name: p for p in sets}
    assignments = []
    for raw in admission.get("podSetAssignments") or []:
        name = raw.get("name") or "main"
        usage = {r: resource_amount(r, v) for r, v in (raw.get("resourceUsage") or {}).items()}
        count = int(raw.get("count") or (by_name[name].count if name in by_name else 1))
        assignments.append(PodSetAssignment(name, count, tuple(sorted((raw.get("flavors") or {}).items())), usage))
    reserved = find_condition(conditions_of(workload), QUOTA_RESERVED)
    admitted_at = epoch(reserved.get("lastTransitionTime")) if reserved else 0.0
    return AdmittedWorkload(core_workload(workload, cq, sets=sets), tuple(assignments), admitted_at,
                            is_evicted(workload))


def admission_wire(cluster_queue: str, assignments: Sequence[PodSetAssignment]) -> dict[str, Any]:
    return {"clusterQueue": cluster_queue, "podSetAssignments": [
        {"name": a.name, "flavors": dict(a.flavors), "count": a.count,
         "resourceUsage": {r: format_amount(r, v) for r, v in a.usage.items()}} for a in assignments]}
