"""Behaviour of the SQLite store beyond the shared Store contract (not parametrized)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from capstan.api.errors import ApiError, BadRequestError, ConflictError, InvalidError, NotFoundError
from capstan.store.base import Obj
from capstan.store.sqlite import SqliteStore
from tests.contract.helpers import CONFIGMAPS, DEPLOYMENTS, REGISTRY, configmap, deployment, owner_ref, rv


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(":memory:", REGISTRY, clock=lambda: datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))
    yield opened
    await opened.close()


async def test_the_clock_sets_creation_and_deletion_timestamps(store: SqliteStore) -> None:
    created = await store.create(configmap("c", "default", finalizers=["x/y"]))
    assert created["metadata"]["creationTimestamp"] == "2024-05-06T07:08:09Z"
    deleting = await store.delete(CONFIGMAPS, "c", "default")
    assert deleting is not None and deleting["metadata"]["deletionTimestamp"] == "2024-05-06T07:08:09Z"


async def test_validators_see_new_and_old_and_can_reject(store: SqliteStore) -> None:
    seen: list[tuple[str, str | None]] = []

    async def one_replica_max(new: Obj, old: Obj | None) -> None:
        seen.append((new["metadata"]["name"], old and old["metadata"]["resourceVersion"]))
        if new["spec"]["replicas"] > 3:
            raise InvalidError.from_causes("Deployment", new["metadata"]["name"], [])

    store.add_validator("Deployment", one_replica_max)
    created = await store.create(deployment("web", "default", replicas=1))
    with pytest.raises(InvalidError):
        await store.update_scale(DEPLOYMENTS, "web", "default", 5)
    with pytest.raises(InvalidError):
        await store.create(deployment("big", "default", replicas=9))
    assert (await store.get(DEPLOYMENTS, "web", "default"))["spec"]["replicas"] == 1
    assert seen[0] == ("web", None)
    assert seen[1] == ("web", created["metadata"]["resourceVersion"])


async def test_a_sync_validator_works_too(store: SqliteStore) -> None:
    def no_forbidden_data(new: Obj, old: Obj | None) -> None:
        if "forbidden" in (new.get("data") or {}):
            raise InvalidError.from_causes("ConfigMap", new["metadata"]["name"], [])

    store.add_validator("ConfigMap", no_forbidden_data)
    await store.create(configmap("ok", "default"))
    with pytest.raises(InvalidError):
        await store.patch(CONFIGMAPS, "ok", "default", {"data": {"forbidden": "1"}})


async def test_resource_version_must_not_be_set_on_create(store: SqliteStore) -> None:
    obj = configmap("c", "default")
    obj["metadata"]["resourceVersion"] = "5"
    with pytest.raises(BadRequestError):
        await store.create(obj)


async def test_dry_run_update_changes_nothing(store: SqliteStore) -> None:
    created = await store.create(configmap("c", "default", {"a": "1"}))
    preview = await store.update({**created, "data": {"a": "2"}}, dry_run=True)
    assert preview["data"] == {"a": "2"}
    assert await store.get(CONFIGMAPS, "c", "default") == created


async def test_update_status_of_a_kind_without_status_is_not_found(store: SqliteStore) -> None:
    created = await store.create(configmap("c", "default"))
    with pytest.raises(NotFoundError):
        await store.update_status(created)


async def test_bad_continue_tokens_and_versions_are_bad_requests(store: SqliteStore) -> None:
    with pytest.raises(BadRequestError):
        await store.list(CONFIGMAPS, "default", limit=1, continue_token="not-a-token")
    with pytest.raises(BadRequestError):
        await anext(store.watch(CONFIGMAPS, "default", resource_version="abc"))


async def test_update_with_a_stale_uid_conflicts(store: SqliteStore) -> None:
    created = await store.create(configmap("c", "default"))
    await store.delete(CONFIGMAPS, "c", "default")
    await store.create(configmap("c", "default"))
    stale = {**created, "metadata": {**created["metadata"], "resourceVersion": None}}
    with pytest.raises(ConflictError):
        await store.update(stale)


async def test_cluster_scoped_kinds_drop_the_namespace(store: SqliteStore) -> None:
    created = await store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "namespace": "x"}})
    assert "namespace" not in created["metadata"]


async def test_a_deletion_cascade_is_one_event_per_object(store: SqliteStore) -> None:
    owner = await store.create(configmap("owner", "default"))
    for i in range(3):
        await store.create(configmap(f"dep-{i}", "default", ownerReferences=[owner_ref(owner)]))
    start = str(store.revision)
    await store.delete(CONFIGMAPS, "owner", "default")
    events = store.watch(CONFIGMAPS, "default", resource_version=start)
    received = [await anext(events) for _ in range(4)]
    assert [(e.type, e.object["metadata"]["name"]) for e in received] == [
        ("DELETED", "owner"), ("DELETED", "dep-0"), ("DELETED", "dep-1"), ("DELETED", "dep-2")]
    assert [rv(e.object) for e in received] == list(range(int(start) + 1, int(start) + 5))


async def test_the_file_has_the_expected_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    opened = await SqliteStore.open(path, REGISTRY)
    await opened.create(configmap("c", "default"))
    await opened.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


async def test_watch_history_is_compacted_to_the_limit(tmp_path: Path) -> None:
    opened = await SqliteStore.open(tmp_path / "state.db", REGISTRY, history_limit=10)
    try:
        for i in range(30):
            await opened.create(configmap(f"c{i}", "default"))
        with pytest.raises(ApiError) as caught:
            await anext(opened.watch(CONFIGMAPS, "default", resource_version=str(opened.revision - 11)))
        assert caught.value.code == 410
        events = opened.watch(CONFIGMAPS, "default", resource_version=str(opened.revision - 10))
        assert (await anext(events)).object["metadata"]["name"] == "c20"
    finally:
        await opened.close()


async def test_mutators_edit_before_validators_and_on_create_only_when_asked(store: SqliteStore) -> None:
    seen: list[int] = []

    def default_replicas(new: Obj, old: Obj | None) -> None:
        if old is None:
            new["spec"]["replicas"] = 2
            new["metadata"].setdefault("labels", {})["mutated"] = "yes"

    def record(new: Obj, old: Obj | None) -> None:
        seen.append(new["spec"]["replicas"])

    store.add_mutator("Deployment", default_replicas)
    store.add_validator("Deployment", record)
    created = await store.create(deployment("web", "default", replicas=7))
    assert created["spec"]["replicas"] == 2 and created["metadata"]["labels"]["mutated"] == "yes"
    stored = await store.get(DEPLOYMENTS, "web", "default")
    assert stored["spec"]["replicas"] == 2 and stored["metadata"]["uid"] == created["metadata"]["uid"]
    updated = await store.update({**stored, "spec": {**stored["spec"], "replicas": 5}})
    assert updated["spec"]["replicas"] == 5
    assert seen == [2, 5]
