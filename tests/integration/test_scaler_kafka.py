"""kafka scaler against the real Kafka (KRaft) of tests/services.py: lag, KEDA's offset rules, the cap, push."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
from tests.integration.scaler_support import closed_port, silent_port_fixture  # noqa: F401 (a fixture)
from tests.services import ServiceInfo, service

from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError
from capstan.scalers.kafka import KafkaScaler

PARTITIONS = 3


@pytest.fixture(scope="module")
def kafka() -> ServiceInfo:
    return service("kafka")


@pytest.fixture
async def topic(kafka: ServiceInfo) -> AsyncIterator[str]:
    """A fresh topic with three partitions, deleted afterwards."""
    name = f"capstan-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.extra["bootstrap_servers"], request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


def group() -> str:
    return f"capstan-workers-{uuid.uuid4().hex[:8]}"


def config(kafka: ServiceInfo, timeout: float = 10.0, **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type="kafka", trigger_index=0, timeout_seconds=timeout,
                        metadata={"bootstrapServers": kafka.extra["bootstrap_servers"], **metadata})


async def produce(kafka: ServiceInfo, topic: str, per_partition: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.extra["bootstrap_servers"])
    await producer.start()
    try:
        for partition, count in per_partition.items():
            for i in range(count):
                await producer.send_and_wait(topic, f"job {i}".encode(), partition=partition)
    finally:
        await producer.stop()


async def commit(kafka: ServiceInfo, group_id: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for the group the way a worker would, without joining it (manual assignment)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.extra["bootstrap_servers"], group_id=group_id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in offsets]
        consumer.assign(partitions)
        await consumer.commit({TopicPartition(topic, p): offset for p, offset in offsets.items()})
    finally:
        await consumer.stop()


async def read(scaler: KafkaScaler) -> MetricResult:
    try:
        return await scaler.get_metrics_and_activity(scaler.metric_specs()[0].name)
    except BaseException:
        await scaler.aclose()
        raise


async def test_lag_per_offset_reset_policy(kafka: ServiceInfo, topic: str) -> None:
    await produce(kafka, topic, {0: 4, 1: 2, 2: 0})
    workers = group()
    latest = KafkaScaler(config(kafka, topic=topic, consumerGroup=workers))
    earliest = KafkaScaler(config(kafka, topic=topic, consumerGroup=workers, offsetResetPolicy="earliest"))
    to_zero = KafkaScaler(config(kafka, topic=topic, consumerGroup=workers, scaleToZeroOnInvalidOffset="true"))
    try:
        # Nothing committed yet: KEDA counts 1 per partition under "latest", the whole log under "earliest".
        assert await read(latest) == MetricResult(3.0, True)
        assert await read(earliest) == MetricResult(6.0, True)
        assert await read(to_zero) == MetricResult(0.0, False)

        await commit(kafka, workers, topic, {0: 1, 1: 2, 2: 0})
        assert await read(latest) == MetricResult(3.0, True)  # 4-1 + 2-2 + 0-0
        await produce(kafka, topic, {2: 5})
        assert await read(earliest) == MetricResult(8.0, True)

        await commit(kafka, workers, topic, {0: 4, 2: 5})
        assert await read(latest) == MetricResult(0.0, False)  # drained
    finally:
        for scaler in (latest, earliest, to_zero):
            await scaler.aclose()


async def test_replicas_capped_at_partitions_unless_idle_consumers_allowed(kafka: ServiceInfo, topic: str) -> None:
    await produce(kafka, topic, {0: 12, 1: 6, 2: 2})
    workers = group()
    await commit(kafka, workers, topic, {0: 0, 1: 0, 2: 0})
    capped = KafkaScaler(config(kafka, topic=topic, consumerGroup=workers, lagThreshold="2"))
    idle_ok = KafkaScaler(config(kafka, topic=topic, consumerGroup=workers, lagThreshold="2",
                                 allowIdleConsumers="true"))
    with_lag = KafkaScaler(config(kafka, topic=topic, consumerGroup=workers, lagThreshold="2",
                                  limitToPartitionsWithLag="true"))
    limited = KafkaScaler(config(kafka, topic=topic, consumerGroup=workers, partitionLimitation="1-2",
                                 activationLagThreshold="8"))
    try:
        assert await read(capped) == MetricResult(6.0, True)  # 20 lag, but 3 partitions x 2
        assert await read(idle_ok) == MetricResult(20.0, True)
        await commit(kafka, workers, topic, {1: 6, 2: 2})
        assert await read(with_lag) == MetricResult(2.0, True)  # only partition 0 has lag: 1 x 2
        assert await read(limited) == MetricResult(0.0, False)  # partitions 1 and 2 only
        await commit(kafka, workers, topic, {1: 0})
        assert await read(limited) == MetricResult(6.0, False)  # activation is strictly greater than 8
    finally:
        for scaler in (capped, idle_ok, with_lag, limited):
            await scaler.aclose()


async def test_without_topic_all_topics_of_the_group(kafka: ServiceInfo, topic: str) -> None:
    await produce(kafka, topic, {0: 3, 1: 3, 2: 3})
    workers = group()
    await commit(kafka, workers, topic, {0: 1})  # partitions 1 and 2 uncommitted: 1 each under "latest"
    scaler = KafkaScaler(config(kafka, consumerGroup=workers))
    try:
        assert scaler.metric_specs()[0].name == f"s0-kafka-{workers}-topics"
        assert await read(scaler) == MetricResult(4.0, True)
    finally:
        await scaler.aclose()
    unknown = KafkaScaler(config(kafka, consumerGroup=group()))
    try:
        assert await read(unknown) == MetricResult(0.0, False)  # a group with no offsets has no lag
    finally:
        await unknown.aclose()


async def test_exclude_persistent_lag(kafka: ServiceInfo, topic: str) -> None:
    await produce(kafka, topic, {0: 5, 1: 5})
    workers = group()
    await commit(kafka, workers, topic, {0: 1, 1: 1, 2: 0})
    scaler = KafkaScaler(config(kafka, topic=topic, consumerGroup=workers, excludePersistentLag="true",
                                lagThreshold="100"))
    try:
        assert await read(scaler) == MetricResult(8.0, True)  # first look: all lag counts
        # Nobody consumed since: the lag is persistent, not worth more replicas, but still active.
        assert await read(scaler) == MetricResult(0.0, True)
        await commit(kafka, workers, topic, {0: 3})
        assert await read(scaler) == MetricResult(2.0, True)  # partition 0 moved
    finally:
        await scaler.aclose()


async def test_push_wakes_within_a_second_of_a_publish(kafka: ServiceInfo, topic: str) -> None:
    workers = group()
    await commit(kafka, workers, topic, {0: 0, 1: 0, 2: 0})
    scaler = KafkaScaler(config(kafka, topic=topic, consumerGroup=workers))
    wakes: asyncio.Queue[tuple[bool, float]] = asyncio.Queue()
    runner = asyncio.create_task(scaler.run(lambda active: wakes.put_nowait((active, time.monotonic()))))
    try:
        first, _ = await asyncio.wait_for(wakes.get(), 30)
        assert first is False
        await asyncio.sleep(0.5)  # let the watcher settle into its long poll
        published_at = time.monotonic()
        await produce(kafka, topic, {1: 1})
        active, woke_at = await asyncio.wait_for(wakes.get(), 10)
        assert active is True
        assert woke_at - published_at < 1.0
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await scaler.aclose()


async def test_missing_topic_is_an_error(kafka: ServiceInfo) -> None:
    scaler = KafkaScaler(config(kafka, topic=f"capstan-missing-{uuid.uuid4().hex[:8]}", consumerGroup=group()))
    try:
        with pytest.raises(ScalerError, match="does the topic exist"):
            await scaler.get_metrics_and_activity("m")
    finally:
        await scaler.aclose()


async def test_unreachable_broker_fails_within_the_timeout(silent_port: int) -> None:
    for port in (closed_port(), silent_port):
        scaler = KafkaScaler(ScalerConfig(trigger_type="kafka", trigger_index=0, timeout_seconds=1.5, metadata={
            "bootstrapServers": f"127.0.0.1:{port}", "consumerGroup": "g", "topic": "t"}))
        started = time.monotonic()
        with pytest.raises(ScalerError, match="kafka trigger"):
            await scaler.get_metrics_and_activity("m")
        assert time.monotonic() - started < 5
        await scaler.aclose()
