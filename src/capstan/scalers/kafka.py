"""The ``kafka`` scaler: consumer-group lag (KEDA semantics), with push wake-ups.

Lag of one partition is ``latest offset - committed offset`` of the group; the metric is the
total over the partitions of ``topic`` (or of every topic the group has committed offsets for),
capped so that replicas never exceed the partitions that can do work (unless
``allowIdleConsumers``). Offsets come from the admin API (OffsetFetch) and ListOffsets; nothing
joins the group or commits.

Push: a group-less consumer assigned to the topic's partitions, positioned at their ends, long
polls for new records (Kafka's own fetch wait, no busy polling). Any new record triggers one
lag read and ``wake(active)``. It never commits and is invisible to the workers' group. Lag that
falls because workers commit is seen by the regular poll.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from capstan.scalers import _metadata as md
from capstan.scalers._brokers import Backoff, Rechecker, follow_with_rechecks, tls_context
from capstan.scalers.base import (
    MetricResult,
    MetricSpec,
    PushScaler,
    ScalerConfig,
    ScalerConfigError,
    ScalerError,
    WakeCallback,
)
from capstan.scalers.registry import register

INVALID_OFFSET = -1
SASL_MECHANISMS = {"plaintext": "PLAIN", "scram_sha256": "SCRAM-SHA-256", "scram_sha512": "SCRAM-SHA-512"}


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: list[str]
    consumer_group: str
    topic: str | None
    lag_threshold: int
    activation_lag_threshold: int
    offset_reset_policy: str
    allow_idle_consumers: bool
    limit_to_partitions_with_lag: bool
    ensure_even_distribution: bool
    scale_to_zero_on_invalid_offset: bool
    exclude_persistent_lag: bool
    partition_limitation: frozenset[int] | None
    security_protocol: str
    sasl_mechanism: str | None
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None


def parse_partition_limitation(config: ScalerConfig, text: str) -> frozenset[int]:
    """``"1,2,10-20"`` -> {1, 2, 10, ..., 20}."""
    partitions: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            if "-" in item:
                low, high = (int(bound) for bound in item.split("-", 1))
                if low > high:
                    raise ValueError(item)
                partitions.update(range(low, high + 1))
            else:
                partitions.add(int(item))
        except ValueError as exc:
            raise ScalerConfigError(
                f"{config.label}: metadata.partitionLimitation: {item!r} is not a partition number or range "
                "(write e.g. \"1,2,10-20\")") from exc
    return frozenset(partitions)


def parse_settings(config: ScalerConfig) -> KafkaSettings:
    servers = [s.strip() for s in md.required(config, "bootstrapServers").split(",") if s.strip()]
    group = md.required(config, "consumerGroup")
    topic = md.raw(config, "topic")
    lag_threshold = md.integer(config, "lagThreshold", 10)
    if lag_threshold <= 0:
        raise ScalerConfigError(f"{config.label}: metadata.lagThreshold must be greater than 0, got {lag_threshold}")
    activation = md.integer(config, "activationLagThreshold", 0)
    if activation < 0:
        raise ScalerConfigError(
            f"{config.label}: metadata.activationLagThreshold must be 0 or more, got {activation}")
    allow_idle = md.boolean(config, "allowIdleConsumers")
    limit_to_lag = md.boolean(config, "limitToPartitionsWithLag")
    even = md.boolean(config, "ensureEvenDistributionOfPartitions")
    if allow_idle and limit_to_lag:
        raise ScalerConfigError(
            f"{config.label}: allowIdleConsumers and limitToPartitionsWithLag cannot both be true")
    for flag, name in ((limit_to_lag, "limitToPartitionsWithLag"), (even, "ensureEvenDistributionOfPartitions")):
        if flag and topic is None:
            raise ScalerConfigError(f"{config.label}: {name} needs metadata.topic")
    limitation_text = md.raw(config, "partitionLimitation")
    limitation = parse_partition_limitation(config, limitation_text) if limitation_text else None
    if limitation is not None and topic is None:
        raise ScalerConfigError(f"{config.label}: partitionLimitation needs metadata.topic")

    sasl = md.choice(config, "sasl", ("none", "plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi"),
                     "none", md.AUTH_OR_METADATA)
    if sasl in ("oauthbearer", "gssapi"):
        raise ScalerConfigError(f"{config.label}: sasl {sasl} is not supported by Capstan "
                                "(supported: none, plaintext, scram_sha256, scram_sha512)")
    username = md.raw(config, "username", md.AUTH_ONLY)
    password = md.raw(config, "password", md.AUTH_ONLY)
    if sasl != "none" and (not username or not password):
        raise ScalerConfigError(f"{config.label}: sasl {sasl} needs username and password authentication parameters")
    tls_mode = md.choice(config, "tls", ("enable", "disable"), "disable", md.AUTH_OR_METADATA)
    tls = None
    if tls_mode == "enable":
        cert, key = md.raw(config, "cert", md.AUTH_ONLY), md.raw(config, "key", md.AUTH_ONLY)
        if bool(cert) != bool(key):
            raise ScalerConfigError(f"{config.label}: tls needs both cert and key, or neither")
        tls = tls_context(ca=md.raw(config, "ca", md.AUTH_ONLY), cert=cert, key=key,
                          key_password=md.raw(config, "keyPassword", md.AUTH_ONLY),
                          insecure=md.boolean(config, "unsafeSsl"))
    protocol = {(False, False): "PLAINTEXT", (False, True): "SSL",
                (True, False): "SASL_PLAINTEXT", (True, True): "SASL_SSL"}[(sasl != "none", tls is not None)]
    return KafkaSettings(
        bootstrap_servers=servers, consumer_group=group, topic=topic, lag_threshold=lag_threshold,
        activation_lag_threshold=activation,
        offset_reset_policy=md.choice(config, "offsetResetPolicy", ("latest", "earliest"), "latest"),
        allow_idle_consumers=allow_idle, limit_to_partitions_with_lag=limit_to_lag, ensure_even_distribution=even,
        scale_to_zero_on_invalid_offset=md.boolean(config, "scaleToZeroOnInvalidOffset"),
        exclude_persistent_lag=md.boolean(config, "excludePersistentLag"), partition_limitation=limitation,
        security_protocol=protocol, sasl_mechanism=SASL_MECHANISMS.get(sasl), username=username,
        password=password, tls=tls)


def partition_lag(settings: KafkaSettings, committed: int, latest: int | None) -> int:
    """One partition's lag with KEDA's rules for a group that has not committed (offset -1)."""
    if latest is None:
        return 0  # the broker did not report the partition's end: count nothing
    if committed == INVALID_OFFSET:
        if settings.scale_to_zero_on_invalid_offset:
            return 0
        return 1 if settings.offset_reset_policy == "latest" else latest
    return latest - committed


def smallest_factor_at_least(partitions: int, lag: int, threshold: int) -> int:
    """The smallest divisor f of ``partitions`` with f * threshold >= lag (or ``partitions``)."""
    for factor in range(1, partitions + 1):
        if partitions % factor == 0 and factor * threshold >= lag:
            return factor
    return partitions


def cap_total_lag(settings: KafkaSettings, total: int, partitions: int, partitions_with_lag: int) -> int:
    """KEDA's cap: no more replicas than partitions that can work, by capping the metric."""
    if settings.allow_idle_consumers and not settings.ensure_even_distribution:
        return total
    upper = partitions_with_lag if settings.limit_to_partitions_with_lag else partitions
    if total / settings.lag_threshold > upper:
        total = upper * settings.lag_threshold
    if settings.ensure_even_distribution and partitions > 0 and total > 0:
        total = smallest_factor_at_least(partitions, total, settings.lag_threshold) * settings.lag_threshold
    return total


