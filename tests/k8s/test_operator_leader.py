"""Leader election in one process: two candidates, each with its own KubeStore connection to a real API
server. The leader is cut off from its Lease (its Lease calls hang, as in a network partition) while it
could still act; it must stop acting on its own before the other candidate takes over."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from capstan.api.registry import default_registry
from capstan.controllers.leader import LeaderElectionConfig, LeaderElector, Outcome
from capstan.store.base import WatchEvent
from capstan.store.kube import KubeStore
from tests.k8s.cluster import KubeCluster
from tests.k8s.operator_probe import ActionRecorder, assert_one_actor_at_a_time, parse_log

# Short timings keep the test quick; their ratios are client-go's.
LEASE, RENEW, RETRY = 6.0, 4.0, 1.0
SLACK = 3.0


class Partition:
    """A Store for the elector that hangs every call once ``cut`` is set, like a black-holed network."""

    def __init__(self, inner: KubeStore) -> None:
        self.inner = inner
        self.registry = inner.registry
        self.cut = asyncio.Event()

    async def _gate(self) -> None:
        if self.cut.is_set():
            await asyncio.Event().wait()  # forever, until cancelled

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        await self._gate()
        return await self.inner.get(*args, **kwargs)

    async def create(self, *args: Any, **kwargs: Any) -> Any:
        await self._gate()
        return await self.inner.create(*args, **kwargs)

    async def update(self, *args: Any, **kwargs: Any) -> Any:
        await self._gate()
        return await self.inner.update(*args, **kwargs)

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[WatchEvent]:
        async for event in self.inner.watch(*args, **kwargs):
            await self._gate()
            yield event


@pytest.fixture
async def stores(kube_cluster: KubeCluster) -> AsyncIterator[list[KubeStore]]:
    opened = [await KubeStore.connect(default_registry(), kubeconfig=kube_cluster.kubeconfig) for _ in range(3)]
    yield opened
    for store in opened:
        await store.close()


@pytest.fixture
async def namespace(stores: list[KubeStore]) -> AsyncIterator[str]:
    name = f"lead-{uuid.uuid4().hex[:8]}"
    await stores[2].create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    await stores[2].delete(default_registry().lookup("namespaces"), name)


async def poll(check: Any, what: str, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        await asyncio.sleep(0.1)


async def test_a_leader_cut_off_from_its_lease_stops_acting_before_the_other_takes_over(
        stores: list[KubeStore], namespace: str) -> None:
    store_a, store_b, shared = stores
    configmaps = shared.registry.lookup("configmaps")

    def config(identity: str) -> LeaderElectionConfig:
        return LeaderElectionConfig(namespace=namespace, name="partition", identity=identity,
                                    lease_duration=LEASE, renew_deadline=RENEW, retry_period=RETRY)

    partition = Partition(store_a)
    electors = {"a": LeaderElector(partition, config("a")),  # type: ignore[arg-type]
                "b": LeaderElector(store_b, config("b"))}

    def work(identity: str) -> Any:
        # The actions go through a connection the partition does not touch: only the elector can stop them.
        return ActionRecorder(shared, namespace, "actions", identity, interval=0.05).run

    async def log() -> list[tuple[str, float]]:
        try:
            found = await shared.get(configmaps, "actions", namespace)
        except Exception:
            return []
        return parse_log((found.get("data") or {}).get("log", ""))

    stops = {"a": asyncio.Event(), "b": asyncio.Event()}
    run_a = asyncio.create_task(electors["a"].run(work("a"), stops["a"]))
    await poll(lambda: _true(electors["a"].is_leader), "a to lead")
    run_b = asyncio.create_task(electors["b"].run(work("b"), stops["b"]))
    try:
        await poll(lambda: _true(electors["b"].holder == "a"), "b to see a holding the Lease")
        await asyncio.sleep(2 * RETRY)
        assert not electors["b"].is_leader
        assert {who for who, _ in await log()} == {"a"}

        partition.cut.set()
        cut_at = time.time()
        assert await asyncio.wait_for(run_a, RENEW + RETRY + SLACK) is Outcome.LOST
        lost_at = time.time()
        assert lost_at - cut_at <= RENEW + SLACK

        await poll(lambda: _true(electors["b"].is_leader), "b to take over")
        entries = await poll(lambda: _at_least(log, "b", 5), "b to act")
        assert_one_actor_at_a_time(entries)
        last_a = max(stamp for who, stamp in entries if who == "a")
        first_b = min(stamp for who, stamp in entries if who == "b")
        assert last_a <= lost_at
        # a stopped at its renew deadline; b could only start once the Lease had run out by its own clock.
        assert first_b - last_a >= (LEASE - RENEW) - 1.0, (first_b - last_a)
        assert [what for _, what in electors["a"].transitions] == ["acquired", "lost"]
    finally:
        stops["b"].set()
        await asyncio.wait_for(run_b, 30)
        if not run_a.done():
            run_a.cancel()
    assert [what for _, what in electors["b"].transitions] == ["acquired", "released"]


async def _true(value: bool) -> bool:
    return value


async def _at_least(log: Any, identity: str, count: int) -> list[tuple[str, float]] | None:
    entries: list[tuple[str, float]] = await log()
    return entries if sum(1 for who, _ in entries if who == identity) >= count else None
