"""Helpers for the scaler integration tests: unreachable endpoints, wake recorders, a tiny HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis.asyncio as aioredis
from tests.services import ServiceInfo, service

from capstan.scalers.base import PushScaler


def unique(prefix: str = "capstan") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A listening socket that accepts connections (in the kernel backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.fixture(name="silent_port")
def silent_port_fixture() -> Iterator[int]:
    """``silent_port()`` for the whole test, as the fixture ``silent_port``."""
    with silent_port() as port:
        yield port


def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


@dataclass
class WakeRecorder:
    """The ``wake`` callback of a push scaler: remembers each call and when it came."""

    calls: list[tuple[float, bool]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, active: bool) -> None:
        self.calls.append((time.monotonic(), active))
        self._changed.set()

    async def wait_for(self, active: bool, after: float, deadline: float = 10.0) -> float:
        """Seconds from ``after`` (a monotonic time) to the first wake(active) at or after it."""
        end = time.monotonic() + deadline
        while True:
            for moment, value in self.calls:
                if moment >= after and value is active:
                    return moment - after
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no wake({active}) within {deadline}s; calls: {self.calls}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


@contextlib.asynccontextmanager
async def pushing(scaler: PushScaler) -> AsyncIterator[WakeRecorder]:
    """Run the scaler's push loop for the block; it must end quietly when cancelled."""
    recorder = WakeRecorder()
    task = asyncio.create_task(scaler.run(recorder))
    try:
        yield recorder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), "the push loop ended by itself"


Response = tuple[int, str, bytes]
Handler = Callable[[str, dict[str, str]], Response]


@contextlib.contextmanager
def http_server(handler: Handler) -> Iterator[int]:
    """Serve ``handler(path_with_query, headers) -> (status, content_type, body)`` on a loopback port."""

    class Handle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = handler(self.path, {k: v for k, v in self.headers.items()})
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def timed(awaitable: Awaitable[Any]) -> tuple[float, Exception | None]:
    """How long an awaitable took and what it raised (None when it returned)."""
    start = time.monotonic()
    try:
        await awaitable
    except Exception as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


@pytest.fixture(name="redis_info", scope="module")
def redis_info_fixture() -> ServiceInfo:
    """The shared Redis of tests/services.py, as the fixture ``redis_info``."""
    return service("redis")


@pytest.fixture(name="client")
async def redis_client_fixture(redis_info: ServiceInfo) -> AsyncIterator[aioredis.Redis]:
    """A client of the shared Redis that decodes replies, as the fixture ``client``."""
    connection = aioredis.Redis(host=redis_info.host, port=redis_info.port, decode_responses=True)
    yield connection
    await connection.aclose()


async def wait_subscribed(client: Any, channel: str, deadline: float = 10.0) -> None:
    """Until someone (the scaler's push loop) subscribes to a Redis pub/sub channel."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        [(_, count)] = await client.pubsub_numsub(channel)
        if count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nobody subscribed to {channel} within {deadline}s")
