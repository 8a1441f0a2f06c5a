"""mqtt scaler against the real Mosquitto of tests/services.py: retained gauges, $SYS statistics, push."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from tests.integration.scaler_support import closed_port, silent_port_fixture  # noqa: F401 (a fixture)
from tests.services import ServiceInfo, service

from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError
from capstan.scalers.mqtt import MQTTScaler


@pytest.fixture(scope="module")
def broker() -> ServiceInfo:
    return service("mosquitto")


@pytest.fixture
async def topic(broker: ServiceInfo) -> AsyncIterator[str]:
    name = f"capstan/test/{uuid.uuid4().hex[:10]}/backlog"
    yield name
    await publish(broker, name, "")  # clear the retained gauge


async def publish(broker: ServiceInfo, topic: str, payload: str, retain: bool = True) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(topic, payload.encode(), qos=1, retain=retain)


def config(broker: ServiceInfo, timeout: float = 5.0, **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type="mqtt", trigger_index=0, timeout_seconds=timeout,
                        metadata={"host": broker.url, **metadata})


async def read_until(scaler: MQTTScaler, want: float, deadline: float = 10.0) -> MetricResult:
    """Reads until the subscription has delivered ``want`` (a publish reaches it asynchronously)."""
    end = time.monotonic() + deadline
    while True:
        try:
            result = await scaler.get_metrics_and_activity("m")
        except ScalerError:
            if time.monotonic() > end:
                raise
        else:
            if result.value == want or time.monotonic() > end:
                return result
        await asyncio.sleep(0.05)


async def test_retained_gauge(broker: ServiceInfo, topic: str) -> None:
    await publish(broker, topic, "42")
    scaler = MQTTScaler(config(broker, topic=topic, value="10", activationValue="5"))
    try:
        assert await scaler.get_metrics_and_activity("m") == MetricResult(42.0, True)  # the first read sees it
        await publish(broker, topic, "5")
        assert await read_until(scaler, 5.0) == MetricResult(5.0, False)  # activation is strictly greater
        await publish(broker, topic, "0.5e1", retain=False)
        await publish(broker, topic, "0")
        assert await read_until(scaler, 0.0) == MetricResult(0.0, False)
    finally:
        await scaler.aclose()


async def test_no_retained_value_reads_zero_at_once(broker: ServiceInfo, topic: str) -> None:
    scaler = MQTTScaler(config(broker, topic=topic, value="1"))
    try:
        started = time.monotonic()
        assert await scaler.get_metrics_and_activity("m") == MetricResult(0.0, False)
        assert time.monotonic() - started < 3  # the probe round trip, not a guessed wait
    finally:
        await scaler.aclose()


async def test_not_a_number_is_an_error(broker: ServiceInfo, topic: str) -> None:
    await publish(broker, topic, "lots")
    scaler = MQTTScaler(config(broker, topic=topic, value="1"))
    try:
        with pytest.raises(ScalerError, match=f"the last message on topic '{topic}' is not a number: b'lots'"):
            await scaler.get_metrics_and_activity("m")
        await publish(broker, topic, "3")
        assert await read_until(scaler, 3.0) == MetricResult(3.0, True)
    finally:
        await scaler.aclose()


async def test_push_wakes_within_a_second(broker: ServiceInfo, topic: str) -> None:
    scaler = MQTTScaler(config(broker, topic=topic, value="1"))
    wakes: asyncio.Queue[tuple[bool, float]] = asyncio.Queue()
    runner = asyncio.create_task(scaler.run(lambda active: wakes.put_nowait((active, time.monotonic()))))
    try:
        first, _ = await asyncio.wait_for(wakes.get(), 10)
        assert first is False
        published_at = time.monotonic()
        await publish(broker, topic, "7")
        active, woke_at = await asyncio.wait_for(wakes.get(), 10)
        assert active is True and woke_at - published_at < 1.0
        assert await scaler.get_metrics_and_activity("m") == MetricResult(7.0, True)  # same subscription
        await publish(broker, topic, "0")
        active, _ = await asyncio.wait_for(wakes.get(), 10)
        assert active is False
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await scaler.aclose()


async def test_broker_statistic(broker: ServiceInfo) -> None:
    scaler = MQTTScaler(config(broker, mode="brokerStat", stat="uptime", value="1"))
    try:
        result = await scaler.get_metrics_and_activity("m")  # Mosquitto publishes "<n> seconds", retained
        assert result.value >= 1 and result.active
    finally:
        await scaler.aclose()


async def test_unreachable_broker_fails_within_the_timeout(silent_port: int) -> None:
    for port in (closed_port(), silent_port):
        scaler = MQTTScaler(ScalerConfig(trigger_type="mqtt", trigger_index=0, timeout_seconds=1.0, metadata={
            "host": f"mqtt://127.0.0.1:{port}", "topic": "t", "value": "1"}))
        started = time.monotonic()
        with pytest.raises(ScalerError, match="mqtt trigger"):
            await scaler.get_metrics_and_activity("m")
        assert time.monotonic() - started < 4
        await scaler.aclose()
