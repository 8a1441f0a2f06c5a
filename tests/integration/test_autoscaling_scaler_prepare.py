"""ScalerSet prepares scalers that need I/O before their metric specs (the external scaler's
GetMetricSpec) on the event loop, bounded, and treats a failure as a failing trigger, not a
broken set. Against the real gRPC test server (tests/integration/external_scaler_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from tests.integration.external_scaler_server import QueueLengthScaler, start
from tests.integration.scaler_support import closed_port, silent_port

from capstan.controllers.autoscaling.cache import ScalerSet
from capstan.scalers.base import MetricResult, MetricSpec, Scaler, ScalerConfig
from capstan.scalers.registry import load_builtin_scalers, register


@register("test-constant")
class ConstantScaler(Scaler):
    """Answers 7 at once: the healthy neighbour of a failing trigger."""

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(f"s{self.config.trigger_index}-constant", 5.0)]

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        return MetricResult(7.0, True)


def configs(address: str, timeout: float = 1.0) -> list[ScalerConfig]:
    return [ScalerConfig(trigger_type="external", trigger_index=0, timeout_seconds=timeout,
                         metadata={"scalerAddress": address, "target": "4"}, scalable_name="worker"),
            ScalerConfig(trigger_type="test-constant", trigger_index=1, metadata={})]


class LoopLag:
    """The longest the event loop was kept from running a 20 ms ticker."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.02
            await asyncio.sleep(0.02)
            self.worst = max(self.worst, loop.time() - due)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.fixture
async def scaler_set_cleanup() -> AsyncIterator[list[ScalerSet]]:
    sets: list[ScalerSet] = []
    yield sets
    for scaler_set in sets:
        await scaler_set.aclose()


async def test_a_silent_external_scaler_neither_blocks_the_loop_nor_breaks_the_set(
        scaler_set_cleanup: list[ScalerSet]) -> None:
    load_builtin_scalers()  # imports are not what this test times
    with silent_port() as port:
        async with LoopLag() as lag:
            started = time.monotonic()
            built = ScalerSet.build("fp", configs(f"127.0.0.1:{port}", timeout=2.0), wake=None)
            scaler_set_cleanup.append(built)
            # No GetMetricSpec on the build path: it would have waited the whole 2 s timeout.
            assert built.specs[0] is None and time.monotonic() - started < 1.0
            external, constant = await built.read_all()
            elapsed = time.monotonic() - started
        assert lag.worst < 0.5, f"the event loop stalled for {lag.worst:.2f}s"
    assert elapsed < 4.0
    assert (external.spec.name, external.result) == ("s0-external", None)
    assert external.error is not None and "did not answer GetMetricSpec within 2s" in external.error
    assert (constant.spec.name, constant.result) == ("s1-constant", MetricResult(7.0, True))


async def test_specs_arrive_once_the_server_is_up(scaler_set_cleanup: list[ScalerSet]) -> None:
    port = closed_port()
    built = ScalerSet.build("fp", configs(f"127.0.0.1:{port}"), wake=None)
    scaler_set_cleanup.append(built)
    first = await built.read_all()
    assert first[0].spec.name == "s0-external" and "GetMetricSpec: UNAVAILABLE" in (first[0].error or "")
    assert first[1].result == MetricResult(7.0, True)
    servicer = QueueLengthScaler()
    server, _ = await start(servicer, port)
    try:
        await servicer.set_length(9)
        deadline = time.monotonic() + 20
        while True:  # gRPC reconnects with its own back-off
            external, _ = await built.read_all()
            if external.error is None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert external.error is None, external.error
        assert (external.spec.name, external.spec.target, external.result) == (
            "s0-queueLength", 4.0, MetricResult(9.0, True))
        assert [name for name, _ in servicer.requests].count("GetMetricSpec") == 1
    finally:
        await server.stop(None)
