"""Autoscaling end to end on Kafka: a real ``capstan server``, the kafka scaler (consumer-group lag,
push wake-ups on new records), and workers that are aiokafka members of the trigger's consumer group,
committing after each record.

The topic has 4 partitions and receives N = 40 records, 10 per partition; lagThreshold is 5 and
allowIdleConsumers is false. Per docs/scalers/kafka.md the metric is the total lag capped at
partitions x lagThreshold = 4 x 5 = 20 (before the group's first commit a partition's lag is its
latest offset, offsetResetPolicy earliest), so the HPA wants ceil(20 / 5) = 4 replicas — one per
partition — although 40 / 5 would be 8 and maxReplicaCount is 10. The lag stays above 20 until
the workers have committed 20 records, long after the first passes.

Kafka delivers at least once: a record in progress while its partition moves to a new member during
a rebalance may be processed twice, so the journal must hold every record, possibly more than once.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from tests.e2e.broker_kit import broker_scaled_object, hpa_peak, run_scaling, script_deployment
from tests.e2e.harness import CapstanServer
from tests.services import ServiceInfo

pytestmark = pytest.mark.slow

PARTITIONS, RECORDS, LAG_THRESHOLD, MAXIMUM = 4, 40, 5, 10


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = [await producer.send(topic, value.encode(), partition=i % PARTITIONS) for i, value in enumerate(values)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _lag(bootstrap: str, topic: str, group: str) -> int:
    """Latest minus committed offset over the topic's partitions (no commit counts as offset 0)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        latest = await consumer.end_offsets(partitions)
        committed = [await consumer.committed(tp) for tp in partitions]
        return sum(latest[tp] - (offset or 0) for tp, offset in zip(partitions, committed, strict=True))
    finally:
        await consumer.stop()


def test_kafka_group_lag_scales_workers_up_to_the_partition_count_and_back(
        server: CapstanServer, tmp_path: Path, kafka_service: ServiceInfo) -> None:
    bootstrap = kafka_service.extra["bootstrap_servers"]
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"e2e-jobs-{suffix}", f"e2e-workers-{suffix}"
    journal = tmp_path / "journal"
    asyncio.run(_create_topic(bootstrap, topic))
    try:
        server.apply(script_deployment("worker", "kafka_worker.py", {
            "BOOTSTRAP": bootstrap, "TOPIC": topic, "GROUP": group, "JOURNAL": str(journal), "HOLD": "0.3"}))
        trigger = {"type": "kafka", "metadata": {
            "bootstrapServers": bootstrap, "consumerGroup": group, "topic": topic,
            "lagThreshold": str(LAG_THRESHOLD), "offsetResetPolicy": "earliest", "allowIdleConsumers": "false"}}
        records = [f"record-{i}" for i in range(RECORDS)]
        capped_lag = min(RECORDS, PARTITIONS * LAG_THRESHOLD)
        peak = hpa_peak(capped_lag, LAG_THRESHOLD, MAXIMUM)
        assert peak == PARTITIONS
        run = run_scaling(
            server, "worker", broker_scaled_object("worker", trigger, maximum=MAXIMUM, polling=2),
            publish=lambda: asyncio.run(_produce(bootstrap, topic, records)),
            drained=lambda: asyncio.run(_lag(bootstrap, topic, group)) == 0,
            peak=peak, journal=journal, expected=records, exactly_once=False)
        print(run.report())
    finally:
        asyncio.run(_delete_topic(bootstrap, topic))
