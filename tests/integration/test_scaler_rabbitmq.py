"""rabbitmq scaler against the real RabbitMQ of tests/services.py (AMQP and the management API)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aio_pika.abc
import pytest
from tests.integration.scaler_support import closed_port, silent_port_fixture  # noqa: F401 (a fixture)
from tests.services import ServiceInfo, service

from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError
from capstan.scalers.rabbitmq import RabbitMQScaler


@pytest.fixture(scope="module")
def rabbit() -> ServiceInfo:
    return service("rabbitmq")


@pytest.fixture
async def channel(rabbit: ServiceInfo) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(rabbit.url)
    async with connection:
        yield await connection.channel()


def name(prefix: str = "capstan-scaler") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def config(timeout: float = 5.0, auth: dict[str, str] | None = None, **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type="rabbitmq", trigger_index=0, metadata=metadata, auth_params=auth or {},
                        timeout_seconds=timeout)


def management_host(rabbit: ServiceInfo) -> str:
    return rabbit.extra["management_url"].replace("http://", f"http://{rabbit.user}:{rabbit.password}@") + "/"


async def publish(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> None:
    for i in range(count):
        await channel.default_exchange.publish(aio_pika.Message(body=f"job {i}".encode()), routing_key=queue)


async def eventually(read: Callable[[], Awaitable[MetricResult]], want: float, deadline: float = 30.0) -> MetricResult:
    """The management API refreshes its numbers every second: poll until the value arrives."""
    end = time.monotonic() + deadline
    while True:
        result = await read()
        if result.value == want or time.monotonic() > end:
            return result
        await asyncio.sleep(0.2)


async def test_amqp_queue_length(rabbit: ServiceInfo, channel: aio_pika.abc.AbstractChannel) -> None:
    queue = name()
    declared = await channel.declare_queue(queue, auto_delete=False)
    scaler = RabbitMQScaler(config(host=rabbit.url, queueName=queue, mode="QueueLength", value="5"))
    try:
        assert await scaler.get_metrics_and_activity("s0-rabbitmq-" + queue) == MetricResult(0.0, False)
        await publish(channel, queue, 7)
        assert await scaler.get_metrics_and_activity("s0-rabbitmq-" + queue) == MetricResult(7.0, True)
        await declared.purge()
        assert await scaler.get_metrics_and_activity("s0-rabbitmq-" + queue) == MetricResult(0.0, False)
    finally:
        await scaler.aclose()
        await declared.delete(if_unused=False, if_empty=False)


async def test_amqp_activation_value_is_strict(rabbit: ServiceInfo, channel: aio_pika.abc.AbstractChannel) -> None:
    queue = name()
    declared = await channel.declare_queue(queue)
    scaler = RabbitMQScaler(config(host=rabbit.url, queueName=queue, activationValue="3"))
    try:
        await publish(channel, queue, 3)
        assert await scaler.get_metrics_and_activity("m") == MetricResult(3.0, False)
        await publish(channel, queue, 1)
        assert await scaler.get_metrics_and_activity("m") == MetricResult(4.0, True)
    finally:
        await scaler.aclose()
        await declared.delete(if_unused=False, if_empty=False)


async def test_amqp_missing_queue_then_created(rabbit: ServiceInfo, channel: aio_pika.abc.AbstractChannel) -> None:
    queue = name()
    scaler = RabbitMQScaler(config(host=rabbit.url, queueName=queue))
    try:
        with pytest.raises(ScalerError, match=f"queue '{queue}' not found in vhost '/'"):
            await scaler.get_metrics_and_activity("m")
        declared = await channel.declare_queue(queue)
        await publish(channel, queue, 2)
        assert await scaler.get_metrics_and_activity("m") == MetricResult(2.0, True)  # a fresh channel
        await declared.delete(if_unused=False, if_empty=False)
    finally:
        await scaler.aclose()


async def test_http_counts_unacknowledged_unless_excluded(rabbit: ServiceInfo,
                                                          channel: aio_pika.abc.AbstractChannel) -> None:
    queue = name()
    declared = await channel.declare_queue(queue)
    host = management_host(rabbit)
    total = RabbitMQScaler(config(host=host, queueName=queue, mode="QueueLength", value="2"))
    ready_only = RabbitMQScaler(config(host=host, queueName=queue, mode="QueueLength", value="2",
                                       excludeUnacknowledged="true"))
    try:
        await publish(channel, queue, 6)
        assert await eventually(lambda: total.get_metrics_and_activity("m"), 6) == MetricResult(6.0, True)
        await channel.set_qos(prefetch_count=2)
        held: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)

        await declared.consume(hold, no_ack=False)  # takes 2 and never acknowledges them
        assert (await eventually(lambda: ready_only.get_metrics_and_activity("m"), 4)).value == 4
        assert (await total.get_metrics_and_activity("m")).value == 6
    finally:
        await total.aclose()
        await ready_only.aclose()
        await declared.delete(if_unused=False, if_empty=False)


async def test_http_regex_sum_and_max(rabbit: ServiceInfo, channel: aio_pika.abc.AbstractChannel) -> None:
    prefix = name("capstan-regex")
    queues = [await channel.declare_queue(f"{prefix}-{suffix}") for suffix in ("a", "b", "c")]
    for queue, count in zip(queues, (3, 5, 0), strict=True):
        await publish(channel, queue.name, count)
    host = management_host(rabbit)
    common = {"host": host, "queueName": f"^{prefix}-.*$", "useRegex": "true", "mode": "QueueLength", "value": "1",
              "pageSize": "2"}
    summed = RabbitMQScaler(config(**common))
    largest = RabbitMQScaler(config(**common, operation="max"))
    average = RabbitMQScaler(config(**common, operation="avg"))
    try:
        assert (await eventually(lambda: summed.get_metrics_and_activity("m"), 8)).value == 8
        assert (await eventually(lambda: largest.get_metrics_and_activity("m"), 5)).value == 5
        assert (await eventually(lambda: average.get_metrics_and_activity("m"), 8 / 3)).value == pytest.approx(8 / 3)
    finally:
        for scaler in (summed, largest, average):
            await scaler.aclose()
        for queue in queues:
            await queue.delete(if_unused=False, if_empty=False)


async def test_http_message_rate(rabbit: ServiceInfo, channel: aio_pika.abc.AbstractChannel) -> None:
    queue = name()
    declared = await channel.declare_queue(queue)
    scaler = RabbitMQScaler(config(host=management_host(rabbit), queueName=queue, mode="MessageRate", value="10"))
    try:
        idle = await scaler.get_metrics_and_activity("m")
        assert idle == MetricResult(0.0, False)
        end = time.monotonic() + 30
        result = idle
        while time.monotonic() < end and result.value <= 0:
            await publish(channel, queue, 20)
            await asyncio.sleep(0.3)
            result = await scaler.get_metrics_and_activity("m")
        assert result.value > 0 and result.active  # messages are being published: a positive publish rate
    finally:
        await scaler.aclose()
        await declared.delete(if_unused=False, if_empty=False)


async def test_http_missing_queue_and_bad_credentials(rabbit: ServiceInfo) -> None:
    missing = RabbitMQScaler(config(host=management_host(rabbit), queueName=name()))
    wrong = RabbitMQScaler(config(auth={"username": "capstan", "password": "wrong"},
                                  host=rabbit.extra["management_url"], queueName="anything"))
    try:
        with pytest.raises(ScalerError, match="not found in vhost '/'"):
            await missing.get_metrics_and_activity("m")
        with pytest.raises(ScalerError, match="answered 401"):
            await wrong.get_metrics_and_activity("m")
    finally:
        await missing.aclose()
        await wrong.aclose()


@pytest.mark.parametrize("scheme", ["amqp", "http"])
async def test_unreachable_broker_fails_within_the_timeout(scheme: str, silent_port: int) -> None:
    for port in (closed_port(), silent_port):
        scaler = RabbitMQScaler(config(timeout=1.0, host=f"{scheme}://u:p@127.0.0.1:{port}/", queueName="q"))
        started = time.monotonic()
        with pytest.raises(ScalerError, match="rabbitmq trigger"):
            await scaler.get_metrics_and_activity("m")
        assert time.monotonic() - started < 4
        await scaler.aclose()