@register("kafka")
class KafkaScaler(PushScaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.settings = parse_settings(config)
        detail = self.settings.topic or f"{self.settings.consumer_group}-topics"
        self._metric = md.metric_name(config, detail)
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets_client: AIOKafkaConsumer | None = None
        self._previous_offsets: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(self._metric, float(self.settings.lag_threshold),
                           float(self.settings.activation_lag_threshold), self.config.metric_type)]

    def _client_options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {
            "bootstrap_servers": s.bootstrap_servers, "client_id": "capstan-kafka-scaler",
            "request_timeout_ms": max(1000, int(self.config.timeout_seconds * 1000)),
            "security_protocol": s.security_protocol, "ssl_context": s.tls}
        if s.sasl_mechanism:
            options.update(sasl_mechanism=s.sasl_mechanism, sasl_plain_username=s.username,
                           sasl_plain_password=s.password)
        return options

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._offsets_client is None:
            admin = AIOKafkaAdminClient(**self._client_options())
            consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **self._client_options())
            try:
                await admin.start()
                await consumer.start()
            except BaseException:
                await _close_quietly(admin, consumer)
                raise
            self._admin, self._offsets_client = admin, consumer
        return self._admin, self._offsets_client

    async def _drop_clients(self) -> None:
        admin, consumer = self._admin, self._offsets_client
        self._admin = self._offsets_client = None
        await _close_quietly(admin, consumer)

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        lag, lag_with_persistent = await self.total_lag()
        return MetricResult(float(lag), lag_with_persistent > self.settings.activation_lag_threshold)

    async def total_lag(self, remember_offsets: bool = True) -> tuple[int, int]:
        """(lag for scaling, capped; lag including persistent lag, for activation).

        ``remember_offsets=False`` (push wake-ups, which may come milliseconds apart) compares with
        the offsets of the last poll without replacing them, so ``excludePersistentLag`` keeps
        meaning "no progress since the previous poll"."""
        last_error: KafkaError | None = None
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                async with self._lock:
                    while True:
                        try:
                            return await self._total_lag(remember_offsets)
                        except KafkaError as exc:
                            # A coordinator being elected, a leader moving: Kafka says "try again".
                            if not getattr(exc, "retriable", False):
                                raise
                            last_error = exc
                        await asyncio.sleep(0.2)
        except TimeoutError as exc:
            await self._drop_clients()
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise ScalerError(f"{self.config.label}: Kafka did not answer within "
                              f"{self.config.timeout_seconds:g}s{detail}") from exc
        except KafkaError as exc:
            await self._drop_clients()
            raise ScalerError(f"{self.config.label}: Kafka: {exc!r}") from exc

    async def _topic_partitions(self, admin: AIOKafkaAdminClient, topics: Iterable[str]) -> list[TopicPartition]:
        wanted = sorted(set(topics))
        if not wanted:
            return []
        partitions: list[TopicPartition] = []
        for description in await admin.describe_topics(wanted):
            name = description["topic"]
            if description.get("error_code"):
                raise ScalerError(f"{self.config.label}: topic {name!r}: Kafka error code {description['error_code']}"
                                  " (does the topic exist?)")
            for partition in description["partitions"]:
                number = int(partition["partition"])
                if self.settings.partition_limitation is None or number in self.settings.partition_limitation:
                    partitions.append(TopicPartition(name, number))
        return sorted(partitions)

    async def _total_lag(self, remember_offsets: bool) -> tuple[int, int]:
        s = self.settings
        admin, consumer = await self._clients()
        if s.topic is not None:
            partitions = await self._topic_partitions(admin, [s.topic])
            committed = await admin.list_consumer_group_offsets(s.consumer_group, partitions=partitions)
        else:
            committed = await admin.list_consumer_group_offsets(s.consumer_group)
            partitions = await self._topic_partitions(admin, {tp.topic for tp in committed})
        if not partitions:
            return 0, 0
        latest: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        total = total_with_persistent = partitions_with_lag = 0
        for tp in partitions:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None else INVALID_OFFSET
            lag = partition_lag(s, offset, latest.get(tp))
            total_with_persistent += lag
            if lag > 0:
                partitions_with_lag += 1
            if s.exclude_persistent_lag and offset != INVALID_OFFSET:
                previous = self._previous_offsets.get(tp)
                if remember_offsets:
                    self._previous_offsets[tp] = offset
                if previous == offset and lag > 0:
                    continue  # the group made no progress here: more replicas would not help
            total += lag
        return cap_total_lag(s, total, len(partitions), partitions_with_lag), total_with_persistent

    async def run(self, wake: WakeCallback) -> None:
        await follow_with_rechecks(self._read_active, wake, self._watch_new_records,
                                   (KafkaError, OSError, ScalerError, TimeoutError))

    async def _read_active(self) -> bool:
        _, lag_with_persistent = await self.total_lag(remember_offsets=False)
        return lag_with_persistent > self.settings.activation_lag_threshold

    async def _watch_new_records(self, rechecker: Rechecker, backoff: Backoff) -> None:
        async with asyncio.timeout(self.config.timeout_seconds):
            admin, _ = await self._clients()
            if self.settings.topic is not None:
                partitions = await self._topic_partitions(admin, [self.settings.topic])
            else:
                committed = await admin.list_consumer_group_offsets(self.settings.consumer_group)
                partitions = await self._topic_partitions(admin, {tp.topic for tp in committed})
        if not partitions:
            return
        watcher = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, fetch_max_wait_ms=1000,
                                   max_partition_fetch_bytes=1024, fetch_max_bytes=64 * 1024,
                                   **self._client_options())
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                await watcher.start()
                watcher.assign(partitions)
                await watcher.seek_to_end(*partitions)
            backoff.reset()
            rechecker.poke()  # report the state we start from
            while True:
                batches = await watcher.getmany(timeout_ms=5000, max_records=1)
                if any(batches.values()):
                    rechecker.poke()
                    await watcher.seek_to_end(*partitions)  # skip the bodies: only "something arrived" matters
        finally:
            await _close_quietly(watcher)

    async def aclose(self) -> None:
        await self._drop_clients()


async def _close_quietly(*clients: AIOKafkaAdminClient | AIOKafkaConsumer | None) -> None:
    for client in clients:
        if client is None:
            continue
        try:
            async with asyncio.timeout(2.0):
                if isinstance(client, AIOKafkaConsumer):
                    await client.stop()
                else:
                    await client.close()
        except Exception:  # a broken client may fail to close; it is dropped anyway
            pass

