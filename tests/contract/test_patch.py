"""JSON merge patch on the object and on its status."""

from __future__ import annotations

import pytest

from capstan.api.errors import ApiError
from capstan.store.base import Store
from tests.contract.helpers import CONFIGMAPS, DEPLOYMENTS, configmap, deployment


async def test_merge_patch_merges_maps_and_null_deletes(store: Store, ns: str) -> None:
    await store.create(configmap("cfg", ns, {"keep": "1", "drop": "2"}, labels={"a": "1", "b": "2"}))
    patched = await store.patch(CONFIGMAPS, "cfg", ns, {
        "metadata": {"labels": {"b": None, "c": "3"}},
        "data": {"drop": None, "new": "4"},
    })
    assert patched["data"] == {"keep": "1", "new": "4"}
    assert patched["metadata"]["labels"] == {"a": "1", "c": "3"}
    assert await store.get(CONFIGMAPS, "cfg", ns) == patched


async def test_merge_patch_replaces_lists_whole(store: Store, ns: str) -> None:
    created = await store.create(deployment("web", ns))
    containers = [{"name": "main", "image": "nginx:2"}, {"name": "sidecar", "image": "envoy"}]
    patched = await store.patch(DEPLOYMENTS, "web", ns, {"spec": {"template": {"spec": {"containers": containers}}}})
    assert [c["name"] for c in patched["spec"]["template"]["spec"]["containers"]] == ["main", "sidecar"]
    assert patched["metadata"]["generation"] == created["metadata"]["generation"] + 1


async def test_patch_cannot_change_the_uid(store: Store, ns: str) -> None:
    created = await store.create(configmap("cfg", ns, {"a": "1"}))
    with pytest.raises(ApiError) as caught:
        await store.patch(CONFIGMAPS, "cfg", ns, {"metadata": {"uid": "forged"}, "data": {"a": "2"}})
    assert caught.value.code in (409, 422)
    assert await store.get(CONFIGMAPS, "cfg", ns) == created


async def test_status_patch_changes_only_status(store: Store, ns: str) -> None:
    await store.create(deployment("web", ns, replicas=2))
    patched = await store.patch(DEPLOYMENTS, "web", ns,
                                {"spec": {"replicas": 9}, "status": {"replicas": 2, "readyReplicas": 1}},
                                subresource="status")
    assert patched["spec"]["replicas"] == 2
    assert patched["status"]["replicas"] == 2
    assert patched["status"]["readyReplicas"] == 1
    cleared = await store.patch(DEPLOYMENTS, "web", ns, {"status": {"readyReplicas": None}}, subresource="status")
    assert "readyReplicas" not in cleared["status"]
    assert cleared["metadata"]["generation"] == 1
