"""Owner references: background, foreground and orphan propagation.

On a real cluster the garbage collector works asynchronously, so every expectation about
dependents is polled until a (generous) deadline."""

from __future__ import annotations

from capstan.store.base import Store
from tests.contract.helpers import (
    CONFIGMAPS,
    DEPLOYMENTS,
    JOBS,
    PODS,
    configmap,
    deployment,
    eventually,
    gone,
    job,
    owner_ref,
    pod,
    wait_gone,
)

FINALIZER = "example.com/hold"


async def _family(store: Store, ns: str) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
    """A Job owning a Pod, which owns a ConfigMap (dependents of other kinds, two levels deep)."""
    owner = await store.create(job("owner", ns))
    child = await store.create(pod("child", ns, ownerReferences=[owner_ref(owner)]))
    grandchild = await store.create(configmap("grandchild", ns, ownerReferences=[owner_ref(child)]))
    return owner, child, grandchild


async def test_background_deletes_the_owner_then_its_dependents(store: Store, ns: str) -> None:
    await _family(store, ns)
    unrelated = await store.create(pod("unrelated", ns))
    assert await store.delete(JOBS, "owner", ns, propagation_policy="Background") is None
    assert await gone(store, JOBS, "owner", ns)
    await wait_gone(store, PODS, "child", ns)
    await wait_gone(store, CONFIGMAPS, "grandchild", ns)
    assert await store.get(PODS, "unrelated", ns) == unrelated


async def test_background_keeps_a_dependent_that_has_another_live_owner(store: Store, ns: str) -> None:
    first = await store.create(configmap("first-owner", ns))
    second = await store.create(configmap("second-owner", ns))
    await store.create(configmap("shared", ns, ownerReferences=[owner_ref(first), owner_ref(second)]))
    await store.delete(CONFIGMAPS, "first-owner", ns)

    async def only_the_live_owner_remains() -> None:
        shared = await store.get(CONFIGMAPS, "shared", ns)
        assert [ref["uid"] for ref in shared["metadata"].get("ownerReferences", [])] == [second["metadata"]["uid"]]
    await eventually(only_the_live_owner_remains)


async def test_background_honours_dependent_finalizers(store: Store, ns: str) -> None:
    owner = await store.create(configmap("owner", ns))
    await store.create(configmap("held", ns, ownerReferences=[owner_ref(owner)], finalizers=[FINALIZER]))
    await store.delete(CONFIGMAPS, "owner", ns)

    async def marked() -> None:
        held = await store.get(CONFIGMAPS, "held", ns)
        assert held["metadata"].get("deletionTimestamp")
    await eventually(marked)
    await store.patch(CONFIGMAPS, "held", ns, {"metadata": {"finalizers": None}})
    await wait_gone(store, CONFIGMAPS, "held", ns)


async def test_foreground_removes_dependents_before_the_owner(store: Store, ns: str) -> None:
    owner = await store.create(deployment("owner", ns))
    await store.create(pod("held", ns, ownerReferences=[{**owner_ref(owner), "blockOwnerDeletion": True}],
                           finalizers=[FINALIZER]))
    await store.create(pod("free", ns, ownerReferences=[{**owner_ref(owner), "blockOwnerDeletion": True}]))

    remaining = await store.delete(DEPLOYMENTS, "owner", ns, propagation_policy="Foreground")
    assert remaining is not None
    assert remaining["metadata"]["deletionTimestamp"]
    assert "foregroundDeletion" in remaining["metadata"]["finalizers"]
    await wait_gone(store, PODS, "free", ns)

    async def held_is_terminating() -> None:
        held = await store.get(PODS, "held", ns)
        assert held["metadata"].get("deletionTimestamp")
    await eventually(held_is_terminating)
    # The owner waits for the dependent a finalizer still holds.
    assert (await store.get(DEPLOYMENTS, "owner", ns))["metadata"]["deletionTimestamp"]

    await store.patch(PODS, "held", ns, {"metadata": {"finalizers": None}})
    await wait_gone(store, PODS, "held", ns)
    await wait_gone(store, DEPLOYMENTS, "owner", ns)


async def test_foreground_without_dependents_deletes_at_once(store: Store, ns: str) -> None:
    await store.create(configmap("lonely", ns))
    await store.delete(CONFIGMAPS, "lonely", ns, propagation_policy="Foreground")
    await wait_gone(store, CONFIGMAPS, "lonely", ns)


async def test_orphan_leaves_dependents_without_the_owner_reference(store: Store, ns: str) -> None:
    owner = await store.create(job("owner", ns))
    other = await store.create(configmap("other-owner", ns))
    await store.create(pod("orphan", ns, ownerReferences=[owner_ref(owner)]))
    await store.create(pod("two-owners", ns, ownerReferences=[owner_ref(owner), owner_ref(other)]))
    await store.delete(JOBS, "owner", ns, propagation_policy="Orphan")
    await wait_gone(store, JOBS, "owner", ns)

    async def references_dropped() -> None:
        orphan = await store.get(PODS, "orphan", ns)
        assert not orphan["metadata"].get("ownerReferences")
        two = await store.get(PODS, "two-owners", ns)
        assert [ref["uid"] for ref in two["metadata"]["ownerReferences"]] == [other["metadata"]["uid"]]
    await eventually(references_dropped)
