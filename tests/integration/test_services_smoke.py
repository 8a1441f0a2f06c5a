"""One real round trip per test service, with the client library the matching scaler uses.

These say the private services from hack/services work for what the scalers do (queue lengths, lags, pending
messages, query results), so a failing scaler test can be blamed on the scaler, not on the service.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TypeVar

import aio_pika
import aiomqtt
import aiomysql
import httpx
import nats
import psycopg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tests.services import ServiceInfo, service

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(check: Callable[[], Awaitable[T]], *, within: float = 30.0) -> T:
    """Call `check` until it returns something truthy, or return its last value after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


def test_service_info_shapes() -> None:
    info = service("rabbitmq")
    assert info.url == f"amqp://capstan:capstan@127.0.0.1:{info.port}/"
    assert info.extra["management_url"].startswith("http://127.0.0.1:")
    assert service("postgres").url.endswith(f"127.0.0.1:{service('postgres').port}/capstan")
    with pytest.raises(KeyError, match="unknown service 'zookeeper'"):
        service("zookeeper")


async def test_redis_list_length(redis_service: ServiceInfo) -> None:
    client = aioredis.Redis.from_url(redis_service.url)
    key = unique("smoke-list")
    try:
        assert await client.ping() is True
        await client.rpush(key, "a", "b", "c")
        assert await client.llen(key) == 3
    finally:
        await client.delete(key)
        await client.aclose()


async def test_rabbitmq_queue_depth_over_amqp_and_management_api(rabbitmq_service: ServiceInfo) -> None:
    queue_name = unique("smoke-queue")
    connection = await aio_pika.connect_robust(rabbitmq_service.url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, auto_delete=False)
        for i in range(3):
            await channel.default_exchange.publish(aio_pika.Message(body=f"m{i}".encode()), routing_key=queue_name)
        # A passive declare answers with the queue depth (on a fresh channel: aio-pika's robust channel
        # returns the queue it already declared, with the depth of that first declaration).
        checker = await connection.channel()
        passive = await checker.declare_queue(queue_name, passive=True)
        assert passive.declaration_result.message_count == 3

        auth = (rabbitmq_service.user, rabbitmq_service.password)
        url = f"{rabbitmq_service.extra['management_url']}/api/queues/%2F/{queue_name}"
        async with httpx.AsyncClient(auth=auth, timeout=10) as http:

            async def depth() -> int:
                response = await http.get(url)
                return int(response.json().get("messages", 0)) if response.status_code == 200 else 0

            assert await eventually(depth) == 3
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


async def test_postgres_query(postgres_service: ServiceInfo) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_service.url, autocommit=True) as conn:
        table = unique("smoke").replace("-", "_")
        await conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, state text)")
        try:
            await conn.execute(f"INSERT INTO {table} (state) VALUES ('pending'), ('pending'), ('done')")
            cursor = await conn.execute(f"SELECT count(*) FROM {table} WHERE state = 'pending'")
            assert await cursor.fetchone() == (2,)
        finally:
            await conn.execute(f"DROP TABLE {table}")


async def test_mariadb_query(mariadb_service: ServiceInfo) -> None:
    conn = await aiomysql.connect(
        host=mariadb_service.host,
        port=mariadb_service.port,
        user=mariadb_service.user,
        password=mariadb_service.password,
        db=mariadb_service.extra["database"],
        autocommit=True,
    )
    table = unique("smoke").replace("-", "_")
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, state VARCHAR(16))")
            await cursor.execute(f"INSERT INTO {table} (state) VALUES ('pending'), ('pending'), ('done')")
            await cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE state = %s", ("pending",))
            assert await cursor.fetchone() == (2,)
            await cursor.execute(f"DROP TABLE {table}")
    finally:
        conn.close()


async def test_nats_jetstream_pending_messages(nats_service: ServiceInfo) -> None:
    client = await nats.connect(nats_service.url)
    stream, subject = unique("SMOKE").upper(), unique("smoke.subject")
    try:
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        await js.add_consumer(stream, durable_name="worker", ack_policy="explicit")
        for i in range(4):
            await js.publish(subject, f"m{i}".encode())
        info = await js.consumer_info(stream, "worker")
        assert info.num_pending == 4

        # The NATS scaler reads the same number from the monitoring endpoint.
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{nats_service.extra['monitor_url']}/jsz", params={"consumers": "true"})
        assert response.status_code == 200
        accounts = response.json()["account_details"]
        consumers = [c for a in accounts for s in a.get("stream_detail", []) if s["name"] == stream
                     for c in s.get("consumer_detail", [])]  # fmt: skip
        assert [(c["name"], c["num_pending"]) for c in consumers] == [("worker", 4)]
        await js.delete_stream(stream)
    finally:
        await client.close()


async def test_mosquitto_publish_subscribe(mosquitto_service: ServiceInfo) -> None:
    topic = f"capstan/smoke/{uuid.uuid4().hex}"
    async with aiomqtt.Client(mosquitto_service.host, port=mosquitto_service.port) as subscriber:
        await subscriber.subscribe(topic, qos=1)
        async with aiomqtt.Client(mosquitto_service.host, port=mosquitto_service.port) as publisher:
            await publisher.publish(topic, payload=b"42", qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(subscriber.messages))
    assert (str(message.topic), message.payload) == (topic, b"42")


@pytest.fixture
def exporter() -> Iterator[tuple[str, str]]:
    """A one-metric HTTP exporter on a free loopback port: (address, run label)."""
    run = uuid.uuid4().hex
    body = f'# TYPE capstan_smoke_queue_length gauge\ncapstan_smoke_queue_length{{run="{run}"}} 42\n'.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", run
    finally:
        server.shutdown()
        server.server_close()


async def test_prometheus_scrapes_a_target_listed_in_file_sd(
    prometheus_service: ServiceInfo, exporter: tuple[str, str]
) -> None:
    address, run = exporter
    targets = Path(prometheus_service.extra["file_sd_dir"]) / f"{unique('smoke')}.json"
    targets.write_text(json.dumps([{"targets": [address], "labels": {"suite": "smoke"}}]))
    try:
        async with httpx.AsyncClient(base_url=prometheus_service.url, timeout=10) as http:

            async def value() -> list[object]:
                query = f'capstan_smoke_queue_length{{run="{run}"}}'
                response = await http.get("/api/v1/query", params={"query": query})
                return [r["value"][1] for r in response.json()["data"]["result"]]

            assert await eventually(value, within=60) == ["42"]
    finally:
        targets.unlink()


async def test_kafka_produce_and_consume_on_an_auto_created_topic(kafka_service: ServiceInfo) -> None:
    topic = unique("smoke-topic")
    bootstrap = kafka_service.extra["bootstrap_servers"]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"m{i}".encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=unique("smoke-group"), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        received: list[bytes | None] = []
        async with asyncio.timeout(60):
            while len(received) < 3:
                message = await consumer.getone()
                received.append(message.value)
        assert received == [b"m0", b"m1", b"m2"]
        end = await consumer.end_offsets([TopicPartition(topic, 0)])
        assert end == {TopicPartition(topic, 0): 3}
    finally:
        await consumer.stop()
