"""Helpers for the workload-controller integration tests: a real SqliteStore, controllers run
by a Manager, a fake clock, and a simulated kubelet that moves pods through their phases
(through ``store.update_status``) exactly when a test says so."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from capstan.api.errors import ConflictError, NotFoundError
from capstan.api.registry import default_registry
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Controller, Manager
from capstan.store.base import Obj, Store
from capstan.store.sqlite import SqliteStore

DEADLINE = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def open_store(tmp_path: Path) -> SqliteStore:
    return await SqliteStore.open(tmp_path / "state.db", default_registry())


@contextlib.asynccontextmanager
async def running(store: Store, *factories: Callable[[InformerFactory, Store, EventRecorder], Controller]
                  ) -> AsyncIterator[list[Controller]]:
    """Run controllers (built by ``factories``) until the block ends."""
    informers = InformerFactory(store)
    recorder = EventRecorder(store, "capstan-controller-manager")
    controllers = [factory(informers, store, recorder) for factory in factories]
    manager = Manager(informers)
    for controller in controllers:
        manager.add(controller)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        yield controllers
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=DEADLINE)


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float = DEADLINE, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}; last saw {last!r}")


class Kubelet:
    """Moves pods through their lifecycle by writing their status, as a node agent would."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pods_rt = store.registry.lookup("pods")

    async def pods(self, namespace: str = "default", selector: str = "") -> list[Obj]:
        return (await self.store.list(self.pods_rt, namespace, label_selector=selector)).items

    async def _set_status(self, pod: Obj, status: dict[str, Any]) -> Obj | None:
        meta = pod["metadata"]
        for _ in range(20):
            try:
                fresh = await self.store.get(self.pods_rt, meta["name"], meta.get("namespace"))
            except NotFoundError:
                return None
            if fresh["metadata"]["uid"] != meta["uid"]:
                return None
            try:
                return await self.store.update_status({**fresh, "status": status})
            except ConflictError:
                continue
        raise AssertionError(f"could not update pod {meta['name']}")

    async def run(self, pod: Obj, *, ready: bool = True, restarts: int = 0) -> Obj | None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return await self._set_status(pod, {
            "phase": "Running", "startTime": now,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "main", "ready": ready, "restartCount": restarts,
                                   "state": {"running": {"startedAt": now}}}],
        })

    async def finish(self, pod: Obj, phase: str = "Succeeded") -> Obj | None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        code = 0 if phase == "Succeeded" else 1
        return await self._set_status(pod, {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "main", "ready": False, "restartCount": 0,
                                   "state": {"terminated": {"exitCode": code, "finishedAt": now}}}],
        })


def phase_of(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def condition(obj: Obj, kind: str) -> dict[str, Any] | None:
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return None


class PodWatcher:
    """Follows every pod event from the store and checks an invariant after each one."""

    def __init__(self, store: Store, namespace: str, invariant: Callable[[dict[str, Obj]], None]) -> None:
        self.store = store
        self.namespace = namespace
        self.invariant = invariant
        self.pods: dict[str, Obj] = {}
        self.events = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PodWatcher:
        rt = self.store.registry.lookup("pods")
        listed = await self.store.list(rt, self.namespace)
        self.pods = {p["metadata"]["name"]: p for p in listed.items}
        self.invariant(self.pods)
        self._task = asyncio.create_task(self._follow(listed.resource_version))
        return self

    async def _follow(self, rv: str) -> None:
        rt = self.store.registry.lookup("pods")
        async for event in self.store.watch(rt, self.namespace, resource_version=rv):
            if event.type in ("BOOKMARK", "ERROR"):
                continue
            name = event.object["metadata"]["name"]
            if event.type == "DELETED":
                self.pods.pop(name, None)
            else:
                self.pods[name] = event.object
            self.events += 1
            self.invariant(self.pods)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # an invariant failure surfaces here
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
