"""Helpers for the local-node integration tests: a real SqliteStore, the node registrar, the
scheduler and the node agent running real processes, and polling helpers."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.workloads_kit import DEADLINE, eventually

from capstan.api.errors import NotFoundError
from capstan.api.registry import default_registry
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.node import NodeRegistrar
from capstan.controllers.nodeagent import NodeAgent
from capstan.controllers.runtime import Manager
from capstan.controllers.scheduler import Scheduler
from capstan.runtime.process import ProcessRuntime
from capstan.store.base import Obj
from capstan.store.sqlite import SqliteStore

NODE = "local"
PY = sys.executable


def py(code: str) -> list[str]:
    """A container command running a Python snippet, unbuffered."""
    return [PY, "-u", "-c", textwrap.dedent(code)]


@dataclass
class LocalNode:
    store: SqliteStore
    tmp_path: Path
    runtime: ProcessRuntime
    agent: NodeAgent | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def pods_rt(self) -> Any:
        return self.store.registry.lookup("pods")

    async def create(self, obj: Obj) -> Obj:
        return await self.store.create(obj)

    async def create_pod(self, name: str, command: list[str] | None, *, container: Obj | None = None,
                         **spec: Any) -> Obj:
        main: Obj = {"name": "main", "image": "python:3.11", **(container or {})}
        if command is not None:
            main["command"] = command
        return await self.store.create({"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": name, "namespace": "default"},
                                        "spec": {"containers": [main], **spec}})

    async def pod(self, name: str) -> Obj | None:
        try:
            return await self.store.get(self.pods_rt, name, "default")
        except NotFoundError:
            return None

    async def wait_pod(self, name: str, predicate: Callable[[Obj], Any], what: str = "",
                       within: float = DEADLINE) -> Obj:
        async def check() -> Obj | None:
            pod = await self.pod(name)
            return pod if pod is not None and predicate(pod) else None
        result: Obj = await eventually(check, what=what or f"pod {name}", within=within)
        return result

    async def wait_gone(self, name: str) -> None:
        async def gone() -> bool:
            return await self.pod(name) is None
        await eventually(gone, what=f"pod {name} to be gone")

    async def events(self, name: str | None = None) -> list[Obj]:
        items = (await self.store.list(self.store.registry.lookup("events"), "default")).items
        return [e for e in items if name is None or e["involvedObject"]["name"] == name]

    def log(self, pod: Obj, container: str = "main") -> str:
        meta = pod["metadata"]
        path = self.runtime.log_path(meta["namespace"], meta["name"], meta["uid"], container)
        return path.read_text() if path.exists() else ""


def phase(pod: Obj) -> str | None:
    return (pod.get("status") or {}).get("phase")


def container_status(pod: Obj, name: str = "main") -> Obj:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status["name"] == name:
            return dict(status)
    return {}


def condition(pod: Obj, type_: str) -> Obj:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def start_node(node: LocalNode, *, keep_workloads: bool = False, scheduler: bool = True) -> None:
    informers = InformerFactory(node.store)
    recorder = EventRecorder(node.store, "capstan-node", host=NODE)
    manager = Manager(informers)
    if scheduler:
        manager.add(Scheduler(informers, node.store, recorder, node_name=NODE))
    node.agent = NodeAgent(informers, node.store, recorder, node.runtime, node_name=NODE,
                           keep_workloads=keep_workloads, poll_seconds=0.1)
    manager.add(node.agent)
    node.stop = asyncio.Event()
    node.task = asyncio.create_task(manager.run(node.stop))


async def stop_node(node: LocalNode) -> None:
    """A graceful shutdown (what SIGTERM to `capstan server` does)."""
    node.stop.set()
    if node.task is not None:
        await asyncio.wait_for(node.task, timeout=DEADLINE)


async def crash_node(node: LocalNode) -> None:
    """As if Capstan were killed: its tasks vanish, nothing is stopped, processes keep running."""
    doomed = [t for t in asyncio.all_tasks()
              if t.get_name().startswith(("informer-", "NodeAgent", "Scheduler", "probe-", "stop-"))]
    if node.task is not None:
        doomed.append(node.task)
    for task in doomed:
        task.cancel()
    await asyncio.gather(*doomed, return_exceptions=True)
    node.agent = None


@contextlib.asynccontextmanager
async def local_node(tmp_path: Path, *, cpu: str = "4", memory: str = "8Gi", start: bool = True,
                     keep_workloads: bool = False) -> AsyncIterator[LocalNode]:
    store = await SqliteStore.open(tmp_path / "state.db", default_registry())
    await NodeRegistrar(store, node_name=NODE, cpu=cpu, memory=memory).register()
    node = LocalNode(store, tmp_path, ProcessRuntime(tmp_path / "runtime", tmp_path / "pods"))
    if start:
        start_node(node, keep_workloads=keep_workloads)
    try:
        yield node
    finally:
        if node.task is not None and not node.task.done():
            node.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.task, timeout=DEADLINE)
        node.runtime.kill_orphans(keep=set())
        await store.close()
