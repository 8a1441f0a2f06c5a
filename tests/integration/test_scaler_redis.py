"""redis scaler against the real Redis of tests/services.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from tests.integration.scaler_support import (  # noqa: F401 (fixtures)
    closed_port,
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
from capstan.scalers.redis import RedisScaler


@pytest.fixture
async def key(client: aioredis.Redis) -> AsyncIterator[str]:
    name = unique("capstan-redis")
    yield name
    await client.delete(name)


def scaler(info: ServiceInfo | None, timeout: float = 5.0, auth: dict[str, str] | None = None,
           **metadata: str) -> RedisScaler:
    if info is not None:
        metadata.setdefault("address", f"{info.host}:{info.port}")
    return RedisScaler(ScalerConfig(trigger_type="redis", trigger_index=0, metadata=metadata,
                                    auth_params=auth or {}, timeout_seconds=timeout))


async def read(s: RedisScaler) -> MetricResult:
    return await s.get_metrics_and_activity(s.metric)


async def test_list_length_and_activity(redis_info: ServiceInfo, client: aioredis.Redis, key: str) -> None:
    s = scaler(redis_info, listName=key, activationListLength="2")
    try:
        assert await read(s) == MetricResult(0.0, False)  # a missing key is an empty list
        await client.rpush(key, *[f"job-{i}" for i in range(7)])
        assert await read(s) == MetricResult(7.0, True)
        await client.ltrim(key, 0, 1)
        assert await read(s) == MetricResult(2.0, False)  # 2 is not above the activation length
        await client.delete(key)
        assert await read(s) == MetricResult(0.0, False)
    finally:
        await s.aclose()


@pytest.mark.parametrize("kind", ["set", "zset", "hash"])
async def test_other_collections_count_their_members(redis_info: ServiceInfo, client: aioredis.Redis, key: str,
                                                     kind: str) -> None:
    if kind == "set":
        await client.sadd(key, "a", "b", "c")
    elif kind == "zset":
        await client.zadd(key, {"a": 1, "b": 2, "c": 3})
    else:
        await client.hset(key, mapping={"a": 1, "b": 2, "c": 3})
    s = scaler(redis_info, listName=key)
    try:
        assert await read(s) == MetricResult(3.0, True)
    finally:
        await s.aclose()


async def test_a_string_key_is_an_error(redis_info: ServiceInfo, client: aioredis.Redis, key: str) -> None:
    await client.set(key, "not a list")
    s = scaler(redis_info, listName=key)
    try:
        with pytest.raises(ScalerError, match="unsupported key type: string"):
            await read(s)
    finally:
        await s.aclose()


async def test_database_index(redis_info: ServiceInfo, key: str) -> None:
    other = aioredis.Redis(host=redis_info.host, port=redis_info.port, db=5)
    s = scaler(redis_info, listName=key, databaseIndex="5")
    try:
        await other.rpush(key, "x", "y")
        assert await read(s) == MetricResult(2.0, True)
        assert await read(scaler(redis_info, listName=key)) == MetricResult(0.0, False)
    finally:
        await other.delete(key)
        await other.aclose()
        await s.aclose()


async def test_username_and_password(redis_info: ServiceInfo, client: aioredis.Redis, key: str) -> None:
    user = unique("scaler")
    await client.acl_setuser(user, enabled=True, passwords=["+right-password"], keys=["*"],
                             commands=["+@all"])
    try:
        await client.rpush(key, "a")
        good = scaler(redis_info, auth={"username": user, "password": "right-password"}, listName=key)
        assert await read(good) == MetricResult(1.0, True)
        await good.aclose()
        bad = scaler(redis_info, auth={"username": user, "password": "wrong"}, listName=key)
        with pytest.raises(ScalerError, match=r"Redis at 127\.0\.0\.1:\d+.*(invalid|WRONGPASS)"):
            await read(bad)
        await bad.aclose()
    finally:
        await client.acl_deluser(user)


async def test_push_wakes_within_a_second_of_a_push_onto_an_empty_list(
        redis_info: ServiceInfo, client: aioredis.Redis, key: str) -> None:
    s = scaler(redis_info, listName=key)
    try:
        async with pushing(s) as wakes:
            await wait_subscribed(client, f"__keyspace@0__:{key}")
            pushed = time.monotonic()
            await client.lpush(key, "job")
            assert await wakes.wait_for(True, after=pushed) < 1.0
            popped = time.monotonic()
            await client.lpop(key)
            assert await wakes.wait_for(False, after=popped) < 1.0
        flags = (await client.config_get("notify-keyspace-events"))["notify-keyspace-events"]
        assert "K" in flags and "l" in flags
    finally:
        await s.aclose()


async def test_blocking_fallback_sees_a_push_without_changing_the_list(
        redis_info: ServiceInfo, client: aioredis.Redis, key: str) -> None:
    """Without keyspace notifications the push loop waits in BLMOVE key key LEFT LEFT."""
    s = scaler(redis_info, listName=key)
    watcher = s.clients.make(None)
    try:
        waiting = asyncio.create_task(s._wait_for_change(watcher, MetricResult(0.0, False)))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        pushed = time.monotonic()
        await client.rpush(key, "first", "second", "third")
        await asyncio.wait_for(waiting, 2.0)
        assert time.monotonic() - pushed < 1.0
        assert await client.lrange(key, 0, -1) == ["first", "second", "third"]
    finally:
        await watcher.aclose()
        await s.aclose()


async def test_unreachable_redis_is_an_error_at_once() -> None:
    s = scaler(None, address=f"127.0.0.1:{closed_port()}", listName="q", timeout=3.0)
    elapsed, error = await timed(read(s))
    await s.aclose()
    assert isinstance(error, ScalerError)
    assert "cannot reach Redis at 127.0.0.1" in str(error)
    assert elapsed < 3.0


async def test_silent_redis_is_an_error_within_the_timeout() -> None:
    with silent_port() as port:
        s = scaler(None, address=f"127.0.0.1:{port}", listName="q", timeout=1.0)
        elapsed, error = await timed(read(s))
        await s.aclose()
    assert isinstance(error, ScalerError)
    assert f"Redis at 127.0.0.1:{port} did not answer within 1s" in str(error)
    assert elapsed < 3.0


async def test_push_loop_survives_an_unreachable_redis_and_stops_when_cancelled() -> None:
    s = scaler(None, address=f"127.0.0.1:{closed_port()}", listName="q", timeout=1.0)
    async with pushing(s) as wakes:
        await asyncio.sleep(1.5)  # a few failed connection attempts, with back-off
        assert wakes.calls == []
    await s.aclose()
