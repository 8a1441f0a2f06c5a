"""``redis-streams``: pending entries, lag or length of a Redis stream (KEDA's ``redis_streams_scaler.go``).

The connection parameters are those of the ``redis`` trigger. Three modes, chosen as KEDA does:

- ``consumerGroup`` and ``lagCount``: the group's ``lag`` from ``XINFO GROUPS`` (Redis 7+); the
  stream's length when the group does not exist yet; 0 when the stream does not exist. Target
  ``lagCount``.
- ``consumerGroup`` only: the group's ``XPENDING`` count (an error when the group does not exist).
  Target ``pendingEntriesCount`` (default 5).
- no ``consumerGroup``: ``XLEN``. Target ``streamLength`` (default 5).

In every mode the trigger is active when ``value > activationLagCount`` (default 0). When Redis
cannot compute a group's lag (``lag`` is nil after entries were deleted), the stream length is
used, an upper bound.

Push: keyspace notifications on the stream key (``XADD``, ``XDEL``, ``XTRIM``, ``XGROUP``, ``DEL``,
expiry), as for ``redis``; the fallback blocks in ``XREAD BLOCK ... STREAMS key $``, which waits for
new entries without consuming anything. ``XREADGROUP`` and ``XACK`` raise no notification, so
changes of the pending count are seen by polling (and by the 30 s re-read of the push loop).
Connections are shared with every other redis / redis-streams trigger on the same server (see
``capstan.scalers.redis``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from capstan.scalers import _metadata as md
from capstan.scalers.base import (
    MetricResult,
    MetricSpec,
    ScalerConfig,
    ScalerConfigError,
    ScalerError,
)
from capstan.scalers.redis import (
    BLOCK_SECONDS,
    KeyspaceFollower,
    RedisClients,
    RedisPushScaler,
    bounded,
    keda_normalize,
    parse_connection,
)
from capstan.scalers.registry import register

Mode = Literal["lag", "pending", "length"]


@register("redis-streams")
class RedisStreamsScaler(RedisPushScaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.connection = parse_connection(config)
        self.stream = md.required(config, "stream")
        self.consumer_group = md.raw(config, "consumerGroup")
        lag_count = md.integer(config, "lagCount", 0)
        self.mode: Mode
        if self.consumer_group and lag_count != 0:
            self.mode, self.target = "lag", lag_count
        elif self.consumer_group:
            self.mode, self.target = "pending", md.integer(config, "pendingEntriesCount", 5)
        else:
            self.mode, self.target = "length", md.integer(config, "streamLength", 5)
        if self.target <= 0:
            field = {"lag": "lagCount", "pending": "pendingEntriesCount", "length": "streamLength"}[self.mode]
            raise ScalerConfigError(f"{config.label}: metadata.{field} must be greater than 0")
        self.activation_lag_count = md.integer(config, "activationLagCount", 0)
        self.allow_config_set = md.boolean(config, "keyspaceNotifications", True)
        self.clients = RedisClients(self.connection, config.timeout_seconds)
        self.metric = md.metric_name(config, keda_normalize(self.stream))

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=self.metric, target=float(self.target),
                           activation_target=float(self.activation_lag_count),
                           target_type=self.config.metric_type)]

    async def _call(self, call: Any) -> Any:
        return await bounded(self.config.label, self.connection, self.config.timeout_seconds, call)

    async def _pending(self, client: aioredis.Redis) -> int:
        assert self.consumer_group is not None
        try:
            summary = await self._call(client.xpending(self.stream, self.consumer_group))
        except ScalerError as exc:
            if "NOGROUP" in str(exc):
                raise ScalerError(f"{self.config.label}: consumer group {self.consumer_group!r} of stream "
                                  f"{self.stream!r} does not exist") from exc
            raise
        return int(summary["pending"])

    async def _lag(self, client: aioredis.Redis) -> int:
        try:
            groups = await self._call(client.xinfo_groups(self.stream))
        except ScalerError as exc:
            if "no such key" in str(exc):
                return 0
            raise
        for group in groups:
            if group.get("name") != self.consumer_group:
                continue
            if "lag" not in group:
                raise ScalerError(f"{self.config.label}: lagCount needs Redis 7 or later "
                                  f"(Redis at {self.connection.address} reports no consumer group lag)")
            if group["lag"] is not None:
                return int(group["lag"])
            break  # lag unknown (entries were deleted): the stream length bounds it
        return int(await self._call(client.xlen(self.stream)))

    async def count(self, client: aioredis.Redis) -> int:
        if self.mode == "pending":
            return await self._pending(client)
        if self.mode == "lag":
            return await self._lag(client)
        return int(await self._call(client.xlen(self.stream)))

    async def read(self) -> MetricResult:
        value = await self.count(self.clients.reader)
        return MetricResult(value=float(value), active=value > self.activation_lag_count)

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        return await self.read()

    async def _wait_for_change(self, client: aioredis.Redis, last: MetricResult) -> None:
        """Without notifications: wait for a new entry (XREAD never consumes)."""
        try:
            await client.xread({self.stream: "$"}, block=BLOCK_SECONDS * 1000)
        except ResponseError:
            await asyncio.sleep(1.0)  # the key holds something else: poll

    def follower(self) -> KeyspaceFollower:
        return KeyspaceFollower(self.config.label, self.clients, self.stream, "gtxe",
                                self.allow_config_set, self.read, self._wait_for_change)
