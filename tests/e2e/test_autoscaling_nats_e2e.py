"""Autoscaling end to end on NATS JetStream: a real ``capstan server``, the nats-jetstream scaler
(lag from the monitoring endpoint's /jsz, push wake-ups on publishes and acks), and workers that pull
from a durable pull consumer and acknowledge after the work.

A stream and a durable consumer per test; N = 20 messages, lagThreshold 5. The lag is the
consumer's num_pending + num_ack_pending, so a message in progress still counts. Every publish
and every ack wakes the ScaledObject: during the publish burst a pass may see part of the 20
messages (the rise may pass through 2 or 3), but the worker's first ack comes after the burst,
with a lag of at least 19, so the peak is exactly ceil(20 / 5) = 4 (from 1 replica the legacy
scale-up limit max(2 x 1, 4) = 4 allows it).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from tests.e2e.broker_kit import broker_scaled_object, hpa_peak, run_scaling, script_deployment
from tests.e2e.harness import CapstanServer
from tests.services import ServiceInfo

pytestmark = pytest.mark.slow

MESSAGES, LAG_THRESHOLD, MAXIMUM = 20, 5, 10
CONSUMER = "workers"


async def _create(url: str, stream: str, subject: str) -> None:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        await js.add_consumer(stream, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                                                     ack_wait=30))
    finally:
        await client.close()


async def _publish(url: str, subject: str, bodies: list[str]) -> None:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for body in bodies:
            await js.publish(subject, body.encode())
    finally:
        await client.close()


async def _delete(url: str, stream: str) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


def _consumer_state(monitor_url: str, stream: str) -> dict[str, Any]:
    """The consumer's counters from /jsz, as the scaler reads them."""
    answer = httpx.get(f"{monitor_url}/jsz", params={"acc": "$G", "consumers": "true"}, timeout=10).json()
    for account in answer.get("account_details") or []:
        for found in account.get("stream_detail") or []:
            if found["name"] == stream:
                for consumer in found.get("consumer_detail") or []:
                    if consumer["name"] == CONSUMER:
                        return dict(consumer)
    raise AssertionError(f"consumer {stream}/{CONSUMER} not in /jsz: {json.dumps(answer)[:500]}")


def test_nats_jetstream_consumer_lag_scales_workers_zero_to_four_and_back(
        server: CapstanServer, tmp_path: Path, nats_service: ServiceInfo) -> None:
    url, monitor_url = nats_service.url, nats_service.extra["monitor_url"]
    suffix = uuid.uuid4().hex[:8]
    stream, subject = f"E2E_{suffix}", f"e2e.{suffix}.jobs"
    journal = tmp_path / "journal"
    asyncio.run(_create(url, stream, subject))
    try:
        server.apply(script_deployment("worker", "nats_worker.py", {
            "NATS_URL": url, "STREAM": stream, "CONSUMER": CONSUMER, "JOURNAL": str(journal), "HOLD": "0.5"}))
        trigger = {"type": "nats-jetstream", "metadata": {
            "natsServerMonitoringEndpoint": monitor_url.removeprefix("http://"), "natsServerUrl": url,
            "account": "$G", "stream": stream, "consumer": CONSUMER, "lagThreshold": str(LAG_THRESHOLD)}}
        bodies = [f"job-{i}" for i in range(MESSAGES)]

        def drained() -> bool:
            state = _consumer_state(monitor_url, stream)
            return bool(state["num_pending"] == 0 and state["num_ack_pending"] == 0)

        run = run_scaling(
            server, "worker", broker_scaled_object("worker", trigger, maximum=MAXIMUM, polling=2),
            publish=lambda: asyncio.run(_publish(url, subject, bodies)), drained=drained,
            peak=hpa_peak(MESSAGES, LAG_THRESHOLD, MAXIMUM), journal=journal, expected=bodies)
        print(run.report())
        state = _consumer_state(monitor_url, stream)
        assert state["delivered"]["consumer_seq"] == MESSAGES  # each message delivered once: no redelivery
    finally:
        asyncio.run(_delete(url, stream))
