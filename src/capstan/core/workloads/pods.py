"""Reading Pods as the workload controllers see them: phase, readiness, availability, order.

Pods are plain wire dicts (camelCase, as the API serves them). Nothing here reads a clock; the
moment of a decision is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = Mapping[str, Any]

FINISHED_PHASES = ("Succeeded", "Failed")
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PodRef:
    """A pod a plan wants deleted; the uid is a delete precondition (never delete a namesake)."""

    name: str
    uid: str


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(moment: datetime) -> str:
    """Seconds-precision RFC 3339 in UTC, as Kubernetes writes status times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(pod: Obj) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def _status(pod: Obj) -> Mapping[str, Any]:
    return pod.get("status") or {}


def ref_of(pod: Obj) -> PodRef:
    meta = _meta(pod)
    return PodRef(str(meta.get("name") or ""), str(meta.get("uid") or ""))


def phase(pod: Obj) -> str:
    return str(_status(pod).get("phase") or "Pending")


def is_terminating(pod: Obj) -> bool:
    return bool(_meta(pod).get("deletionTimestamp"))


def is_finished(pod: Obj) -> bool:
    return phase(pod) in FINISHED_PHASES


def is_active(pod: Obj) -> bool:
    """Counts toward the desired number: neither finished nor being deleted."""
    return not is_finished(pod) and not is_terminating(pod)


def is_scheduled(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _ready_condition(pod: Obj) -> Mapping[str, Any] | None:
    for condition in _status(pod).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition  # type: ignore[no-any-return]
    return None


def is_ready(pod: Obj) -> bool:
    condition = _ready_condition(pod)
    return condition is not None and condition.get("status") == "True" and phase(pod) == "Running"


def ready_since(pod: Obj) -> datetime | None:
    condition = _ready_condition(pod)
    if condition is None or condition.get("status") != "True":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def is_available(pod: Obj, min_ready_seconds: int, now: datetime) -> bool:
    """Ready, not being deleted, and ready for at least ``min_ready_seconds``."""
    if not is_ready(pod) or is_terminating(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    # Without a transition time there is no way to wait; take the kubelet's word for it.
    return since is None or (now - since).total_seconds() >= min_ready_seconds


def seconds_until_available(pod: Obj, min_ready_seconds: int, now: datetime) -> float | None:
    """When a ready pod will count as available, or None when that is not a matter of time."""
    if not is_ready(pod) or is_terminating(pod) or min_ready_seconds <= 0:
        return None
    since = ready_since(pod)
    if since is None:
        return None
    remaining = min_ready_seconds - (now - since).total_seconds()
    return remaining if remaining > 0 else None


def restart_count(pod: Obj) -> int:
    status = _status(pod)
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return sum(int(s.get("restartCount") or 0) for s in statuses)


def created_at(pod: Obj) -> datetime:
    return parse_time(_meta(pod).get("creationTimestamp")) or _EPOCH


def is_controlled_by(obj: Obj, owner_uid: str) -> bool:
    refs = _meta(obj).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == owner_uid for ref in refs)


def deletion_order(pods: Sequence[Obj]) -> list[Obj]:
    """Pods in the order a scale-down removes them, cheapest loss first (as Kubernetes ranks
    them): not scheduled, then pending/unknown/running, then not ready, then ready for the
    shortest time, then most restarts, then newest."""

    def key(pod: Obj) -> tuple[int, int, int, float, int, float, str]:
        since = ready_since(pod) if is_ready(pod) else None
        return (
            1 if is_scheduled(pod) else 0,
            _PHASE_RANK.get(phase(pod), 2),
            1 if is_ready(pod) else 0,
            -(since or _EPOCH).timestamp(),
            -restart_count(pod),
            -created_at(pod).timestamp(),
            str(_meta(pod).get("name") or ""),
        )

    return sorted(pods, key=key)


def set_condition(conditions: Sequence[Mapping[str, Any]], new: Mapping[str, Any], now: datetime,
                  *, touch: bool = False) -> list[dict[str, Any]]:
    """``conditions`` with ``new`` in place of the condition of its type.

    ``lastTransitionTime`` moves only when the status flips; ``lastUpdateTime`` (written when
    ``new`` has the key, Deployment style) moves when reason or message change or ``touch``."""
    stamp = format_time(now)
    result: list[dict[str, Any]] = []
    replaced = False
    for current in conditions:
        if current.get("type") != new["type"]:
            result.append(dict(current))
            continue
        replaced = True
        merged = dict(new)
        same_status = current.get("status") == new["status"]
        merged["lastTransitionTime"] = current.get("lastTransitionTime", stamp) if same_status else stamp
        if "lastUpdateTime" in new or "lastUpdateTime" in current:
            unchanged = same_status and current.get("reason") == new.get("reason") and \
                current.get("message") == new.get("message")
            merged["lastUpdateTime"] = current.get("lastUpdateTime", stamp) if unchanged and not touch else stamp
        if "lastProbeTime" in current or "lastProbeTime" in new:
            merged["lastProbeTime"] = stamp if not same_status or touch else current.get("lastProbeTime", stamp)
        result.append(merged)
    if not replaced:
        merged = dict(new)
        merged["lastTransitionTime"] = stamp
        for key in ("lastUpdateTime", "lastProbeTime"):
            if key in new:
                merged[key] = stamp
        result.append(merged)
    return result


def find_condition(conditions: Sequence[Mapping[str, Any]] | None, kind: str) -> Mapping[str, Any] | None:
    for condition in conditions or []:
        if condition.get("type") == kind:
            return condition
    return None
