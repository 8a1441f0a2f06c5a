"""The autoscaling/v1 scale subresource."""

from __future__ import annotations

import pytest

from capstan.api.errors import ApiError, ConflictError
from capstan.store.base import Store
from tests.contract.helpers import CONFIGMAPS, DEPLOYMENTS, configmap, deployment


async def test_get_scale_reflects_spec_and_status(store: Store, ns: str) -> None:
    created = await store.create(deployment("web", ns, replicas=3))
    await store.patch(DEPLOYMENTS, "web", ns, {"status": {"replicas": 2}}, subresource="status")
    scale = await store.get_scale(DEPLOYMENTS, "web", ns)
    assert scale["apiVersion"] == "autoscaling/v1"
    assert scale["kind"] == "Scale"
    assert scale["metadata"]["name"] == "web"
    assert scale["metadata"]["namespace"] == ns
    assert scale["metadata"]["uid"] == created["metadata"]["uid"]
    assert scale["spec"] == {"replicas": 3}
    assert scale["status"]["replicas"] == 2
    assert scale["status"]["selector"] == "app=web"


async def test_update_scale_sets_replicas_and_bumps_generation(store: Store, ns: str) -> None:
    await store.create(deployment("web", ns, replicas=1))
    scale = await store.update_scale(DEPLOYMENTS, "web", ns, 5)
    assert scale["spec"]["replicas"] == 5
    stored = await store.get(DEPLOYMENTS, "web", ns)
    assert stored["spec"]["replicas"] == 5
    assert stored["metadata"]["generation"] == 2
    assert scale["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]


async def test_update_scale_with_a_stale_version_conflicts(store: Store, ns: str) -> None:
    await store.create(deployment("web", ns, replicas=1))
    before = await store.get_scale(DEPLOYMENTS, "web", ns)
    await store.update_scale(DEPLOYMENTS, "web", ns, 2)
    with pytest.raises(ConflictError):
        await store.update_scale(DEPLOYMENTS, "web", ns, 3, resource_version=before["metadata"]["resourceVersion"])
    assert (await store.get(DEPLOYMENTS, "web", ns))["spec"]["replicas"] == 2


async def test_kinds_without_scale_have_no_scale_subresource(store: Store, ns: str) -> None:
    await store.create(configmap("cfg", ns))
    with pytest.raises(ApiError) as caught:
        await store.get_scale(CONFIGMAPS, "cfg", ns)
    assert caught.value.code in (400, 404)
