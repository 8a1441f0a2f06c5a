"""Builders and polling helpers shared by the contract tests (built-in kinds only)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from capstan.api.errors import NotFoundError
from capstan.api.registry import ResourceType, default_registry
from capstan.store.base import Obj, Store, WatchEvent

REGISTRY = default_registry()
NAMESPACES = REGISTRY.lookup("namespaces")
CONFIGMAPS = REGISTRY.lookup("configmaps")
SECRETS = REGISTRY.lookup("secrets")
PODS = REGISTRY.lookup("pods")
DEPLOYMENTS = REGISTRY.lookup("deployments")
JOBS = REGISTRY.lookup("jobs")

# Generous: other test suites share the machine, and a real API server's garbage collector
# works asynchronously.
EVENTUALLY_SECONDS = 30.0
EVENT_SECONDS = 10.0

T = TypeVar("T")


def configmap(name: str, namespace: str, data: dict[str, str] | None = None, *,
              labels: dict[str, str] | None = None, **metadata: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, **metadata}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data or {})}


def pod(name: str, namespace: str, *, labels: dict[str, str] | None = None, node_name: str | None = None,
        **metadata: Any) -> Obj:
    spec: Obj = {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}
    if node_name:
        spec["nodeName"] = node_name
    meta: Obj = {"name": name, "namespace": namespace, **metadata}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def deployment(name: str, namespace: str, replicas: int = 1, **metadata: Any) -> Obj:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "main", "image": "nginx"}]}},
        },
    }


def job(name: str, namespace: str, **metadata: Any) -> Obj:
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, **metadata},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "main", "image": "busybox"}]}}},
    }


def owner_ref(owner: Obj) -> Obj:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"]}


def rv(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


async def eventually(check: Callable[[], Awaitable[T]], *, within: float = EVENTUALLY_SECONDS) -> T:
    """Poll ``check`` until it returns without AssertionError; its value is returned."""
    deadline = time.monotonic() + within
    delay = 0.01
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def gone(store: Store, rt: ResourceType, name: str, namespace: str | None) -> bool:
    try:
        await store.get(rt, name, namespace)
    except NotFoundError:
        return True
    return False


async def wait_gone(store: Store, rt: ResourceType, name: str, namespace: str | None) -> None:
    async def check() -> None:
        assert await gone(store, rt, name, namespace), f"{rt.kind} {name} still exists"
    await eventually(check)


async def next_event(events: AsyncIterator[WatchEvent], *, skip_bookmarks: bool = True,
                     within: float = EVENT_SECONDS) -> WatchEvent:
    while True:
        event = await asyncio.wait_for(anext(events), within)
        if event.type != "BOOKMARK" or not skip_bookmarks:
            return event


async def collect(events: AsyncIterator[WatchEvent], count: int) -> list[tuple[str, str]]:
    """The next ``count`` non-bookmark events as (type, name)."""
    return [(event.type, event.object["metadata"]["name"])
            for event in [await next_event(events) for _ in range(count)]]
