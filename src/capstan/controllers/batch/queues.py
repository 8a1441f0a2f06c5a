"""ClusterQueue and LocalQueue status, as Kueue reports it, from one admission cycle's figures.

Pure functions from wire objects and core figures to the ``status`` to write; the admission loop
writes them when they differ from what is stored (at most every ``status_interval`` seconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from capstan.api.kueue import ClusterQueueSpec, unknown_flavor_causes
from capstan.api.quantity import format_amount
from capstan.controllers.batch.common import with_condition
from capstan.core.scheduling.queueing import QueueFigures

FlavorResource = tuple[str, str]


def _covered(spec: Mapping[str, Any]) -> list[FlavorResource]:
    found: list[FlavorResource] = []
    for group in spec.get("resourceGroups") or []:
        for flavor in group.get("flavors") or []:
            found.extend((flavor["name"], r["name"]) for r in flavor.get("resources") or [])
    return found


def flavors_usage(spec: Mapping[str, Any], usage: Mapping[FlavorResource, int],
                  borrowed: Mapping[FlavorResource, int] | None = None) -> list[dict[str, Any]]:
    """``[{name: flavor, resources: [{name, total, borrowed}]}]`` over every flavor-resource the
    queue covers (zeros included), then any other in use."""
    order = _covered(spec)
    order += [fr for fr in usage if fr not in order]
    by_flavor: dict[str, list[dict[str, Any]]] = {}
    for flavor, resource in order:
        entry: dict[str, Any] = {"name": resource, "total": format_amount(resource, usage.get((flavor, resource), 0))}
        if borrowed is not None:
            entry["borrowed"] = format_amount(resource, borrowed.get((flavor, resource), 0))
        by_flavor.setdefault(flavor, []).append(entry)
    return [{"name": flavor, "resources": resources} for flavor, resources in by_flavor.items()]


def active_condition(cq: Mapping[str, Any], known_flavors: Iterable[str], cohort_problem: str | None,
                     now: str) -> dict[str, Any]:
    """The ClusterQueue's Active condition: FlavorNotFound, Stopped, or Ready."""
    spec = cq.get("spec") or {}
    previous = (cq.get("status") or {}).get("conditions")
    causes = unknown_flavor_causes(ClusterQueueSpec.model_validate(spec), known_flavors)
    if causes:
        message = "Can't admit new workloads: " + "; ".join(f"{c.message} ({c.field})" for c in causes)
        return _only(with_condition(previous, "Active", "False", "FlavorNotFound", message, now))
    if cohort_problem:
        return _only(with_condition(previous, "Active", "False", "CohortMisconfigured",
                                    f"Can't admit new workloads: {cohort_problem}", now))
    if (spec.get("stopPolicy") or "None") != "None":
        return _only(with_condition(previous, "Active", "False", "Stopped",
                                    f"Can't admit new workloads: the ClusterQueue is stopped ({spec['stopPolicy']})",
                                    now))
    return _only(with_condition(previous, "Active", "True", "Ready", "Can admit new workloads", now))


def _only(conditions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in conditions if c["type"] == "Active")


def _merge_condition(previous: Sequence[Mapping[str, Any]] | None, active: dict[str, Any]) -> list[dict[str, Any]]:
    others = [dict(c) for c in previous or [] if c.get("type") != "Active"]
    return [active, *others]


def cluster_queue_status(cq: Mapping[str, Any], figures: QueueFigures | None, admitted: int,
                         active: dict[str, Any]) -> dict[str, Any]:
    spec = cq.get("spec") or {}
    usage = figures.usage if figures is not None else {}
    borrowed = figures.borrowed if figures is not None else {}
    reservation = flavors_usage(spec, usage, borrowed)
    status: dict[str, Any] = {
        "pendingWorkloads": figures.pending if figures is not None else 0,
        "reservingWorkloads": figures.reserving if figures is not None else 0,
        "admittedWorkloads": admitted,
        "flavorsReservation": reservation,
        "flavorsUsage": reservation,
        "conditions": _merge_condition((cq.get("status") or {}).get("conditions"), active),
    }
    if figures is not None:
        status["fairSharing"] = {"weightedShare": figures.weighted_share}
    return status


def local_queue_status(lq: Mapping[str, Any], cq: Mapping[str, Any] | None, cq_active: bool, pending: int,
                       reserving: int, usage: Mapping[FlavorResource, int], now: str) -> dict[str, Any]:
    spec = lq.get("spec") or {}
    previous = (lq.get("status") or {}).get("conditions")
    name = spec.get("clusterQueue") or ""
    if cq is None:
        condition = with_condition(previous, "Active", "False", "ClusterQueueDoesNotExist",
                                   f'Can\'t submit new workloads to clusterQueue "{name}": it doesn\'t exist', now)
    elif not cq_active:
        condition = with_condition(previous, "Active", "False", "ClusterQueueIsInactive",
                                   f'Can\'t submit new workloads to clusterQueue "{name}": it is inactive', now)
    elif (spec.get("stopPolicy") or "None") != "None":
        condition = with_condition(previous, "Active", "False", "Stopped",
                                   f"The LocalQueue is stopped ({spec['stopPolicy']})", now)
    else:
        condition = with_condition(previous, "Active", "True", "Ready", "Can submit new workloads to localQueue",
                                   now)
    flavors = flavors_usage((cq or {}).get("spec") or {}, usage)
    return {"conditions": _merge_condition(previous, _only(condition)), "pendingWorkloads": pending,
            "reservingWorkloads": reserving, "admittedWorkloads": reserving, "flavorsReservation": flavors,
            "flavorUsage": flavors, "flavorsUsage": flavors}


def same_status(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Equal, ignoring when conditions last changed."""
    def strip(status: Mapping[str, Any] | None) -> dict[str, Any]:
        found = dict(status or {})
        found["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                               for c in found.get("conditions") or []]
        return found
    return strip(current) == strip(wanted)
