"""Informers: list + watch into a cache, with handlers told about every difference, including
deletions that happened while the informer was not watching."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from tests.integration.workloads_kit import eventually

from capstan.api.registry import default_registry
from capstan.controllers.informer import Informer
from capstan.store.base import Obj
from capstan.store.sqlite import SqliteStore


def configmap(name: str, value: str = "1") -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": value}}


async def until(predicate: Callable[[], bool]) -> None:
    async def check() -> bool:
        return predicate()

    await eventually(check, what="the informer to catch up")


async def test_cache_follows_changes_and_relist_reports_what_was_missed(tmp_path: Path) -> None:
    registry = default_registry()
    store = await SqliteStore.open(tmp_path / "state.db", registry, history_limit=5)
    configmaps = registry.lookup("configmaps")
    seen: list[tuple[str, str]] = []
    try:
        await store.create(configmap("keep"))
        await store.create(configmap("doomed"))
        informer = Informer(store, configmaps, namespace="default")
        informer.add_handler(lambda change, obj, old: seen.append((change, obj["metadata"]["name"])))
        stop = asyncio.Event()
        task = asyncio.create_task(informer.run(stop))
        await informer.wait_synced()
        assert sorted(seen) == [("ADDED", "doomed"), ("ADDED", "keep")]

        current = await store.get(configmaps, "keep")
        current["data"] = {"v": "2"}
        await store.update(current)
        await until(lambda: ("MODIFIED", "keep") in seen)
        assert informer.get("keep", "default")["data"] == {"v": "2"}  # type: ignore[index]

        stop.set()
        await task
        # While nobody watches: a delete, and enough writes to compact the history past it.
        await store.delete(configmaps, "doomed", "default")
        for index in range(10):
            await store.create(configmap(f"later-{index}"))

        seen.clear()
        stop = asyncio.Event()
        task = asyncio.create_task(informer.run(stop))
        await until(lambda: ("DELETED", "doomed") in seen and len(informer.list()) == 11)
        assert informer.get("doomed", "default") is None
        assert {name for change, name in seen if change == "ADDED"} == {f"later-{i}" for i in range(10)}
        assert ("ADDED", "keep") not in seen, "an unchanged object is not reported again"
        stop.set()
        await task
    finally:
        await store.close()


async def test_a_handler_added_late_is_replayed_the_cache(tmp_path: Path) -> None:
    registry = default_registry()
    store = await SqliteStore.open(tmp_path / "state.db", registry)
    try:
        await store.create(configmap("a"))
        informer = Informer(store, registry.lookup("configmaps"))
        stop = asyncio.Event()
        task = asyncio.create_task(informer.run(stop))
        await informer.wait_synced()
        late: list[str] = []
        informer.add_handler(lambda change, obj, old: late.append(f"{change} {obj['metadata']['name']}"))
        assert late == ["ADDED a"]
        stop.set()
        await task
    finally:
        await store.close()
