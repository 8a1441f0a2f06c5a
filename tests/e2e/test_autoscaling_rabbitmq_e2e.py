"""Autoscaling end to end on RabbitMQ: a real ``capstan server``, the rabbitmq scaler (AMQP,
``QueueLength``), and workers that consume a real queue with prefetch 1 and ack after the work.

The AMQP passive declare counts the *ready* messages (a message a worker holds unacknowledged is
not counted). N = 20, value 5: the first pass after activation sees at least 16 ready messages
(a worker has had at most one polling interval, 1 s, at 0.5 s per message), so the HPA wants
ceil(20 / 5) = 4 and the legacy scale-up limit from 1 replica, max(2 x 1, 4) = 4, allows it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aio_pika
import pytest

from tests.e2e.broker_kit import broker_scaled_object, hpa_peak, run_scaling, script_deployment
from tests.e2e.harness import CapstanServer
from tests.services import ServiceInfo

pytestmark = pytest.mark.slow

MESSAGES, TARGET, MAXIMUM = 20, 5, 10


async def _declare(url: str, queue: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=False, auto_delete=False)


async def _publish(url: str, queue: str, bodies: list[str]) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body.encode()), routing_key=queue)


async def _ready_and_consumers(url: str, queue: str) -> tuple[int, int]:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)


async def _delete(url: str, queue: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)


def test_rabbitmq_queue_length_scales_workers_zero_to_four_and_back(server: CapstanServer, tmp_path: Path,
                                                                    rabbitmq_service: ServiceInfo) -> None:
    url = rabbitmq_service.url
    queue = f"e2e-jobs-{uuid.uuid4().hex[:8]}"
    journal = tmp_path / "journal"
    asyncio.run(_declare(url, queue))
    try:
        server.apply(script_deployment("worker", "rabbitmq_worker.py", {
            "AMQP_URL": url, "QUEUE": queue, "JOURNAL": str(journal), "HOLD": "0.5"}))
        trigger = {"type": "rabbitmq", "metadata": {
            "hostFromEnv": "AMQP_URL", "protocol": "amqp", "queueName": queue, "mode": "QueueLength",
            "value": str(TARGET)}}
        bodies = [f"job-{i}" for i in range(MESSAGES)]
        run = run_scaling(
            server, "worker", broker_scaled_object("worker", trigger, maximum=MAXIMUM),
            publish=lambda: asyncio.run(_publish(url, queue, bodies)),
            drained=lambda: asyncio.run(_ready_and_consumers(url, queue))[0] == 0,
            peak=hpa_peak(MESSAGES, TARGET, MAXIMUM), journal=journal, expected=bodies)
        print(run.report())
        assert asyncio.run(_ready_and_consumers(url, queue)) == (0, 0)  # nothing left, no worker attached
    finally:
        asyncio.run(_delete(url, queue))
