"""NATS JetStream worker: pulls one message at a time from the durable pull consumer ``CONSUMER`` of
``STREAM`` and acknowledges it after the work.

On SIGTERM the fetch in progress is allowed to finish (at most 1 s) and a message it brings is
worked on and acknowledged, so no message is left delivered-but-unacknowledged (that would count
as lag until the consumer's ack wait ran out).

Environment: NATS_URL, STREAM, CONSUMER, JOURNAL, HOLD.
"""

from __future__ import annotations

import asyncio
import os

import nats
import nats.errors
from _worker import HOLD, Journal, sigterm_event


async def main() -> None:
    stop = sigterm_event()
    journal = Journal()
    client = await nats.connect(os.environ["NATS_URL"])
    jobs = await client.jetstream().pull_subscribe_bind(os.environ["CONSUMER"], os.environ["STREAM"])
    journal.started()
    while not stop.is_set():
        try:
            messages = await jobs.fetch(1, timeout=1)
        except nats.errors.TimeoutError:
            continue
        for message in messages:
            await asyncio.sleep(HOLD)
            journal.processed(message.data.decode())
            await message.ack_sync()
    await client.close()  # every message taken was acked (ack_sync); drain would wait on the pull inbox
    journal.stopped()


asyncio.run(main())
