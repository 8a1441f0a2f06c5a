"""external / external-push against a real gRPC external scaler server (tests/integration/external_scaler_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from tests.integration.external_scaler_server import QueueLengthScaler, start
from tests.integration.scaler_support import closed_port, silent_port_fixture  # noqa: F401 (a fixture)

from capstan.scalers._brokers import Backoff
from capstan.scalers.base import ScalerConfig, ScalerError
from capstan.scalers.external import ExternalPushScaler, ExternalScaler


def config(address: str, trigger_type: str = "external", timeout: float = 3.0, **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type=trigger_type, trigger_index=0, metadata={"scalerAddress": address, **metadata},
                        scalable_name="worker-app", namespace="team-a", timeout_seconds=timeout)


@pytest.fixture
async def server() -> AsyncIterator[tuple[QueueLengthScaler, str]]:
    servicer = QueueLengthScaler()
    grpc_server, port = await start(servicer)
    yield servicer, f"127.0.0.1:{port}"
    await grpc_server.stop(None)


async def test_metric_spec_metrics_and_activity(server: tuple[QueueLengthScaler, str]) -> None:
    servicer, address = server
    scaler = ExternalScaler(config(address, target="4", queue="jobs"))
    try:
        [spec] = await scaler.load_metric_specs()
        assert (spec.name, spec.target) == ("s0-queueLength", 4.0)

        idle = await scaler.get_metrics_and_activity(spec.name)
        assert (idle.value, idle.active) == (0.0, False)
        await servicer.set_length(12)
        busy = await scaler.get_metrics_and_activity(spec.name)
        assert (busy.value, busy.active) == (12.0, True)
    finally:
        await scaler.aclose()

    calls = [name for name, _ in servicer.requests]
    assert calls == ["GetMetricSpec", "GetMetrics", "IsActive", "GetMetrics", "IsActive"]  # KEDA's order per poll
    metrics_request = servicer.requests[1][1]
    assert metrics_request.metricName == "queueLength"  # the s0- prefix is stripped
    ref = metrics_request.scaledObjectRef
    assert (ref.name, ref.namespace) == ("worker-app", "team-a")
    assert dict(ref.scalerMetadata) == {"scalerAddress": address, "target": "4", "queue": "jobs"}


async def test_synchronous_metric_specs(server: tuple[QueueLengthScaler, str]) -> None:
    _, address = server
    scaler = ExternalScaler(config(address))
    # metric_specs() blocks; the server shares this event loop, so call it from a thread.
    [spec] = await asyncio.to_thread(scaler.metric_specs)
    assert (spec.name, spec.target) == ("s0-queueLength", 5.0)
    assert scaler.metric_specs() == [spec]  # cached: no second call
    await scaler.aclose()


async def test_push_wakes_within_a_second(server: tuple[QueueLengthScaler, str]) -> None:
    servicer, address = server
    scaler = ExternalPushScaler(config(address, "external-push"))
    wakes: asyncio.Queue[tuple[bool, float]] = asyncio.Queue()
    runner = asyncio.create_task(scaler.run(lambda active: wakes.put_nowait((active, time.monotonic()))))
    try:
        first, _ = await asyncio.wait_for(wakes.get(), 10)
        assert first is False  # the server reports the current state on open
        changed_at = time.monotonic()
        await servicer.set_length(3)
        active, woke_at = await asyncio.wait_for(wakes.get(), 10)
        assert active is True and woke_at - changed_at < 1.0
        await servicer.set_length(0)
        active, _ = await asyncio.wait_for(wakes.get(), 10)
        assert active is False
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await scaler.aclose()


async def test_push_reconnects_after_the_server_restarts() -> None:
    servicer = QueueLengthScaler()
    grpc_server, port = await start(servicer)
    scaler = ExternalPushScaler(config(f"127.0.0.1:{port}", "external-push"), backoff=Backoff(0.1, 0.5))
    wakes: asyncio.Queue[bool] = asyncio.Queue()
    runner = asyncio.create_task(scaler.run(wakes.put_nowait))
    try:
        assert await asyncio.wait_for(wakes.get(), 10) is False
        await grpc_server.stop(None)
        restarted = QueueLengthScaler()
        await restarted.set_length(7)
        grpc_server, _ = await start(restarted, port)
        assert await asyncio.wait_for(wakes.get(), 20) is True  # the new server's state, after reconnecting
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await scaler.aclose()
        await grpc_server.stop(None)


async def test_unknown_metric_is_a_scaler_error(server: tuple[QueueLengthScaler, str]) -> None:
    _, address = server
    scaler = ExternalScaler(config(address))
    await scaler.load_metric_specs()
    with pytest.raises(ScalerError, match="NOT_FOUND: no metric 'other'"):
        await scaler.get_metrics_and_activity("s0-other")
    await scaler.aclose()


async def test_closed_port_fails_within_the_timeout() -> None:
    scaler = ExternalScaler(config(f"127.0.0.1:{closed_port()}", timeout=1.0))
    started = time.monotonic()
    with pytest.raises(ScalerError, match="external trigger"):
        await scaler.load_metric_specs()
    with pytest.raises(ScalerError, match="external trigger"):
        await scaler.get_metrics_and_activity("s0-queueLength")
    assert time.monotonic() - started < 5
    await scaler.aclose()


async def test_silent_server_fails_within_the_timeout(silent_port: int) -> None:
    scaler = ExternalScaler(config(f"127.0.0.1:{silent_port}", timeout=1.0))
    started = time.monotonic()
    with pytest.raises(ScalerError, match=r"DEADLINE_EXCEEDED|did not answer"):
        await scaler.load_metric_specs()
    with pytest.raises(ScalerError):
        await asyncio.to_thread(scaler.metric_specs)
    assert time.monotonic() - started < 6
    await scaler.aclose()
