"""Garbage-collection decisions: what to do with an object whose owners may be gone.

The store deletes dependents itself when an owner is deleted; this decision backs it up for
races (a dependent created just as its owner went) and for objects written while nothing was
running. An owner counts as gone only when the authoritative store says so: missing, or
present under another uid (deleted and re-created under the same name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal


class OwnerState(Enum):
    PRESENT = "present"
    ABSENT = "absent"      # not found, or found with a different uid
    UNKNOWN = "unknown"    # kind not served, lookup failed: never a reason to delete


@dataclass(frozen=True)
class GcDecision:
    action: Literal["keep", "delete", "prune"]
    # For "prune": the owner references that remain (the absent ones removed).
    remaining_refs: tuple[Mapping[str, Any], ...] = ()


def owner_state(ref: Mapping[str, Any], found: Mapping[str, Any] | None) -> OwnerState:
    """Compare an owner reference with what the store returned for its kind and name."""
    if found is None:
        return OwnerState.ABSENT
    uid = (found.get("metadata") or {}).get("uid")
    return OwnerState.PRESENT if uid == ref.get("uid") else OwnerState.ABSENT


def decide(refs: Sequence[Mapping[str, Any]], states: Sequence[OwnerState]) -> GcDecision:
    """Delete when every owner is gone; drop only the dangling references when some owner
    remains (or cannot be checked); otherwise keep."""
    if not refs:
        return GcDecision("keep")
    absent = [state is OwnerState.ABSENT for state in states]
    if all(absent):
        return GcDecision("delete")
    if any(absent):
        return GcDecision("prune", tuple(ref for ref, gone in zip(refs, absent, strict=True) if not gone))
    return GcDecision("keep")
