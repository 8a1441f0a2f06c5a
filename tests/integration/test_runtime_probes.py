"""Probes against real sockets and commands, and the threshold counter."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

from capstan.runtime.probes import ProbeCounter, ProbeTiming, run_probe


@pytest.fixture
async def http_server() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        status = "200 OK" if " /healthz " in request else "503 Service Unavailable"
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    await server.wait_closed()


async def test_http_get_succeeds_for_2xx_and_resolves_named_ports(http_server: int) -> None:
    ok = await run_probe({"httpGet": {"path": "/healthz", "port": "http"}}, named_ports={"http": http_server})
    assert ok.success, ok.message
    bad = await run_probe({"httpGet": {"path": "/broken", "port": http_server}})
    assert not bad.success
    assert bad.message == "HTTP probe failed with statuscode: 503"
    unknown = await run_probe({"httpGet": {"path": "/", "port": "web"}})
    assert (unknown.success, unknown.message) == (False, "the container declares no port named 'web'")


async def test_tcp_socket_probe(http_server: int) -> None:
    assert (await run_probe({"tcpSocket": {"port": http_server}})).success
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    closed_port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    refused = await run_probe({"tcpSocket": {"port": closed_port}})
    assert not refused.success
    assert refused.message.startswith(f"dial tcp 127.0.0.1:{closed_port}")


async def test_exec_probe_exit_status_and_timeout() -> None:
    assert (await run_probe({"exec": {"command": [sys.executable, "-c", "pass"]}})).success
    failed = await run_probe({"exec": {"command": [sys.executable, "-c", "print('nope'); exit(2)"]}})
    assert (failed.success, failed.message) == (False, "command exited with 2: nope")
    slow = await run_probe({"exec": {"command": [sys.executable, "-c", "import time; time.sleep(30)"]},
                            "timeoutSeconds": 1})
    assert (slow.success, slow.message) == (False, "command timed out after 1s")


def test_counter_flips_only_after_consecutive_thresholds() -> None:
    counter = ProbeCounter(ProbeTiming(success_threshold=2, failure_threshold=3))
    assert counter.verdict is None
    assert [counter.record(True), counter.record(True)] == [False, True]
    assert counter.verdict is True
    assert [counter.record(False), counter.record(False), counter.record(True)] == [False, False, False]
    assert [counter.record(False), counter.record(False), counter.record(False)] == [False, False, True]
    assert counter.verdict is False


def test_timing_defaults_like_kubernetes() -> None:
    assert ProbeTiming.of({}) == ProbeTiming(0, 10, 1, 1, 3)
