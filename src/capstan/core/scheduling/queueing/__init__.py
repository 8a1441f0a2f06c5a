"""Pure batch queueing core: quotas, cohorts, flavors, fair sharing, preemption, gangs.

Build a :class:`Snapshot` of ClusterQueues, cohorts, flavors, admitted and pending workloads, call
:func:`schedule` with the current time, and apply the :class:`CycleResult` (admissions, preemptions,
evictions) to the store; pass ``result.memory`` into the next snapshot. No I/O, no clocks.
"""

from capstan.core.scheduling.queueing.cycle import schedule
from capstan.core.scheduling.queueing.model import (
    Admission,
    AdmittedWorkload,
    Amounts,
    ClusterQueueConfig,
    CohortConfig,
    CycleResult,
    Eviction,
    Flavor,
    FlavorFungibility,
    FlavorQuotas,
    FlavorResource,
    NodeCapacity,
    PodSet,
    PodSetAssignment,
    Preemption,
    PreemptionDecision,
    QueueFigures,
    Reason,
    ResourceGroup,
    ResourceQuota,
    SchedulerMemory,
    Settings,
    Shortage,
    Snapshot,
    Taint,
    Toleration,
    WaitReason,
    Workload,
)

__all__ = [
    "Admission", "AdmittedWorkload", "Amounts", "ClusterQueueConfig", "CohortConfig", "CycleResult", "Eviction",
    "Flavor", "FlavorFungibility", "FlavorQuotas", "FlavorResource", "NodeCapacity", "PodSet", "PodSetAssignment",
    "Preemption", "PreemptionDecision", "QueueFigures", "Reason", "ResourceGroup", "ResourceQuota",
    "SchedulerMemory", "Settings", "Shortage", "Snapshot", "Taint", "Toleration", "WaitReason", "Workload",
    "schedule",
]
