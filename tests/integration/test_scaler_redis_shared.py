"""redis / redis-streams scalers share their connections per server, and close promptly.

Each test runs its own ``redis-server`` (tests/e2e/autoscaling_kit.PrivateRedis), so CLIENT LIST
counts only this test's connections and the server's notification settings are ours to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from tests.e2e.autoscaling_kit import PrivateRedis
from tests.integration.scaler_support import WakeRecorder, silent_port, unique, wait_subscribed

from capstan.scalers.base import MetricResult, ScalerConfig
from capstan.scalers.redis import CLOSE_SECONDS, POOL_CONNECTIONS, RedisScaler, open_hubs
from capstan.scalers.redis_streams import RedisStreamsScaler

SCALER_CLIENT = f"capstan-scaler-{os.getpid()}"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def client(private_redis: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis(host=private_redis.host, port=private_redis.port, decode_responses=True)
    yield connection
    await connection.aclose()


def redis_scaler(address: str, timeout: float = 3.0, **metadata: str) -> RedisScaler:
    return RedisScaler(ScalerConfig(trigger_type="redis", trigger_index=0, timeout_seconds=timeout,
                                    metadata={"address": address, **metadata}))


async def scaler_connections(client: aioredis.Redis) -> list[dict[str, str]]:
    return [c for c in await client.client_list() if c.get("name") == SCALER_CLIENT]


async def wait_until(predicate: Callable[[], Awaitable[bool]], within: float = 10.0,
                     message: str = "condition") -> None:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}; last: {last!r}")


@contextlib.asynccontextmanager
async def followers(scalers: list[RedisScaler]) -> AsyncIterator[list[WakeRecorder]]:
    recorders = [WakeRecorder() for _ in scalers]
    tasks = [asyncio.create_task(s.run(r)) for s, r in zip(scalers, recorders, strict=True)]
    try:
        yield recorders
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_fifty_scalers_on_one_server_share_a_handful_of_connections(
        private_redis: PrivateRedis, client: aioredis.Redis) -> None:
    lists = [unique("shared") for _ in range(50)]
    scalers = [redis_scaler(private_redis.address, listName=name) for name in lists]
    streams = [RedisStreamsScaler(ScalerConfig(trigger_type="redis-streams", trigger_index=0, metadata={
        "address": private_redis.address, "stream": unique("stream")})) for _ in range(5)]
    try:
        async with followers([*scalers, *streams]) as wakes:  # type: ignore[list-item]
            for name in lists:
                await wait_subscribed(client, f"__keyspace@0__:{name}")
            # Every scaler reads at once, several times: the pool, not the scaler count, bounds connections.
            for _ in range(3):
                results = await asyncio.gather(*(s.get_metrics_and_activity(s.metric) for s in scalers))
                assert set(results) == {MetricResult(0.0, False)}
            connections = await scaler_connections(client)
            assert 1 <= len(connections) <= POOL_CONNECTIONS + 1, connections
            assert sum(1 for c in connections if c.get("cmd") in ("subscribe", "psubscribe")) <= 1
            assert len(open_hubs()) == 1 and open_hubs()[0].users == 55
            # And each one still hears its own list at once.
            pushed = time.monotonic()
            await client.rpush(lists[17], "a", "b")
            assert await wakes[17].wait_for(True, after=pushed) < 1.0
            assert not any(active for other in (wakes[16], wakes[18]) for _, active in other.calls)
            assert await scalers[17].get_metrics_and_activity(scalers[17].metric) == MetricResult(2.0, True)
    finally:
        await asyncio.gather(*(s.aclose() for s in [*scalers, *streams]))
    # The last user closed the hub and its connections.
    assert open_hubs() == []
    await wait_until(lambda: _none(client), message="the scalers' connections to close")


async def _none(client: aioredis.Redis) -> bool:
    return not await scaler_connections(client)


async def test_aclose_is_prompt_while_the_blocking_fallback_waits_on_redis(
        private_redis: PrivateRedis, client: aioredis.Redis) -> None:
    """Notifications off and not ours to switch on: the follower blocks in BLMOVE on a connection of
    its own. aclose() (without cancelling the follower first) ends it and closes everything at once."""
    name = unique("blocked")
    s = redis_scaler(private_redis.address, listName=name, keyspaceNotifications="false")
    wakes = WakeRecorder()
    run = asyncio.create_task(s.run(wakes))
    try:
        await wait_until(lambda: _blocked_in(client, "blmove"), message="the follower to block in BLMOVE")
        started = time.monotonic()
        await s.aclose()
        closed_in = time.monotonic() - started
        await asyncio.wait_for(run, 2.0)  # the follower ended quietly
    finally:
        run.cancel()
    assert closed_in < CLOSE_SECONDS, closed_in
    assert wakes.calls and wakes.calls[0][1] is False  # it had reported the empty list
    await wait_until(lambda: _none(client), message="the scaler's connections to close")
    assert await client.llen(name) == 0


async def _blocked_in(client: aioredis.Redis, command: str) -> bool:
    return any(c.get("cmd") == command for c in await scaler_connections(client))


async def test_aclose_is_prompt_while_the_follower_waits_on_a_silent_server() -> None:
    with silent_port() as port:
        s = redis_scaler(f"127.0.0.1:{port}", listName="q", timeout=30.0)
        run = asyncio.create_task(s.run(WakeRecorder()))
        await asyncio.sleep(0.5)  # the follower is waiting for an answer that never comes
        assert not run.done()
        started = time.monotonic()
        await s.aclose()
        closed_in = time.monotonic() - started
        await asyncio.wait_for(run, 2.0)
    assert closed_in < CLOSE_SECONDS, closed_in
    assert open_hubs() == []


async def test_aclose_is_prompt_while_following_notifications(private_redis: PrivateRedis,
                                                              client: aioredis.Redis) -> None:
    name = unique("notified")
    s = redis_scaler(private_redis.address, listName=name)
    run = asyncio.create_task(s.run(WakeRecorder()))
    await wait_subscribed(client, f"__keyspace@0__:{name}")
    started = time.monotonic()
    await s.aclose()
    assert time.monotonic() - started < CLOSE_SECONDS
    await asyncio.wait_for(run, 2.0)
    await wait_until(lambda: _none(client), message="the scaler's connections to close")


async def test_notifications_come_back_after_the_server_restarts(private_redis: PrivateRedis) -> None:
    """A restarted Redis forgets CONFIG SET notify-keyspace-events: the hub sets it again."""
    name = unique("restart")
    s = redis_scaler(private_redis.address, listName=name, timeout=1.0)
    wakes = WakeRecorder()
    run = asyncio.create_task(s.run(wakes))
    try:
        direct = aioredis.Redis(host=private_redis.host, port=private_redis.port, decode_responses=True)
        await wait_subscribed(direct, f"__keyspace@0__:{name}")
        await direct.aclose()
        private_redis.stop()
        private_redis.start()
        direct = aioredis.Redis(host=private_redis.host, port=private_redis.port, decode_responses=True)
        try:
            await wait_subscribed(direct, f"__keyspace@0__:{name}", deadline=40.0)
            pushed = time.monotonic()
            await direct.rpush(name, "x")
            assert await wakes.wait_for(True, after=pushed) < 1.0
            flags = (await direct.config_get("notify-keyspace-events"))["notify-keyspace-events"]
            assert "K" in flags and "l" in flags
        finally:
            await direct.aclose()
    finally:
        run.cancel()
        await s.aclose()
