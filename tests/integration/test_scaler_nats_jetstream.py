"""nats-jetstream scaler against the real NATS (JetStream) of tests/services.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from tests.integration.scaler_support import closed_port, silent_port_fixture  # noqa: F401 (a fixture)
from tests.services import ServiceInfo, service

from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError
from capstan.scalers.nats_jetstream import NATSJetStreamScaler


@dataclass
class Stream:
    name: str
    subject: str
    consumer: str
    js: JetStreamContext


@pytest.fixture(scope="module")
def server() -> ServiceInfo:
    return service("nats")


@pytest.fixture
async def client(server: ServiceInfo) -> AsyncIterator[Client]:
    connection = await nats.connect(server.url)
    yield connection
    await connection.close()


@pytest.fixture
async def stream(client: Client) -> AsyncIterator[Stream]:
    """A fresh stream with a durable pull consumer ``workers``, deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    js = client.jetstream()
    name = f"CAPSTAN_{suffix}"
    await js.add_stream(name=name, subjects=[f"capstan.{suffix}.>"])
    await js.add_consumer(name, ConsumerConfig(durable_name="workers", ack_policy=AckPolicy.EXPLICIT))
    yield Stream(name=name, subject=f"capstan.{suffix}.jobs", consumer="workers", js=js)
    await js.delete_stream(name)


def config(endpoint: str, stream: str, consumer: str = "workers", timeout: float = 5.0,
           **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type="nats-jetstream", trigger_index=0, timeout_seconds=timeout, metadata={
        "natsServerMonitoringEndpoint": endpoint, "account": "$G", "stream": stream, "consumer": consumer,
        **metadata})


def monitoring_endpoint(server: ServiceInfo) -> str:
    return urlsplit(server.extra["monitor_url"]).netloc


async def publish(stream: Stream, count: int) -> None:
    for i in range(count):
        await stream.js.publish(stream.subject, f"job {i}".encode())


async def test_lag_counts_pending_and_unacknowledged(server: ServiceInfo, stream: Stream) -> None:
    scaler = NATSJetStreamScaler(config(monitoring_endpoint(server), stream.name, lagThreshold="5"))
    try:
        assert await scaler.get_metrics_and_activity("m") == MetricResult(0.0, False)
        await publish(stream, 6)
        assert await scaler.get_metrics_and_activity("m") == MetricResult(6.0, True)

        worker = await stream.js.pull_subscribe(stream.subject, durable=stream.consumer, stream=stream.name)
        taken = await worker.fetch(2, timeout=5)
        assert await scaler.get_metrics_and_activity("m") == MetricResult(6.0, True)  # 4 pending + 2 unacked
        for message in taken:
            await message.ack_sync()
        assert await scaler.get_metrics_and_activity("m") == MetricResult(4.0, True)

        for message in await worker.fetch(4, timeout=5):
            await message.ack_sync()
        assert await scaler.get_metrics_and_activity("m") == MetricResult(0.0, False)
    finally:
        await scaler.aclose()


async def test_activation_threshold_is_strict(server: ServiceInfo, stream: Stream) -> None:
    scaler = NATSJetStreamScaler(config(monitoring_endpoint(server), stream.name, activationLagThreshold="2"))
    try:
        await publish(stream, 2)
        assert await scaler.get_metrics_and_activity("m") == MetricResult(2.0, False)
        await publish(stream, 1)
        assert await scaler.get_metrics_and_activity("m") == MetricResult(3.0, True)
    finally:
        await scaler.aclose()


async def test_push_wakes_on_publish_and_on_ack(server: ServiceInfo, stream: Stream) -> None:
    scaler = NATSJetStreamScaler(config(monitoring_endpoint(server), stream.name))
    wakes: asyncio.Queue[tuple[bool, float]] = asyncio.Queue()
    runner = asyncio.create_task(scaler.run(lambda active: wakes.put_nowait((active, time.monotonic()))))
    try:
        first, _ = await asyncio.wait_for(wakes.get(), 15)
        assert first is False
        await asyncio.sleep(0.3)  # let the subscriptions settle
        published_at = time.monotonic()
        await publish(stream, 1)
        active, woke_at = await asyncio.wait_for(wakes.get(), 10)
        assert active is True and woke_at - published_at < 1.0

        worker = await stream.js.pull_subscribe(stream.subject, durable=stream.consumer, stream=stream.name)
        [message] = await worker.fetch(1, timeout=5)
        await message.ack_sync()
        deadline = time.monotonic() + 10
        while True:  # the fetch itself may wake us too; the ack brings the lag to 0
            active, _ = await asyncio.wait_for(wakes.get(), max(0.1, deadline - time.monotonic()))
            if active is False:
                break
        # Nothing was consumed by the scaler: the stream still holds the message.
        info = await stream.js.stream_info(stream.name)
        assert info.state.messages == 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await scaler.aclose()


async def test_unknown_names_are_errors(server: ServiceInfo, stream: Stream) -> None:
    endpoint = monitoring_endpoint(server)
    for metadata, message in (({"consumer": "nobody"}, f"consumer 'nobody' not found in stream '{stream.name}'"),
                              ({"stream": "NOPE"}, "stream 'NOPE' not found in account '\\$G'")):
        scaler = NATSJetStreamScaler(config(endpoint, **{"stream": stream.name, **metadata}))
        with pytest.raises(ScalerError, match=message):
            await scaler.get_metrics_and_activity("m")
        await scaler.aclose()


async def test_unreachable_endpoint_fails_within_the_timeout(silent_port: int) -> None:
    for port in (closed_port(), silent_port):
        scaler = NATSJetStreamScaler(config(f"127.0.0.1:{port}", "S", timeout=1.0))
        started = time.monotonic()
        with pytest.raises(ScalerError, match="nats-jetstream trigger"):
            await scaler.get_metrics_and_activity("m")
        assert time.monotonic() - started < 4
        await scaler.aclose()
