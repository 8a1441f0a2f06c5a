"""Garbage-collection decisions."""

from __future__ import annotations

from capstan.core.workloads.gc import OwnerState, decide, owner_state

A = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a", "uid": "ua"}
B = {"apiVersion": "batch/v1", "kind": "Job", "name": "b", "uid": "ub"}


def test_owner_state_compares_uid() -> None:
    assert owner_state(A, None) is OwnerState.ABSENT
    assert owner_state(A, {"metadata": {"uid": "other"}}) is OwnerState.ABSENT  # re-created namesake
    assert owner_state(A, {"metadata": {"uid": "ua"}}) is OwnerState.PRESENT


def test_decisions() -> None:
    assert decide([], []).action == "keep"
    assert decide([A], [OwnerState.ABSENT]).action == "delete"
    assert decide([A, B], [OwnerState.ABSENT, OwnerState.ABSENT]).action == "delete"
    assert decide([A], [OwnerState.PRESENT]).action == "keep"
    assert decide([A], [OwnerState.UNKNOWN]).action == "keep"
    pruned = decide([A, B], [OwnerState.ABSENT, OwnerState.UNKNOWN])
    assert pruned.action == "prune" and pruned.remaining_refs == (B,)
