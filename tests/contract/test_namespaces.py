"""Deleting a namespace deletes what is in it; a terminating namespace takes nothing new."""

from __future__ import annotations

import pytest

from capstan.api.errors import ApiError
from capstan.store.base import Store
from tests.contract.helpers import CONFIGMAPS, NAMESPACES, PODS, configmap, eventually, pod, wait_gone

FINALIZER = "example.com/hold"


async def _namespace(store: Store, name: str) -> None:
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def test_a_new_namespace_is_active(store: Store, ns: str) -> None:
    assert (await store.get(NAMESPACES, ns)).get("status", {}).get("phase") == "Active"


async def test_deleting_a_namespace_deletes_its_content(store: Store, ns: str) -> None:
    doomed = f"{ns}-doomed"
    await _namespace(store, doomed)
    await store.create(configmap("inside", doomed))
    await store.create(pod("inside", doomed))
    await store.create(configmap("outside", ns))
    await store.delete(NAMESPACES, doomed)
    await wait_gone(store, CONFIGMAPS, "inside", doomed)
    await wait_gone(store, PODS, "inside", doomed)
    await wait_gone(store, NAMESPACES, doomed, None)
    assert await store.get(CONFIGMAPS, "outside", ns)


async def test_a_terminating_namespace_waits_for_finalizers_and_refuses_new_content(store: Store, ns: str) -> None:
    doomed = f"{ns}-held"
    await _namespace(store, doomed)
    await store.create(configmap("held", doomed, finalizers=[FINALIZER]))
    await store.delete(NAMESPACES, doomed)

    async def terminating() -> None:
        found = await store.get(NAMESPACES, doomed)
        assert found["metadata"].get("deletionTimestamp")
        assert found["status"]["phase"] == "Terminating"
        assert (await store.get(CONFIGMAPS, "held", doomed))["metadata"].get("deletionTimestamp")
    await eventually(terminating)

    with pytest.raises(ApiError) as caught:
        await store.create(configmap("late", doomed))
    assert caught.value.code == 403
    assert "being terminated" in str(caught.value)

    await store.patch(CONFIGMAPS, "held", doomed, {"metadata": {"finalizers": None}})
    await wait_gone(store, NAMESPACES, doomed, None)
