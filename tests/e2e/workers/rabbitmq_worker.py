"""RabbitMQ worker: consumes ``QUEUE`` with prefetch 1 and acknowledges each message after the work,
so a worker never holds more than the one message it is working on.

Environment: AMQP_URL, QUEUE, JOURNAL, HOLD (seconds per message).
"""

from __future__ import annotations

import asyncio
import os

import aio_pika
from _worker import HOLD, Journal, sigterm_event


async def main() -> None:
    stop = sigterm_event()
    journal = Journal()
    busy = asyncio.Lock()

    async def work(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with busy:
            await asyncio.sleep(HOLD)
            journal.processed(message.body.decode())
            await message.ack()

    connection = await aio_pika.connect(os.environ["AMQP_URL"])
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.get_queue(os.environ["QUEUE"])  # passive: the test declares it
        tag = await queue.consume(work)
        journal.started()
        await stop.wait()
        await queue.cancel(tag)  # no new deliveries; the message being worked on is finished and acked
        async with busy:
            pass
    journal.stopped()


asyncio.run(main())
