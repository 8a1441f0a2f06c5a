"""Deployment decisions: which pods to create and delete, and the status to report.

Capstan's embedded Deployment controller manages Pods **directly; there are no ReplicaSets**.
What a ReplicaSet is to Kubernetes, the ``pod-template-hash`` label is here: pods carrying the
hash of the current template are "new", all others "old". A rolling update therefore moves
pods from old to new templates with the same ``maxSurge`` / ``maxUnavailable`` arithmetic
Kubernetes applies to its ReplicaSets.

Differences from Kubernetes, all following from the absence of ReplicaSets:

* no revision history and no rollback (``revisionHistoryLimit`` is accepted and ignored);
* the Progressing condition uses the reasons ``NewPodsAvailable`` (Kubernetes:
  ``NewReplicaSetAvailable``) and ``PodsUpdated`` (Kubernetes: ``ReplicaSetUpdated``),
  and messages that name the Deployment instead of a ReplicaSet;
* scaling events keep Kubernetes' reason ``ScalingReplicaSet``, with messages such as
  "Scaled up to 3 pods" / "Scaled down old pods to 1";
* a paused Deployment still scales, and pods it adds while paused use the current template
  (Kubernetes would scale the old ReplicaSets); it does not replace old pods until resumed;
* scaling in the middle of a rollout is not proportional: pods over the surge budget are
  removed from the old template first;
* ``unavailableReplicas`` is ``max(spec.replicas, status.replicas) - availableReplicas``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from capstan.api.appsv1 import DeploymentSpec
from capstan.core.workloads.pods import (
    Obj,
    PodRef,
    deletion_order,
    find_condition,
    is_active,
    is_available,
    is_finished,
    is_ready,
    is_terminating,
    parse_time,
    phase,
    ref_of,
    seconds_until_available,
    set_condition,
)

TEMPLATE_HASH_LABEL = "pod-template-hash"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # cannot spell words, as Kubernetes' safe encoding
_HASH_LENGTH = 10


@dataclass(frozen=True)
class PlannedEvent:
    type: str  # "Normal" | "Warning"
    reason: str
    message: str


@dataclass(frozen=True)
class DeploymentPlan:
    template_hash: str
    create: int
    delete: tuple[PodRef, ...]
    status: Mapping[str, Any]
    events: tuple[PlannedEvent, ...] = ()
    requeue_after: float | None = None


@dataclass(frozen=True)
class _Counts:
    replicas: int
    updated: int
    ready: int
    available: int


@dataclass
class _Actions:
    create: int = 0
    delete: list[Obj] = field(default_factory=list)
    events: list[PlannedEvent] = field(default_factory=list)


# ---- the template hash and the pods made from it ------------------------------------------------

def template_hash(template: Mapping[str, Any]) -> str:
    """A stable, label-safe hash of a pod template (its canonical JSON)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    number = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big")
    chars = []
    for _ in range(_HASH_LENGTH):
        number, digit = divmod(number, len(_HASH_ALPHABET))
        chars.append(_HASH_ALPHABET[digit])
    return "".join(chars)


