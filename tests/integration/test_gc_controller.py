"""The garbage collector against the real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.workloads_kit import eventually, open_store, running

from capstan.api.errors import NotFoundError
from capstan.controllers.events import EventRecorder
from capstan.controllers.gc import GarbageCollector
from capstan.controllers.informer import InformerFactory
from capstan.store.base import Obj, Store


def pod(name: str, *owners: dict[str, Any]) -> Obj:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if owners:
        meta["ownerReferences"] = list(owners)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [{"name": "main"}]}}


def ref(kind: str, api_version: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid}


def collector(sweep_interval: float = 60.0) -> Any:
    def factory(informers: InformerFactory, store: Store, recorder: EventRecorder) -> GarbageCollector:
        return GarbageCollector(informers, store, recorder, sweep_interval=sweep_interval)
    return factory


async def exists(store: Store, name: str) -> Obj | None:
    try:
        return await store.get(store.registry.lookup("pods"), name, "default")
    except NotFoundError:
        return None


async def job(store: Store, name: str) -> Obj:
    return await store.create({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main"}]}}}})


async def test_orphans_written_while_down_are_collected_and_owned_objects_kept(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    owner = await job(store, "owner")
    recreated = await job(store, "recreated")
    live = ref("Job", "batch/v1", "owner", owner["metadata"]["uid"])
    # Written "while Capstan was down": owners that never existed, or a namesake with another uid.
    await store.create(pod("orphan", ref("Job", "batch/v1", "vanished", "no-such-uid")))
    await store.create(pod("stale-uid", ref("Job", "batch/v1", "recreated", "old-uid")))
    await store.create(pod("owned", live))
    await store.create(pod("half", live, ref("Deployment", "apps/v1", "gone", "gone-uid")))
    await store.create(pod("unknown-kind", ref("Widget", "example.com/v1", "w", "w-uid")))
    await store.create(pod("free"))
    assert recreated

    async with running(store, collector()):
        async def collected() -> bool:
            return await exists(store, "orphan") is None and await exists(store, "stale-uid") is None

        await eventually(collected, what="the orphans deleted")

        async def pruned() -> Obj | None:
            half = await exists(store, "half")
            assert half is not None
            return half if half["metadata"]["ownerReferences"] == [live] else None

        await eventually(pruned, what="the dangling reference removed")
        for name in ("owned", "unknown-kind", "free"):
            assert await exists(store, name) is not None, name
    await store.close()


async def test_dependent_created_after_its_owner_went_is_collected(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    async with running(store, collector()):
        owner = await job(store, "short-lived")
        owner_ref = ref("Job", "batch/v1", "short-lived", owner["metadata"]["uid"])
        await store.delete(store.registry.lookup("jobs"), "short-lived", "default")
        # A controller acting on a stale view creates a pod for the owner that just went.
        await store.create(pod("late", owner_ref))
        await eventually(lambda: _gone(store, "late"), what="the late dependent deleted")
    await store.close()


async def test_owner_not_yet_cached_is_not_a_reason_to_delete(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    async with running(store, collector(sweep_interval=0.05)):
        # ConfigMaps are not watched by this collector: only the store can vouch for the owner.
        owner = await store.create({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "cfg", "namespace": "default"}})
        fresh_job = await job(store, "fresh")
        await store.create(pod("by-configmap", ref("ConfigMap", "v1", "cfg", owner["metadata"]["uid"])))
        await store.create(pod("by-job", ref("Job", "batch/v1", "fresh", fresh_job["metadata"]["uid"])))
        await asyncio.sleep(0.5)  # several sweeps
        assert await exists(store, "by-configmap") is not None
        assert await exists(store, "by-job") is not None
    await store.close()


async def _gone(store: Store, name: str) -> bool:
    return await exists(store, name) is None
