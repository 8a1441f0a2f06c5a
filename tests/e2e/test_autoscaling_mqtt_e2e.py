"""Autoscaling end to end with the mqtt trigger (``mode: gauge``): a real ``capstan server``, the real
Mosquitto, and workers that drain a job directory and publish what is left over MQTT.

What the mqtt scaler measures, honestly: a number someone publishes to a topic — MQTT itself has no
queue a third party could count (see docs/scalers/mqtt.md). So this test gives the backlog an owner
that knows it:

* the jobs are files in a directory; the test writes N = 20 of them and publishes "20", retained
  (QoS 1), to the test's own gauge topic, as a producer would;
* a worker claims a job by renaming its file (atomic: one winner per job), works 0.5 s, deletes it,
  and publishes the number of jobs not yet finished (waiting + in progress), retained, under a
  file lock and waiting for each PUBACK, so the last number on the topic is the current one and the
  last job done publishes 0;
* the trigger (value 5) reads that number and is woken by every new one (push).

The activation pass sees 20 (0 -> 1). The next pass — woken by the first worker's first "19", or
the 1 s poll, whichever comes first — sees at least 18, so the HPA wants ceil(20 / 5) = 4, which
the scale-up limit from 1 replica, max(2 x 1, 4), allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import aiomqtt
import pytest

from tests.e2e.broker_kit import broker_scaled_object, hpa_peak, run_scaling, script_deployment
from tests.e2e.harness import CapstanServer
from tests.services import ServiceInfo

pytestmark = pytest.mark.slow

JOBS, VALUE, MAXIMUM = 20, 5, 10


async def _publish_retained(service: ServiceInfo, topic: str, payload: str) -> None:
    async with aiomqtt.Client(service.host, service.port, identifier=f"e2e-test-{uuid.uuid4().hex[:8]}") as client:
        await client.publish(topic, payload, qos=1, retain=True)


async def _retained(service: ServiceInfo, topic: str) -> str | None:
    """The retained payload of ``topic`` (None when there is none)."""
    async with aiomqtt.Client(service.host, service.port, identifier=f"e2e-test-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                async for message in client.messages:
                    payload = message.payload
                    return payload.decode() if isinstance(payload, bytes | bytearray) else str(payload)
    return None


def test_mqtt_backlog_gauge_scales_workers_zero_to_four_and_back(server: CapstanServer, tmp_path: Path,
                                                                 mosquitto_service: ServiceInfo) -> None:
    run = uuid.uuid4().hex[:8]
    gauge = f"e2e/{run}/backlog"
    jobs_dir, claimed_dir, journal = tmp_path / "jobs", tmp_path / "claimed", tmp_path / "journal"
    jobs_dir.mkdir()
    claimed_dir.mkdir()
    jobs = [f"job-{i:02d}" for i in range(JOBS)]
    try:
        server.apply(script_deployment("worker", "mqtt_worker.py", {
            "MQTT_HOST": mosquitto_service.host, "MQTT_PORT": str(mosquitto_service.port),
            "JOBS_DIR": str(jobs_dir), "CLAIMED_DIR": str(claimed_dir), "GAUGE_TOPIC": gauge,
            "JOURNAL": str(journal), "HOLD": "0.5"}))
        trigger = {"type": "mqtt", "metadata": {
            "host": f"mqtt://{mosquitto_service.host}:{mosquitto_service.port}", "mode": "gauge",
            "topic": gauge, "value": str(VALUE)}}

        def publish() -> None:
            for job in jobs:
                (jobs_dir / job).write_text(job)
            asyncio.run(_publish_retained(mosquitto_service, gauge, str(len(jobs))))

        def drained() -> bool:
            left = list(jobs_dir.iterdir()) + list(claimed_dir.iterdir())
            return not left and asyncio.run(_retained(mosquitto_service, gauge)) == "0"

        result = run_scaling(
            server, "worker", broker_scaled_object("worker", trigger, maximum=MAXIMUM, polling=1),
            publish=publish, drained=drained, peak=hpa_peak(JOBS, VALUE, MAXIMUM), journal=journal,
            expected=jobs)
        print(result.report())
    finally:
        asyncio.run(_publish_retained(mosquitto_service, gauge, ""))  # clear the retained value
