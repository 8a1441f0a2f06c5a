"""Optimistic concurrency: many writers, one counter, no lost update."""

from __future__ import annotations

import asyncio

from capstan.api.errors import ConflictError
from capstan.store.base import Store
from tests.contract.helpers import CONFIGMAPS, configmap

WRITERS = 20
INCREMENTS_EACH = 3


async def test_concurrent_increments_with_retry_on_conflict_lose_nothing(store: Store, ns: str) -> None:
    await store.create(configmap("counter", ns, {"value": "0"}))
    conflicts = 0

    async def increment() -> None:
        nonlocal conflicts
        while True:
            current = await store.get(CONFIGMAPS, "counter", ns)
            await asyncio.sleep(0)  # let the other writers read the same version
            current["data"]["value"] = str(int(current["data"]["value"]) + 1)
            try:
                await store.update(current)
                return
            except ConflictError:
                conflicts += 1

    async def writer() -> None:
        for _ in range(INCREMENTS_EACH):
            await increment()

    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    final = await store.get(CONFIGMAPS, "counter", ns)
    assert final["data"]["value"] == str(WRITERS * INCREMENTS_EACH)


async def test_patch_with_a_stale_resource_version_precondition_conflicts(store: Store, ns: str) -> None:
    created = await store.create(configmap("guarded", ns, {"v": "1"}))
    await store.patch(CONFIGMAPS, "guarded", ns, {"data": {"v": "2"}})
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "data": {"v": "3"}}
    try:
        await store.patch(CONFIGMAPS, "guarded", ns, stale)
    except ConflictError:
        pass
    else:
        raise AssertionError("a stale resourceVersion in a patch must conflict")
    assert (await store.get(CONFIGMAPS, "guarded", ns))["data"] == {"v": "2"}
