"""Pure scheduling decisions: what a pod requests, whether it fits a node, and why not."""

from capstan.core.scheduling.fit import (
    FitResult,
    Mismatch,
    Placement,
    Shortage,
    check_fit,
    plan_bindings,
    scheduling_order,
    unschedulable_message,
)
from capstan.core.scheduling.resources import (
    ResourceList,
    add,
    node_allocatable,
    pod_is_gated,
    pod_is_terminal,
    pod_requests,
    requested_on_node,
)

__all__ = [
    "FitResult", "Mismatch", "Placement", "ResourceList", "Shortage", "add", "check_fit", "node_allocatable",
    "plan_bindings", "pod_is_gated", "pod_is_terminal", "pod_requests", "requested_on_node", "scheduling_order",
    "unschedulable_message",
]
