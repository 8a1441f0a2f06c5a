"""Resource accounting of pods and nodes, in integer units (millicores for cpu, bytes, counts).

A pod's effective request follows Kubernetes: per resource, the larger of the sum over its
containers and the largest single init container (init containers run one at a time, before
the others). A container with a limit but no request requests its limit, as API defaulting
makes it. Every pod also requests one ``pods`` slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from capstan.api.quantity import resource_amount

ResourceList = dict[str, int]

TERMINAL_PHASES = ("Succeeded", "Failed")


def container_requests(container: Mapping[str, Any]) -> ResourceList:
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = {**limits, **(resources.get("requests") or {})}
    return {name: resource_amount(name, value) for name, value in requests.items()}


def add(left: Mapping[str, int], right: Mapping[str, int]) -> ResourceList:
    total = dict(left)
    for name, amount in right.items():
        total[name] = total.get(name, 0) + amount
    return total


def _pointwise_max(left: Mapping[str, int], right: Mapping[str, int]) -> ResourceList:
    return {name: max(left.get(name, 0), right.get(name, 0)) for name in {*left, *right}}


def pod_requests(pod: Mapping[str, Any]) -> ResourceList:
    spec = pod.get("spec") or {}
    total: ResourceList = {}
    for container in spec.get("containers") or []:
        total = add(total, container_requests(container))
    for init in spec.get("initContainers") or []:
        total = _pointwise_max(total, container_requests(init))
    total = {name: amount for name, amount in total.items() if amount > 0}
    total["pods"] = 1
    return total


def node_allocatable(node: Mapping[str, Any]) -> ResourceList:
    """What the node offers to pods: status.allocatable, else status.capacity."""
    status = node.get("status") or {}
    offered = status.get("allocatable") or status.get("capacity") or {}
    return {name: resource_amount(name, value) for name, value in offered.items()}


def pod_is_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def pod_is_gated(pod: Mapping[str, Any]) -> bool:
    """A pod with ``spec.schedulingGates`` is not scheduled until every gate is removed."""
    return bool((pod.get("spec") or {}).get("schedulingGates"))


def requested_on_node(pods: Iterable[Mapping[str, Any]], node_name: str) -> ResourceList:
    """What the non-terminal pods bound to ``node_name`` request together."""
    total: ResourceList = {}
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName") == node_name and not pod_is_terminal(pod):
            total = add(total, pod_requests(pod))
    return total
