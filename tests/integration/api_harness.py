"""A real API server (uvicorn on a free port, SQLite store) in a background thread, for API tests.

Tests talk to it over HTTP (httpx or the CLI's ApiClient) exactly as clients do, and can run
store coroutines on the server's event loop (``call``) to play a controller's part.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from capstan.api.registry import default_registry
from capstan.cli.client import ApiClient
from capstan.server.api import build_app
from capstan.store.base import Store
from capstan.store.sqlite import SqliteStore

T = TypeVar("T")
TOKEN = "test-token-1234567890"


class _QuietServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # older uvicorn
        pass

    @contextmanager
    def capture_signals(self) -> Iterator[None]:  # newer uvicorn
        yield


@dataclass
class RunningApi:
    url: str
    token: str
    pods_root: Path
    loop: asyncio.AbstractEventLoop
    store: Store
    log: io.StringIO
    _clients: list[Any] = field(default_factory=list)

    def call(self, make: Callable[[Store], Awaitable[T]], timeout: float = 30) -> T:
        """Run ``make(store)`` on the server's loop and return its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(make(self.store), self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def http(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self._clients.append(client)
        return client

    def client(self) -> ApiClient:
        client = ApiClient(self.url, self.token)
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()


@contextmanager
def running_api(tmp_path: Path, *, history_limit: int = 100_000) -> Iterator[RunningApi]:
    pods_root = tmp_path / "pods"
    pods_root.mkdir(parents=True, exist_ok=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    watched_loggers = [logging.getLogger(name) for name in ("capstan", "uvicorn", "uvicorn.error", "")]
    previous_levels = [lg.level for lg in watched_loggers]
    for lg in watched_loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)

    ready: Future[RunningApi] = Future()
    stop_requested: list[Callable[[], object]] = []

    async def serve() -> None:
        store = await SqliteStore.open(tmp_path / "state.db", default_registry(), history_limit=history_limit)
        app = build_app(store, token=TOKEN, pods_root=pods_root)
        server = _QuietServer(uvicorn.Config(app, log_config=None, lifespan="off", access_log=False,
                                            timeout_graceful_shutdown=3))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.01)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        stop_requested.append(lambda: loop.call_soon_threadsafe(stopping.set))
        ready.set_result(RunningApi(f"http://127.0.0.1:{port}", TOKEN, pods_root, loop, store, log))
        await stopping.wait()
        server.should_exit = True
        await task
        await store.close()

    def thread_main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    thread = threading.Thread(target=thread_main, name="api-server", daemon=True)
    thread.start()
    api = ready.result(timeout=60)
    try:
        yield api
    finally:
        api.close_clients()
        for request_stop in stop_requested:
            request_stop()
        thread.join(timeout=30)
        sock.close()
        for lg, level in zip(watched_loggers, previous_levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
