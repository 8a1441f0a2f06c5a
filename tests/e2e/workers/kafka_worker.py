"""Kafka worker: a member of the consumer group ``GROUP`` on ``TOPIC``, one record at a time,
committing the record's offset after the work (at-least-once: a record in progress during a
rebalance may be done again by the partition's next owner).

Environment: BOOTSTRAP, TOPIC, GROUP, JOURNAL, HOLD.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from _worker import HOLD, Journal, sigterm_event
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from aiokafka.structs import TopicPartition


async def main() -> None:
    stop = sigterm_event()
    journal = Journal()
    consumer = AIOKafkaConsumer(
        os.environ["TOPIC"], bootstrap_servers=os.environ["BOOTSTRAP"], group_id=os.environ["GROUP"],
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=1,
        heartbeat_interval_ms=500, session_timeout_ms=10000)  # frequent heartbeats: quick rebalances
    await consumer.start()
    journal.started()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=1)
            for partition, records in batches.items():
                for record in records:
                    await asyncio.sleep(HOLD)
                    journal.processed(record.value.decode())
                    # A failed commit: the partition moved to another member, which starts from the last commit.
                    with contextlib.suppress(CommitFailedError, IllegalStateError, RebalanceInProgressError):
                        await consumer.commit({TopicPartition(partition.topic, partition.partition): record.offset + 1})
    finally:
        await consumer.stop()  # leaves the group, so the others take its partitions at once
    journal.stopped()


asyncio.run(main())