def pod_for(deployment: Obj, hash_value: str) -> dict[str, Any]:
    """The pod a Deployment creates from its current template (named by the store)."""
    meta = deployment["metadata"]
    template = deployment["spec"]["template"]
    template_meta = template.get("metadata") or {}
    pod_meta: dict[str, Any] = {
        "generateName": f"{meta['name'][:50]}-{hash_value}-",
        "namespace": meta.get("namespace") or "default",
        "labels": {**(template_meta.get("labels") or {}), TEMPLATE_HASH_LABEL: hash_value},
        "ownerReferences": [{
            "apiVersion": deployment.get("apiVersion", "apps/v1"), "kind": "Deployment",
            "name": meta["name"], "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
        }],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = dict(template_meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": json.loads(json.dumps(template["spec"]))}


# ---- maxSurge / maxUnavailable -------------------------------------------------------------------

def _scaled_value(value: int | str | None, total: int, *, round_up: bool, default: str) -> int:
    raw: int | str = default if value is None else value
    if isinstance(raw, int):
        return raw
    text = raw.strip()
    if text.endswith("%"):
        exact = int(text[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def resolve_fenceposts(max_surge: int | str | None, max_unavailable: int | str | None,
                       replicas: int) -> tuple[int, int]:
    """``(surge, unavailable)`` in pods: percentages of ``replicas``, surge rounded up and
    unavailable rounded down (Kubernetes' rule). Should both come to zero, one pod may be
    unavailable, or a rollout could never make progress."""
    surge = _scaled_value(max_surge, replicas, round_up=True, default="25%")
    unavailable = _scaled_value(max_unavailable, replicas, round_up=False, default="25%")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def min_available(spec: DeploymentSpec) -> int:
    """The availability the Deployment promises: all replicas for Recreate, else replicas
    minus maxUnavailable."""
    strategy = spec.strategy
    if strategy is not None and strategy.type == "Recreate":
        return spec.replicas
    rolling = strategy.rolling_update if strategy is not None else None
    _, unavailable = resolve_fenceposts(rolling.max_surge if rolling else None,
                                        rolling.max_unavailable if rolling else None, spec.replicas)
    return max(spec.replicas - unavailable, 0)


# ---- the plan ------------------------------------------------------------------------------------

def plan_deployment(deployment: Obj, pods: Sequence[Obj], now: datetime) -> DeploymentPlan:
    """What to do for ``deployment`` given the pods it controls, at ``now``."""
    spec = DeploymentSpec.model_validate(deployment["spec"])
    hash_value = template_hash(deployment["spec"]["template"])
    active = [p for p in pods if is_active(p)]
    finished = [p for p in pods if is_finished(p) and not is_terminating(p)]
    new = [p for p in active if _hash_of(p) == hash_value]
    old = [p for p in active if _hash_of(p) != hash_value]

    actions = _Actions(delete=list(finished))
    for pod in finished:
        actions.events.append(PlannedEvent("Normal", "SuccessfulDelete",
                                           f"Deleted {phase(pod).lower()} pod: {ref_of(pod).name}"))
    strategy = spec.strategy.type if spec.strategy is not None else "RollingUpdate"
    if spec.paused:
        _scale_paused(spec, active, actions)
    elif not old:
        _scale_new(spec, new, actions, rollout=False)
    elif strategy == "Recreate":
        _recreate(old, actions)
    else:
        _roll(spec, new, old, now, actions)

    deleted = {ref_of(p) for p in actions.delete}
    remaining = [p for p in active if ref_of(p) not in deleted]
    counts = _Counts(
        replicas=len(remaining) + actions.create,
        updated=sum(1 for p in remaining if _hash_of(p) == hash_value) + actions.create,
        ready=sum(1 for p in remaining if is_ready(p)),
        available=sum(1 for p in remaining if is_available(p, spec.min_ready_seconds, now)),
    )
    status, deadline_in = _status(deployment, spec, counts, now)
    waits = [w for p in remaining if (w := seconds_until_available(p, spec.min_ready_seconds, now)) is not None]
    if deadline_in is not None:
        waits.append(deadline_in)
    return DeploymentPlan(
        template_hash=hash_value, create=actions.create,
        delete=tuple(ref_of(p) for p in actions.delete), status=status, events=tuple(actions.events),
        requeue_after=min(waits) if waits else None,
    )


def _hash_of(pod: Obj) -> str | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    value = labels.get(TEMPLATE_HASH_LABEL)
    return str(value) if value is not None else None


def _pods(count: int) -> str:
    return f"{count} pod" if count == 1 else f"{count} pods"


def _scale_new(spec: DeploymentSpec, new: list[Obj], actions: _Actions, *, rollout: bool) -> None:
    """Bring the pods of the current template to ``spec.replicas``."""
    if len(new) < spec.replicas:
        actions.create = spec.replicas - len(new)
        actions.events.append(PlannedEvent("Normal", "ScalingReplicaSet",
                                           f"Scaled up {'new pods ' if rollout else ''}to {_pods(spec.replicas)}"))
    elif len(new) > spec.replicas:
        actions.delete += deletion_order(new)[: len(new) - spec.replicas]
        actions.events.append(PlannedEvent("Normal", "ScalingReplicaSet", f"Scaled down to {_pods(spec.replicas)}"))


def _scale_paused(spec: DeploymentSpec, active: list[Obj], actions: _Actions) -> None:
    """Paused: scale the total, never replace old pods."""
    if len(active) < spec.replicas:
        actions.create = spec.replicas - len(active)
        actions.events.append(PlannedEvent("Normal", "ScalingReplicaSet", f"Scaled up to {_pods(spec.replicas)}"))
    elif len(active) > spec.replicas:
        actions.delete += deletion_order(active)[: len(active) - spec.replicas]
        actions.events.append(PlannedEvent("Normal", "ScalingReplicaSet", f"Scaled down to {_pods(spec.replicas)}"))


def _recreate(old: list[Obj], actions: _Actions) -> None:
    """Recreate: every old pod goes first; new pods come once none is left (the next look)."""
    actions.delete += old
    actions.events.append(PlannedEvent("Normal", "ScalingReplicaSet", "Scaled down old pods to 0"))


def _roll(spec: DeploymentSpec, new: list[Obj], old: list[Obj], now: datetime, actions: _Actions) -> None:
    """One step of a rolling update, within the surge and unavailability budgets."""
    rolling = spec.strategy.rolling_update if spec.strategy is not None else None
    surge, unavailable = resolve_fenceposts(rolling.max_surge if rolling else None,
                                            rolling.max_unavailable if rolling else None, spec.replicas)
    replicas = spec.replicas
    max_total = replicas + surge
    lowest_available = replicas - unavailable

    def available(pod: Obj) -> bool:
        return is_available(pod, spec.min_ready_seconds, now)

    # Scaled down mid-rollout: surplus new pods, then everything over the surge budget (old first).
    if len(new) > replicas:
        surplus = deletion_order(new)[: len(new) - replicas]
        actions.delete += surplus
        new = [p for p in new if p not in surplus]
    over_budget = len(new) + len(old) - max_total
    if over_budget > 0:
        surplus = deletion_order(old)[:over_budget]
        actions.delete += surplus
        old = [p for p in old if p not in surplus]

    # Scale up the new template as far as the surge allows.
    total = len(new) + len(old)
    create = max(0, min(max_total - total, replicas - len(new)))
    actions.create = create
    if create:
        actions.events.append(PlannedEvent("Normal", "ScalingReplicaSet",
                                           f"Scaled up new pods to {_pods(len(new) + create)}"))

    # Scale down the old template without dropping below the promised availability.
    new_available = sum(1 for p in new if available(p))
    new_unavailable = len(new) + create - new_available
    budget = (total + create) - lowest_available - new_unavailable
    removed: list[Obj] = []
    if budget > 0:
        unhealthy = deletion_order([p for p in old if not available(p)])[:budget]
        removed += unhealthy
        budget -= len(unhealthy)
        all_available = new_available + sum(1 for p in old if available(p))
        healthy_count = min(budget, all_available - lowest_available)
        if healthy_count > 0:
            removed += deletion_order([p for p in old if available(p)])[:healthy_count]
    if removed:
        actions.delete += removed
        actions.events.append(PlannedEvent("Normal", "ScalingReplicaSet",
                                           f"Scaled down old pods to {_pods(len(old) - len(removed))}"))


# ---- status --------------------------------------------------------------------------------------

def _status(deployment: Obj, spec: DeploymentSpec, counts: _Counts,
            now: datetime) -> tuple[dict[str, Any], float | None]:
    previous: Mapping[str, Any] = deployment.get("status") or {}
    conditions: list[dict[str, Any]] = [dict(c) for c in previous.get("conditions") or []]

    minimum = min_available(spec)
    if counts.available >= minimum:
        available = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                     "message": "Deployment has minimum availability.", "lastUpdateTime": ""}
    else:
        available = {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                     "message": "Deployment does not have minimum availability.", "lastUpdateTime": ""}
    conditions = set_condition(conditions, available, now)

    progressing, touch, deadline_in = _progressing(deployment, spec, counts, previous, now)
    conditions = set_condition(conditions, progressing, now, touch=touch)
    order = {"Available": 0, "Progressing": 1}
    conditions.sort(key=lambda c: order.get(str(c.get("type")), 2))

    status: dict[str, Any] = {
        "observedGeneration": int(deployment["metadata"].get("generation") or 1),
        "replicas": counts.replicas,
        "updatedReplicas": counts.updated,
        "readyReplicas": counts.ready,
        "availableReplicas": counts.available,
        "unavailableReplicas": max(max(spec.replicas, counts.replicas) - counts.available, 0),
        "conditions": conditions,
    }
    if "collisionCount" in previous:
        status["collisionCount"] = previous["collisionCount"]
    return status, deadline_in


def _progressing(deployment: Obj, spec: DeploymentSpec, counts: _Counts, previous: Mapping[str, Any],
                 now: datetime) -> tuple[dict[str, Any], bool, float | None]:
    """The Progressing condition, whether its lastUpdateTime moves (progress was made), and
    seconds until the progress deadline would pass."""
    name = deployment["metadata"]["name"]
    if spec.paused:
        return ({"type": "Progressing", "status": "Unknown", "reason": "DeploymentPaused",
                 "message": "Deployment is paused", "lastUpdateTime": ""}, False, None)
    complete = counts.updated == spec.replicas == counts.replicas and counts.available >= spec.replicas
    if complete:
        return ({"type": "Progressing", "status": "True", "reason": "NewPodsAvailable",
                 "message": f'Deployment "{name}" has successfully progressed.', "lastUpdateTime": ""},
                False, None)
    current = find_condition(previous.get("conditions"), "Progressing")
    before = (previous.get("replicas", 0), previous.get("updatedReplicas", 0), previous.get("readyReplicas", 0),
              previous.get("availableReplicas", 0))
    after = (counts.replicas, counts.updated, counts.ready, counts.available)
    generation = int(deployment["metadata"].get("generation") or 1)
    progressed = before != after or previous.get("observedGeneration") != generation
    deadline = spec.progress_deadline_seconds
    updating = {"type": "Progressing", "status": "True", "reason": "PodsUpdated",
                "message": f'Deployment "{name}" is progressing.', "lastUpdateTime": ""}
    if progressed or current is None or current.get("reason") in ("NewPodsAvailable", "DeploymentPaused"):
        return updating, True, float(deadline) if deadline else None
    if current.get("reason") == "ProgressDeadlineExceeded":
        return dict(current), False, None
    last = parse_time(current.get("lastUpdateTime"))
    if deadline and last is not None:
        left = deadline - (now - last).total_seconds()
        if left <= 0:
            return ({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                     "message": f'Deployment "{name}" has timed out progressing.', "lastUpdateTime": ""},
                    False, None)
        return dict(current), False, left
    return dict(current), False, None
