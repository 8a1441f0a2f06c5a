"""Serving an ASGI app inside a process that owns its own signals and event loop: the API
(embedded mode), the operator's health/metrics endpoint and the admission webhook all use it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the embedding process owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves so that port 0 yields a known free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def client_host(host: str) -> str:
    """How a client on this machine reaches a server bound to ``host``."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def serve_app(app: Any, host: str, port: int, *, what: str, graceful_seconds: int = 2,
                    **uvicorn_options: Any) -> AsyncIterator[int]:
    """Serve ``app`` until the context exits; yields the bound port (``port`` 0 picks one).
    Raises the reason uvicorn could not start."""
    sock = _bind(host, port)
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=graceful_seconds, **uvicorn_options)
    server = _EmbeddedUvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError(f"the {what} stopped while starting")
            await asyncio.sleep(0.02)
        yield bound
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
