"""redis-streams scaler against the real Redis of tests/services.py (length, pending and lag modes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from tests.integration.scaler_support import (  # noqa: F401 (fixtures)
    pushing,
    redis_client_fixture,
    redis_info_fixture,
    silent_port,
    timed,
    unique,
    wait_subscribed,
)
from tests.services import ServiceInfo

from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError
from capstan.scalers.redis_streams import RedisStreamsScaler


@pytest.fixture
async def stream(client: aioredis.Redis) -> AsyncIterator[str]:
    name = unique("capstan-stream")
    yield name
    await client.delete(name)


def scaler(info: ServiceInfo, **metadata: str) -> RedisStreamsScaler:
    return RedisStreamsScaler(ScalerConfig(trigger_type="redis-streams", trigger_index=0, timeout_seconds=5.0,
                                           metadata={"address": f"{info.host}:{info.port}", **metadata}))


async def read(s: RedisStreamsScaler) -> MetricResult:
    return await s.get_metrics_and_activity(s.metric)


async def add(client: aioredis.Redis, stream: str, count: int) -> None:
    for i in range(count):
        await client.xadd(stream, {"n": i})


async def test_length_mode(redis_info: ServiceInfo, client: aioredis.Redis, stream: str) -> None:
    s = scaler(redis_info, stream=stream, activationLagCount="3")
    try:
        assert await read(s) == MetricResult(0.0, False)
        await add(client, stream, 3)
        assert await read(s) == MetricResult(3.0, False)  # not above activationLagCount
        await add(client, stream, 5)
        assert await read(s) == MetricResult(8.0, True)
        await client.xtrim(stream, maxlen=0)
        assert await read(s) == MetricResult(0.0, False)
    finally:
        await s.aclose()


async def test_pending_mode_counts_delivered_unacknowledged_entries(
        redis_info: ServiceInfo, client: aioredis.Redis, stream: str) -> None:
    await client.xgroup_create(stream, "workers", id="0", mkstream=True)
    await add(client, stream, 6)
    s = scaler(redis_info, stream=stream, consumerGroup="workers")
    try:
        assert await read(s) == MetricResult(0.0, False)  # nothing delivered yet
        delivered = await client.xreadgroup("workers", "w1", {stream: ">"}, count=4)
        ids = [entry_id for entry_id, _ in delivered[0][1]]
        assert await read(s) == MetricResult(4.0, True)
        await client.xack(stream, "workers", *ids)
        assert await read(s) == MetricResult(0.0, False)
    finally:
        await s.aclose()


async def test_pending_mode_without_the_group_is_an_error(
        redis_info: ServiceInfo, client: aioredis.Redis, stream: str) -> None:
    await add(client, stream, 1)
    s = scaler(redis_info, stream=stream, consumerGroup="nobody")
    try:
        with pytest.raises(ScalerError, match=f"consumer group 'nobody' of stream '{stream}' does not exist"):
            await read(s)
    finally:
        await s.aclose()


async def test_lag_mode(redis_info: ServiceInfo, client: aioredis.Redis, stream: str) -> None:
    s = scaler(redis_info, stream=stream, consumerGroup="workers", lagCount="10")
    try:
        assert await read(s) == MetricResult(0.0, False)  # no stream yet
        await add(client, stream, 5)
        assert await read(s) == MetricResult(5.0, True)  # no group yet: the stream length
        await client.xgroup_create(stream, "workers", id="0")
        await client.xreadgroup("workers", "w1", {stream: ">"}, count=2)
        assert await read(s) == MetricResult(3.0, True)  # lag = entries not yet delivered
        await client.xreadgroup("workers", "w1", {stream: ">"})
        assert await read(s) == MetricResult(0.0, False)
    finally:
        await s.aclose()


async def test_push_wakes_on_the_first_entry(redis_info: ServiceInfo, client: aioredis.Redis, stream: str) -> None:
    s = scaler(redis_info, stream=stream)
    try:
        async with pushing(s) as wakes:
            assert await wakes.wait_for(False, after=0.0) >= 0  # the first reading: inactive
            await wait_subscribed(client, f"__keyspace@0__:{stream}")
            added = time.monotonic()
            await client.xadd(stream, {"n": 1})
            assert await wakes.wait_for(True, after=added) < 1.0
    finally:
        await s.aclose()


async def test_blocking_fallback_waits_for_a_new_entry_without_consuming(
        redis_info: ServiceInfo, client: aioredis.Redis, stream: str) -> None:
    await client.xgroup_create(stream, "workers", id="$", mkstream=True)
    s = scaler(redis_info, stream=stream, consumerGroup="workers", lagCount="5")
    watcher = s.clients.make(None)
    try:
        waiting = asyncio.create_task(s._wait_for_change(watcher, MetricResult(0.0, False)))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        added = time.monotonic()
        await client.xadd(stream, {"n": 1})
        await asyncio.wait_for(waiting, 2.0)
        assert time.monotonic() - added < 1.0
        assert await read(s) == MetricResult(1.0, True)  # still unread by the group
    finally:
        await watcher.aclose()
        await s.aclose()


async def test_silent_redis_is_an_error_within_the_timeout() -> None:
    with silent_port() as port:
        s = RedisStreamsScaler(ScalerConfig(trigger_type="redis-streams", trigger_index=0, timeout_seconds=1.0,
                                            metadata={"address": f"127.0.0.1:{port}", "stream": "s"}))
        elapsed, error = await timed(read(s))
        await s.aclose()
    assert isinstance(error, ScalerError)
    assert "did not answer within 1s" in str(error)
    assert elapsed < 3.0
