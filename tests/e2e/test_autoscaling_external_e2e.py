"""External scalers end to end: a real ``capstan server`` and a KEDA-style external scaler gRPC
server run by the test (tests/integration/external_scaler_server.py) on its own event loop thread."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from tests.e2e.autoscaling_kit import (
    ReplicaTrajectory,
    condition_of,
    first_change_after,
    free_port,
    idle_deployment,
    scaled_object,
    status_of,
)
from tests.e2e.harness import CapstanServer, wait_for

pytestmark = pytest.mark.slow

FAST_SCALE_DOWN = {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}


class ExternalScalerServer:
    """A QueueLengthScaler gRPC server on a background thread's event loop."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None
        self.servicer: Any = None

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def start(self) -> ExternalScalerServer:
        from tests.integration.external_scaler_server import QueueLengthScaler, start

        if not self._thread.is_alive():
            self._thread.start()

        async def begin() -> None:
            self.servicer = QueueLengthScaler()
            self._server, _ = await start(self.servicer, self.port)

        self._call(begin())
        return self

    def set_length(self, length: int) -> None:
        self._call(self.servicer.set_length(length))

    def calls(self, rpc: str) -> int:
        return sum(1 for name, _ in list(self.servicer.requests) if name == rpc)

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._server.stop(None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def scaler_servers() -> Iterator[list[ExternalScalerServer]]:
    servers: list[ExternalScalerServer] = []
    yield servers
    for scaler_server in servers:
        scaler_server.stop()


def _ready(server: CapstanServer, name: str) -> bool:
    return (condition_of(server, name, "Ready") or {}).get("status") == "True"


def test_external_scaler_drives_a_deployment_from_zero_to_n_and_back(
        server: CapstanServer, scaler_servers: list[ExternalScalerServer]) -> None:
    """The ScaledObject exists before its scaler server does: a failing trigger (GetMetricSpec
    unreachable), not a broken object; once the server is up, 0 -> N -> 0 on its queue length."""
    external = ExternalScalerServer()  # its port is reserved, nothing listens yet
    scaler_servers.append(external)
    server.apply(idle_deployment("ext-worker"))
    with ReplicaTrajectory(server, "ext-worker") as trajectory:
        server.apply(scaled_object("ext", "ext-worker", [
            {"type": "external", "metadata": {"scalerAddress": external.address, "target": "2"}}],
            maxReplicaCount=5, advanced=FAST_SCALE_DOWN))
        wait_for(lambda: (condition_of(server, "ext", "Ready") or {}).get("status") == "False", timeout=60,
                 message="Ready False while the scaler server is down")
        ready = condition_of(server, "ext", "Ready")
        assert ready is not None and ready["reason"] == "TriggerError", ready
        assert f"external scaler {external.address}: GetMetricSpec: UNAVAILABLE" in ready["message"], ready
        wait_for(lambda: (status_of(server, "ext").get("health") or {}).get("s0-external", {})
                 .get("numberOfFailures", 0) >= 2, timeout=30, message="failures counted per poll")

        external.start()
        wait_for(lambda: _ready(server, "ext"), timeout=90, message="Ready once the scaler server is up")
        status = status_of(server, "ext")
        assert status["externalMetricNames"] == ["s0-queueLength"]
        assert status["health"]["s0-queueLength"] == {"numberOfFailures": 0, "status": "Happy"}
        assert external.calls("GetMetricSpec") == 1

        length = 6
        external.set_length(length)
        peak = math.ceil(length / 2)
        wait_for(lambda: trajectory.values[-1] == peak, timeout=60, message=f"{peak} replicas: {trajectory.values}")
        external.set_length(0)
        wait_for(lambda: trajectory.values[-1] == 0, timeout=120, message=f"back to 0: {trajectory.values}")
    values = trajectory.values
    assert values[:3] == [0, 1, peak], values  # activation, then the HPA rules
    assert max(values) == peak and values[-1] == 0, values
    assert values == sorted(values[:3]) + sorted(values[3:], reverse=True), values  # up, then down
    described = server.cli("describe", "scaledobject", "ext").stdout
    assert "s0-queueLength" in described


def test_external_push_activation_wakes_scaling_at_once(
        server: CapstanServer, scaler_servers: list[ExternalScalerServer]) -> None:
    pushing = ExternalScalerServer().start()
    scaler_servers.append(pushing)
    server.apply(idle_deployment("push-worker"))
    with ReplicaTrajectory(server, "push-worker") as trajectory:
        server.apply(scaled_object("ext-push", "push-worker", [
            {"type": "external-push", "metadata": {"scalerAddress": pushing.address, "target": "2"}}],
            pollingInterval=30, maxReplicaCount=5, advanced=FAST_SCALE_DOWN))
        wait_for(lambda: _ready(server, "ext-push"), timeout=60, message="Ready")
        wait_for(lambda: pushing.calls("StreamIsActive") >= 1, timeout=30, message="the StreamIsActive stream")
        time.sleep(0.5)  # the stream's first message (inactive) is answered; the next poll is ~30 s away
        reactions = []
        for _ in range(2):
            changed = time.monotonic()
            pushing.set_length(3)
            wait_for(lambda c=changed: first_change_after(trajectory, c, 1) is not None,  # type: ignore[misc]
                     timeout=20, message=f"activation by push: {trajectory.values}")
            reactions.append(first_change_after(trajectory, changed, 1))
            # Deactivation is pushed too (with cooldown 3 s and no stabilization: back to 0 soon).
            pushing.set_length(0)
            wait_for(lambda: trajectory.values[-1] == 0, timeout=60, message=f"back to 0: {trajectory.values}")
    assert all(r is not None and r < 1.0 for r in reactions), reactions
    assert trajectory.values[:2] == [0, 1], trajectory.values
