"""Whether a pod fits a node, and the Kubernetes-style explanation when it does not.

The message aggregates reasons over nodes as kube-scheduler does ("0/1 nodes are available:
1 Insufficient cpu.") and adds the amounts, which is what a user needs to act on:
``0/1 nodes are available: 1 Insufficient cpu (requested 4, free 1500m of 2 allocatable).``
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capstan.api.quantity import format_amount
from capstan.core.scheduling.resources import ResourceList, add, node_allocatable, pod_requests

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
ENFORCED_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class Shortage:
    """A resource the node does not have enough of for the pod."""

    resource: str
    requested: int
    free: int
    allocatable: int

    @property
    def reason(self) -> str:
        amounts = (f"requested {format_amount(self.resource, self.requested)}, "
                   f"free {format_amount(self.resource, max(self.free, 0))} of "
                   f"{format_amount(self.resource, self.allocatable)} allocatable")
        if self.resource == "pods":
            return f"Too many pods ({amounts})"
        return f"Insufficient {self.resource} ({amounts})"


@dataclass(frozen=True)
class Mismatch:
    """A reason other than capacity: selector, taint, cordon."""

    reason: str


@dataclass(frozen=True)
class FitResult:
    node: str
    shortages: tuple[Shortage, ...] = ()
    mismatches: tuple[Mismatch, ...] = ()

    @property
    def fits(self) -> bool:
        return not self.shortages and not self.mismatches

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(m.reason for m in self.mismatches) + tuple(s.reason for s in self.shortages)


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key")
    operator = toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"  # an empty key with Exists tolerates everything
    if key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    return (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taint(pod: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    taints: list[Mapping[str, Any]] = (node.get("spec") or {}).get("taints") or []
    for taint in taints:
        if taint.get("effect") not in ENFORCED_EFFECTS:
            continue
        if not any(_tolerates(t, taint) for t in tolerations):
            return taint
    return None


def _mismatches(pod: Mapping[str, Any], node: Mapping[str, Any]) -> list[Mismatch]:
    spec = pod.get("spec") or {}
    found: list[Mismatch] = []
    if (node.get("spec") or {}).get("unschedulable"):
        cordon = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
        if not any(_tolerates(t, cordon) for t in spec.get("tolerations") or []):
            found.append(Mismatch("node(s) were unschedulable"))
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(key) != value for key, value in selector.items()):
        found.append(Mismatch("node(s) didn't match Pod's node affinity/selector"))
    taint = untolerated_taint(pod, node)
    if taint is not None:
        shown = f"{taint.get('key')}: {taint['value']}" if taint.get("value") else str(taint.get("key"))
        found.append(Mismatch(f"node(s) had untolerated taint {{{shown}}}"))
    return found


def _shortages(requests: Mapping[str, int], used: Mapping[str, int],
               allocatable: Mapping[str, int]) -> list[Shortage]:
    shortages = []
    for resource in sorted(requests):
        requested = requests[resource]
        if requested <= 0:
            continue
        total = allocatable.get(resource, 0)
        free = total - used.get(resource, 0)
        if requested > free:
            shortages.append(Shortage(resource, requested, free, total))
    return shortages


def check_fit(pod: Mapping[str, Any], node: Mapping[str, Any], used: Mapping[str, int]) -> FitResult:
    """Does ``pod`` fit ``node`` whose bound pods already request ``used``?"""
    name = str((node.get("metadata") or {}).get("name") or "")
    return FitResult(node=name,
                     shortages=tuple(_shortages(pod_requests(pod), used, node_allocatable(node))),
                     mismatches=tuple(_mismatches(pod, node)))


def unschedulable_message(results: Sequence[FitResult]) -> str:
    """``0/N nodes are available: <count> <reason>, ...`` with reasons sorted like kube-scheduler."""
    counts: Counter[str] = Counter()
    for result in results:
        counts.update(result.reasons)
    available = sum(1 for r in results if r.fits)
    listed = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
    message = f"{available}/{len(results)} nodes are available"
    return f"{message}: {listed}." if listed else f"{message}."


def _priority(pod: Mapping[str, Any]) -> int:
    return int((pod.get("spec") or {}).get("priority") or 0)


def scheduling_order(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Higher priority first, then older first (name breaks ties, for determinism)."""
    def key(pod: Mapping[str, Any]) -> tuple[int, str, str, str]:
        meta = pod.get("metadata") or {}
        return (-_priority(pod), str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""),
                str(meta.get("name") or ""))
    return sorted(pods, key=key)


@dataclass(frozen=True)
class Placement:
    """The decision for one pending pod: bound to ``result.node`` when ``result.fits``."""

    pod: Mapping[str, Any]
    result: FitResult


def plan_bindings(pending: Iterable[Mapping[str, Any]], node: Mapping[str, Any],
                  used: Mapping[str, int]) -> list[Placement]:
    """Place pending pods on one node in scheduling order, each placement consuming capacity
    before the next is considered, so a burst never overcommits. A pod that does not fit does
    not block smaller ones behind it."""
    consumed: ResourceList = dict(used)
    placements = []
    for pod in scheduling_order(pending):
        result = check_fit(pod, node, consumed)
        if result.fits:
            consumed = add(consumed, pod_requests(pod))
        placements.append(Placement(pod, result))
    return placements
