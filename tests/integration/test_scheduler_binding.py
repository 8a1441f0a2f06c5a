"""The one-node scheduler with the SQLite store (no agent: pods stay bound, not running)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.integration.node_kit import NODE, condition, eventually

from capstan.api.registry import default_registry
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.node import NodeRegistrar
from capstan.controllers.runtime import Manager
from capstan.controllers.scheduler import Scheduler
from capstan.store.base import Obj
from capstan.store.sqlite import SqliteStore


@contextlib.asynccontextmanager
async def scheduler(tmp_path: Path, cpu: str = "2") -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "state.db", default_registry())
    await NodeRegistrar(store, node_name=NODE, cpu=cpu, memory="4Gi").register()
    informers = InformerFactory(store)
    manager = Manager(informers)
    manager.add(Scheduler(informers, store, EventRecorder(store, "capstan-scheduler"), node_name=NODE))
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        yield store
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
        await store.close()


def pod(name: str, cpu: str, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "main", "command": ["sleep", "60"],
                                     "resources": {"requests": {"cpu": cpu}}}], **spec}}


async def pods(store: SqliteStore) -> list[Obj]:
    return (await store.list(store.registry.lookup("pods"), "default")).items


async def test_a_burst_never_overcommits_the_node(tmp_path: Path) -> None:
    async with scheduler(tmp_path, cpu="2") as store:
        await asyncio.gather(*(store.create(pod(f"burst-{i:02d}", "200m")) for i in range(20)))

        async def settled() -> list[Obj] | None:
            items = await pods(store)
            decided = [p for p in items if condition(p, "PodScheduled").get("status") in ("True", "False")
                       and (condition(p, "PodScheduled")["status"] == "False" or p["spec"].get("nodeName"))]
            return items if len(decided) == 20 else None

        items = await eventually(settled, what="every pod decided")
        bound = [p for p in items if p["spec"].get("nodeName") == NODE]
        assert len(bound) == 10
        await asyncio.sleep(0.5)  # later passes do not bind more
        assert len([p for p in await pods(store) if p["spec"].get("nodeName")]) == 10
        waiting = [p for p in items if not p["spec"].get("nodeName")]
        assert {condition(p, "PodScheduled")["message"] for p in waiting} == {
            "0/1 nodes are available: 1 Insufficient cpu (requested 200m, free 0 of 2 allocatable)."}
        assert {p["status"]["phase"] for p in waiting} == {"Pending"}

        # A bound pod finishing frees room: exactly one more is bound.
        done = bound[0]
        done["status"]["phase"] = "Succeeded"
        await store.update_status(done)

        async def eleven() -> bool:
            return len([p for p in await pods(store) if p["spec"].get("nodeName")]) == 11
        await eventually(eleven, what="one more pod bound")
        await asyncio.sleep(0.5)
        assert len([p for p in await pods(store) if p["spec"].get("nodeName")]) == 11


async def test_unschedulable_pod_gets_one_event_and_is_bound_when_room_appears(tmp_path: Path) -> None:
    async with scheduler(tmp_path, cpu="2") as store:
        await store.create(pod("small", "500m"))

        async def small_bound() -> bool:
            return bool((await store.get(store.registry.lookup("pods"), "small", "default"))["spec"].get("nodeName"))
        await eventually(small_bound, what="small bound")
        await store.create(pod("big", "4"))

        async def refused() -> Obj | None:
            big = await store.get(store.registry.lookup("pods"), "big", "default")
            return big if condition(big, "PodScheduled").get("reason") == "Unschedulable" else None

        big = await eventually(refused, what="big refused")
        message = "0/1 nodes are available: 1 Insufficient cpu (requested 4, free 1500m of 2 allocatable)."
        assert condition(big, "PodScheduled") == {
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastTransitionTime": condition(big, "PodScheduled")["lastTransitionTime"]}
        for i in range(5):  # unrelated changes trigger passes; the same verdict is not re-announced
            await store.create(pod(f"foreign-{i}", "10m", schedulerName="someone-else"))
        await asyncio.sleep(0.5)
        events = [e for e in (await store.list(store.registry.lookup("events"), "default")).items
                  if e["involvedObject"]["name"] == "big"]
        assert [(e["reason"], e["type"], e["message"], e["count"]) for e in events] == [
            ("FailedScheduling", "Warning", message, 1)]

        nodes = store.registry.lookup("nodes")
        node = await store.get(nodes, NODE)
        node["status"]["allocatable"]["cpu"] = "8"
        await store.update_status(node)

        async def bound() -> bool:
            big = await store.get(store.registry.lookup("pods"), "big", "default")
            return big["spec"].get("nodeName") == NODE and condition(big, "PodScheduled")["status"] == "True"
        await eventually(bound, what="big bound after the node grew")


async def test_selectors_taints_and_foreign_schedulers(tmp_path: Path) -> None:
    async with scheduler(tmp_path) as store:
        await store.create(pod("picky", "100m", nodeSelector={"disk": "ssd"}))
        await store.create(pod("other", "100m", schedulerName="someone-else"))
        await store.create(pod("mine", "100m", schedulerName="capstan"))
        pods_rt = store.registry.lookup("pods")

        async def picky_refused() -> bool:
            picky = await store.get(pods_rt, "picky", "default")
            return condition(picky, "PodScheduled").get("message") == (
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.")
        await eventually(picky_refused, what="picky refused")

        async def mine_bound() -> bool:
            return bool((await store.get(pods_rt, "mine", "default"))["spec"].get("nodeName"))
        await eventually(mine_bound, what="mine bound")
        other = await store.get(pods_rt, "other", "default")
        assert not other["spec"].get("nodeName")
        assert not (other.get("status") or {}).get("conditions")
