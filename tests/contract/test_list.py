"""List: ordering, label and field selectors, paging."""

from __future__ import annotations

import pytest

from capstan.api.errors import ApiError
from capstan.store.base import Store
from tests.contract.helpers import CONFIGMAPS, PODS, configmap, pod, rv


def names(items: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [item["metadata"]["name"] for item in items]


async def test_list_is_ordered_by_name_and_scoped_to_the_namespace(store: Store, ns: str) -> None:
    for name in ("cherry", "apple", "banana"):
        await store.create(configmap(name, ns))
    await store.create(configmap("elsewhere", "default"))
    try:
        result = await store.list(CONFIGMAPS, ns)
        assert names(result.items) == ["apple", "banana", "cherry"]
        every = await store.list(CONFIGMAPS)
        assert {"apple", "banana", "cherry", "elsewhere"} <= set(names(every.items))
    finally:
        await store.delete(CONFIGMAPS, "elsewhere", "default")


async def test_list_resource_version_is_at_least_the_newest_write(store: Store, ns: str) -> None:
    created = await store.create(configmap("a", ns))
    result = await store.list(CONFIGMAPS, ns)
    assert int(result.resource_version) >= rv(created)


async def test_label_selectors(store: Store, ns: str) -> None:
    await store.create(configmap("web-prod", ns, labels={"app": "web", "env": "prod"}))
    await store.create(configmap("web-dev", ns, labels={"app": "web", "env": "dev"}))
    await store.create(configmap("db-prod", ns, labels={"app": "db", "env": "prod"}))
    await store.create(configmap("plain", ns))

    async def select(selector: str) -> list[str]:
        return names((await store.list(CONFIGMAPS, ns, label_selector=selector)).items)

    assert await select("app=web") == ["web-dev", "web-prod"]
    assert await select("app=web,env=prod") == ["web-prod"]
    assert await select("env!=prod") == ["plain", "web-dev"]
    assert await select("env in (dev, prod),app notin (web)") == ["db-prod"]
    assert await select("app") == ["db-prod", "web-dev", "web-prod"]
    assert await select("!app") == ["plain"]


async def test_field_selectors(store: Store, ns: str) -> None:
    await store.create(pod("on-a", ns, node_name="node-a"))
    await store.create(pod("on-b", ns, node_name="node-b"))
    await store.create(pod("unplaced", ns))

    async def select(selector: str) -> list[str]:
        return names((await store.list(PODS, ns, field_selector=selector)).items)

    assert await select("spec.nodeName=node-a") == ["on-a"]
    assert await select("spec.nodeName!=node-a") == ["on-b", "unplaced"]
    assert await select("spec.nodeName=") == ["unplaced"]
    assert await select("metadata.name=on-b") == ["on-b"]
    assert await select(f"metadata.namespace={ns},metadata.name!=on-b") == ["on-a", "unplaced"]


async def test_a_malformed_selector_is_a_bad_request(store: Store, ns: str) -> None:
    with pytest.raises(ApiError) as caught:
        await store.list(CONFIGMAPS, ns, label_selector="app in (web")
    assert caught.value.code == 400


async def test_limit_and_continue_page_through_25_objects(store: Store, ns: str) -> None:
    expected = [f"item-{i:02d}" for i in range(25)]
    for name in reversed(expected):
        await store.create(configmap(name, ns))
    seen: list[str] = []
    pages = 0
    token = None
    while True:
        page = await store.list(CONFIGMAPS, ns, limit=10, continue_token=token)
        pages += 1
        assert len(page.items) <= 10
        seen.extend(names(page.items))
        token = page.continue_token
        if not token:
            break
        assert page.remaining_item_count in (None, 25 - len(seen))
    assert pages == 3
    assert seen == expected


async def test_limit_with_a_label_selector_counts_matching_objects(store: Store, ns: str) -> None:
    for i in range(12):
        await store.create(configmap(f"cm-{i:02d}", ns, labels={"parity": "even" if i % 2 == 0 else "odd"}))
    first = await store.list(CONFIGMAPS, ns, label_selector="parity=even", limit=4)
    assert names(first.items) == ["cm-00", "cm-02", "cm-04", "cm-06"]
    assert first.continue_token
    rest = await store.list(CONFIGMAPS, ns, label_selector="parity=even", limit=4,
                            continue_token=first.continue_token)
    assert names(rest.items) == ["cm-08", "cm-10"]
    assert rest.continue_token is None
