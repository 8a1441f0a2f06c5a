"""Watch: ordering, replay from a version, selectors, resume, compaction, bookmarks."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest

from capstan.api.errors import GoneError
from capstan.store.base import Store, WatchEvent
from tests.contract.factories import StoreFactory, StoreOptions, StoreSession
from tests.contract.helpers import CONFIGMAPS, EVENT_SECONDS, PODS, collect, configmap, next_event, pod


@contextlib.asynccontextmanager
async def watching(store: Store, *args: object, **kwargs: object) -> AsyncIterator[AsyncIterator[WatchEvent]]:
    events = store.watch(*args, **kwargs)  # type: ignore[arg-type]
    try:
        yield events
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_events_arrive_in_order_with_growing_versions(store: Store, ns: str) -> None:
    start = (await store.list(CONFIGMAPS, ns)).resource_version
    async with watching(store, CONFIGMAPS, ns, resource_version=start) as events:
        created = await store.create(configmap("a", ns, {"v": "1"}))
        await store.update({**created, "data": {"v": "2"}})
        await store.create(configmap("b", ns))
        await store.delete(CONFIGMAPS, "a", ns)
        received = [await next_event(events) for _ in range(4)]
    assert [(e.type, e.object["metadata"]["name"]) for e in received] == [
        ("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert received[1].object["data"] == {"v": "2"}
    versions = [int(e.object["metadata"]["resourceVersion"]) for e in received]
    assert versions == sorted(versions) and len(set(versions)) == 4


async def test_watch_without_a_version_starts_with_the_current_objects(store: Store, ns: str) -> None:
    await store.create(configmap("existing-1", ns))
    await store.create(configmap("existing-2", ns))
    async with watching(store, CONFIGMAPS, ns) as events:
        assert sorted(await collect(events, 2)) == [("ADDED", "existing-1"), ("ADDED", "existing-2")]
        await store.create(configmap("live", ns))
        assert await collect(events, 1) == [("ADDED", "live")]


async def test_watch_from_a_version_replays_only_later_changes(store: Store, ns: str) -> None:
    await store.create(configmap("before", ns))
    start = (await store.list(CONFIGMAPS, ns)).resource_version
    await store.create(configmap("after-1", ns))
    await store.patch(CONFIGMAPS, "before", ns, {"data": {"x": "y"}})
    async with watching(store, CONFIGMAPS, ns, resource_version=start) as events:
        assert await collect(events, 2) == [("ADDED", "after-1"), ("MODIFIED", "before")]


async def test_watch_is_scoped_to_kind_and_namespace(store: Store, ns: str) -> None:
    start = (await store.list(CONFIGMAPS, ns)).resource_version
    async with watching(store, CONFIGMAPS, ns, resource_version=start) as events:
        await store.create(pod("not-a-configmap", ns))
        await store.create(configmap("other-namespace", "default"))
        await store.create(configmap("mine", ns))
        assert await collect(events, 1) == [("ADDED", "mine")]
    await store.delete(CONFIGMAPS, "other-namespace", "default")


async def test_label_and_field_selectors_filter_events(store: Store, ns: str) -> None:
    start = (await store.list(PODS, ns)).resource_version
    async with watching(store, PODS, ns, resource_version=start, label_selector="app=web") as by_label, \
            watching(store, PODS, ns, resource_version=start, field_selector="metadata.name=db-1") as by_field:
        await store.create(pod("db-1", ns, labels={"app": "db"}))
        await store.create(pod("web-1", ns, labels={"app": "web"}))
        await store.create(pod("web-2", ns, labels={"app": "web"}))
        await store.delete(PODS, "db-1", ns)
        assert await collect(by_label, 2) == [("ADDED", "web-1"), ("ADDED", "web-2")]
        assert await collect(by_field, 1) == [("ADDED", "db-1")]
        assert await deletion(by_field) == ("DELETED", "db-1")


async def deletion(events: AsyncIterator[WatchEvent]) -> tuple[str, str]:
    """The next event, skipping the MODIFIED that marks a Pod deleted: Kubernetes deletes Pods gracefully,
    first setting deletionTimestamp (even with a grace period of 0), then removing them."""
    event = await next_event(events)
    if event.type == "MODIFIED" and event.object["metadata"].get("deletionTimestamp"):
        event = await next_event(events)
    return event.type, event.object["metadata"]["name"]


async def test_close_ends_open_watches(store_factory: StoreFactory) -> None:
    async with store_factory.open(StoreOptions()) as (store, ns):
        events = store.watch(CONFIGMAPS, ns, resource_version=(await store.list(CONFIGMAPS, ns)).resource_version)
        reader = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.05)
        await store.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(reader, EVENT_SECONDS)


@pytest.mark.store_feature("reopen")
async def test_watch_resumes_from_a_version_after_the_store_is_reopened(session: StoreSession) -> None:
    store, ns = session.store, session.namespace
    await store.create(configmap("seen", ns))
    resume_from = (await store.list(CONFIGMAPS, ns)).resource_version
    await store.create(configmap("missed-1", ns))
    await store.delete(CONFIGMAPS, "seen", ns)
    store = await session.reopen()
    await store.create(configmap("after-restart", ns))
    async with watching(store, CONFIGMAPS, ns, resource_version=resume_from) as events:
        assert await collect(events, 3) == [("ADDED", "missed-1"), ("DELETED", "seen"), ("ADDED", "after-restart")]
    assert int((await store.list(CONFIGMAPS, ns)).resource_version) > int(resume_from)


@pytest.mark.store_feature("compaction")
async def test_a_compacted_version_is_gone(store_factory: StoreFactory) -> None:
    async with store_factory.open(StoreOptions(history_limit=5)) as (store, ns):
        first = await store.create(configmap("churn", ns, {"n": "0"}))
        for n in range(1, 20):
            await store.patch(CONFIGMAPS, "churn", ns, {"data": {"n": str(n)}})
        events = store.watch(CONFIGMAPS, ns, resource_version=first["metadata"]["resourceVersion"])
        with pytest.raises(GoneError) as caught:
            await anext(events)
        assert caught.value.code == 410
        assert caught.value.reason == "Expired"
        # The watch cache's wording, or etcd's (via the API server) when the kind is watched without the cache.
        assert re.fullmatch(rf"too old resource version: {first['metadata']['resourceVersion']} \(\d+\)"
                            r"|The resourceVersion for the provided watch is too old\.", str(caught.value))
        # A recent version still works.
        latest = (await store.list(CONFIGMAPS, ns)).resource_version
        async with watching(store, CONFIGMAPS, ns, resource_version=latest) as fresh:
            await store.patch(CONFIGMAPS, "churn", ns, {"data": {"n": "final"}})
            assert await collect(fresh, 1) == [("MODIFIED", "churn")]


@pytest.mark.store_feature("bookmark_interval")
async def test_bookmarks_carry_the_current_version(store_factory: StoreFactory) -> None:
    async with store_factory.open(StoreOptions(bookmark_interval=0.2)) as (store, ns):
        written = await store.create(configmap("marker", ns))
        async with watching(store, CONFIGMAPS, ns, resource_version=written["metadata"]["resourceVersion"]) as events:
            bookmark = await next_event(events, skip_bookmarks=False)
        assert bookmark.type == "BOOKMARK"
        assert bookmark.object["kind"] == "ConfigMap"
        assert bookmark.object["apiVersion"] == "v1"
        assert int(bookmark.object["metadata"]["resourceVersion"]) >= int(written["metadata"]["resourceVersion"])


@pytest.mark.store_feature("watch_queue_limit")
async def test_a_watcher_that_falls_behind_gets_gone_and_writers_do_not_wait(store_factory: StoreFactory) -> None:
    async with store_factory.open(StoreOptions(watch_queue_limit=5)) as (store, ns):
        start = (await store.list(CONFIGMAPS, ns)).resource_version
        await store.create(configmap("first", ns))
        events = store.watch(CONFIGMAPS, ns, resource_version=start)
        assert (await next_event(events)).object["metadata"]["name"] == "first"
        for i in range(20):  # nobody reads: these must not block
            await asyncio.wait_for(store.create(configmap(f"flood-{i}", ns)), EVENT_SECONDS)
        with pytest.raises(GoneError):
            await next_event(events)
        assert len((await store.list(CONFIGMAPS, ns)).items) == 21
