"""Main resource vs status subresource, and when generation moves."""

from __future__ import annotations

import pytest

from capstan.api.errors import ConflictError
from capstan.store.base import Store
from tests.contract.helpers import DEPLOYMENTS, deployment, rv


async def test_create_drops_status_and_starts_at_generation_1(store: Store, ns: str) -> None:
    obj = deployment("web", ns)
    obj["status"] = {"replicas": 7}
    created = await store.create(obj)
    assert created["metadata"]["generation"] == 1
    assert "replicas" not in (created.get("status") or {})


async def test_spec_change_bumps_generation_and_status_write_does_not(store: Store, ns: str) -> None:
    created = await store.create(deployment("web", ns, replicas=1))
    scaled = {**created, "spec": {**created["spec"], "replicas": 3}}
    updated = await store.update(scaled)
    assert updated["metadata"]["generation"] == 2

    with_status = {**updated, "status": {"replicas": 3, "observedGeneration": 2}}
    status_written = await store.update_status(with_status)
    assert status_written["metadata"]["generation"] == 2
    assert status_written["status"]["replicas"] == 3
    assert rv(status_written) > rv(updated)

    labelled = {**status_written, "metadata": {**status_written["metadata"], "labels": {"tier": "front"}}}
    relabelled = await store.update(labelled)
    assert relabelled["metadata"]["generation"] == 2
    assert relabelled["metadata"]["labels"] == {"tier": "front"}


async def test_update_ignores_status(store: Store, ns: str) -> None:
    created = await store.create(deployment("web", ns))
    await store.update_status({**created, "status": {"replicas": 1}})
    current = await store.get(DEPLOYMENTS, "web", ns)
    attempt = {**current, "status": {"replicas": 99}, "spec": {**current["spec"], "replicas": 2}}
    updated = await store.update(attempt)
    assert updated["status"]["replicas"] == 1
    assert updated["spec"]["replicas"] == 2


async def test_update_status_ignores_everything_but_status(store: Store, ns: str) -> None:
    created = await store.create(deployment("web", ns, replicas=1))
    attempt = {**created, "spec": {**created["spec"], "replicas": 5},
               "metadata": {**created["metadata"], "labels": {"sneaky": "yes"}},
               "status": {"replicas": 1}}
    written = await store.update_status(attempt)
    assert written["spec"]["replicas"] == 1
    assert "labels" not in written["metadata"]
    assert written["status"]["replicas"] == 1
    assert written["metadata"]["generation"] == 1


async def test_stale_status_write_conflicts(store: Store, ns: str) -> None:
    created = await store.create(deployment("web", ns))
    await store.update({**created, "spec": {**created["spec"], "replicas": 4}})
    with pytest.raises(ConflictError):
        await store.update_status({**created, "status": {"replicas": 2}})
