"""Pod conditions: replace one by type, keeping lastTransitionTime while the status holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def set_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str, status: str, now: str, *,
                  reason: str | None = None, message: str | None = None) -> list[dict[str, Any]]:
    """The conditions with ``type_`` set; ``now`` (RFC 3339) becomes lastTransitionTime only
    when the status changes. Order is kept; a new type goes last."""
    updated: list[dict[str, Any]] = []
    found = False
    for condition in conditions or []:
        if condition.get("type") != type_:
            updated.append(dict(condition))
            continue
        found = True
        transition = condition.get("lastTransitionTime") if condition.get("status") == status else None
        updated.append(_condition(type_, status, transition or now, reason, message))
    if not found:
        updated.append(_condition(type_, status, now, reason, message))
    return updated


def _condition(type_: str, status: str, transition: str, reason: str | None,
               message: str | None) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": type_, "status": status, "lastTransitionTime": transition}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def find_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
