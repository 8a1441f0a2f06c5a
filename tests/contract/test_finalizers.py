"""Finalizers hold an object in deletion until the last one is removed."""

from __future__ import annotations

import pytest

from capstan.api.errors import InvalidError, NotFoundError
from capstan.store.base import Store
from tests.contract.helpers import CONFIGMAPS, configmap, wait_gone

FINALIZER = "example.com/cleanup"


async def test_delete_with_finalizers_marks_and_keeps_the_object(store: Store, ns: str) -> None:
    await store.create(configmap("held", ns, finalizers=[FINALIZER]))
    remaining = await store.delete(CONFIGMAPS, "held", ns)
    assert remaining is not None
    stamp = remaining["metadata"]["deletionTimestamp"]
    assert remaining["metadata"]["finalizers"] == [FINALIZER]

    stored = await store.get(CONFIGMAPS, "held", ns)
    assert stored["metadata"]["deletionTimestamp"] == stamp
    again = await store.delete(CONFIGMAPS, "held", ns)
    assert again is not None and again["metadata"]["deletionTimestamp"] == stamp

    # Other changes are still allowed while the object is being deleted.
    relabelled = await store.update({**stored, "metadata": {**stored["metadata"], "labels": {"a": "b"}}})
    assert relabelled["metadata"]["deletionTimestamp"] == stamp


async def test_removing_the_last_finalizer_deletes_the_object(store: Store, ns: str) -> None:
    await store.create(configmap("held", ns, finalizers=[FINALIZER, "example.com/second"]))
    await store.delete(CONFIGMAPS, "held", ns)
    current = await store.get(CONFIGMAPS, "held", ns)
    current["metadata"]["finalizers"] = ["example.com/second"]
    current = await store.update(current)
    assert (await store.get(CONFIGMAPS, "held", ns))["metadata"]["finalizers"] == ["example.com/second"]
    await store.patch(CONFIGMAPS, "held", ns, {"metadata": {"finalizers": None}})
    await wait_gone(store, CONFIGMAPS, "held", ns)


async def test_no_new_finalizers_after_deletion_started(store: Store, ns: str) -> None:
    await store.create(configmap("held", ns, finalizers=[FINALIZER]))
    await store.delete(CONFIGMAPS, "held", ns)
    current = await store.get(CONFIGMAPS, "held", ns)
    current["metadata"]["finalizers"] = [FINALIZER, "example.com/late"]
    with pytest.raises(InvalidError) as caught:
        await store.update(current)
    # Kubernetes reports this cause twice (two validation passes); the field is what matters.
    assert {c.field for c in caught.value.causes} == {"metadata.finalizers"}


async def test_finalizers_do_not_block_without_a_delete(store: Store, ns: str) -> None:
    created = await store.create(configmap("held", ns, finalizers=[FINALIZER]))
    created["metadata"]["finalizers"] = []
    updated = await store.update(created)
    assert "deletionTimestamp" not in updated["metadata"]
    assert await store.get(CONFIGMAPS, "held", ns)


async def test_deleting_a_missing_object_is_not_found(store: Store, ns: str) -> None:
    with pytest.raises(NotFoundError):
        await store.delete(CONFIGMAPS, "never", ns)
