"""MQTT-coordinated worker: jobs are files in ``JOBS_DIR``; the backlog is published over MQTT.

A worker claims a job by renaming its file into ``CLAIMED_DIR`` (rename is atomic: exactly one
worker wins each file), works on it, deletes it, and then publishes the number of jobs not yet
finished (waiting + claimed) — retained, QoS 1 — to ``GAUGE_TOPIC``. That number is what the mqtt
trigger (``mode: gauge``) reads. Counting and publishing happen under one ``flock`` and each publish
waits for the broker's PUBACK, so the broker receives the counts in the order they were taken and
the retained value is never an older, larger count: the last job done publishes 0.

Environment: MQTT_HOST, MQTT_PORT, JOBS_DIR, CLAIMED_DIR, GAUGE_TOPIC, JOURNAL, HOLD.
"""

from __future__ import annotations

import asyncio
import fcntl
import os

import aiomqtt
from _worker import HOLD, POD, Journal, sigterm_event

JOBS, CLAIMED = os.environ["JOBS_DIR"], os.environ["CLAIMED_DIR"]
GAUGE_LOCK = os.open(os.path.join(os.path.dirname(CLAIMED), "gauge.lock"), os.O_RDWR | os.O_CREAT, 0o644)


def claim() -> str | None:
    for name in sorted(os.listdir(JOBS)):
        try:
            os.rename(os.path.join(JOBS, name), os.path.join(CLAIMED, name))
        except FileNotFoundError:
            continue  # another worker took it
        return name
    return None


async def publish_backlog(client: aiomqtt.Client) -> None:
    fcntl.flock(GAUGE_LOCK, fcntl.LOCK_EX)
    try:
        remaining = len(os.listdir(JOBS)) + len(os.listdir(CLAIMED))
        await client.publish(os.environ["GAUGE_TOPIC"], str(remaining), qos=1, retain=True)
    finally:
        fcntl.flock(GAUGE_LOCK, fcntl.LOCK_UN)


async def main() -> None:
    stop = sigterm_event()
    journal = Journal()
    async with aiomqtt.Client(os.environ["MQTT_HOST"], int(os.environ["MQTT_PORT"]),
                              identifier=f"e2e-worker-{POD}") as client:
        journal.started()
        while not stop.is_set():
            job = claim()
            if job is None:
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(HOLD)
            journal.processed(job)
            os.unlink(os.path.join(CLAIMED, job))
            await publish_backlog(client)
    journal.stopped()


asyncio.run(main())
