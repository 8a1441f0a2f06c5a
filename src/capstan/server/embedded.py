"""``capstan server``: the embedded control plane in one process.

One asyncio process runs the SQLite store, the embedded controllers (Deployment, Job, garbage
collector, scheduler, node registrar, node agent: see ``capstan.controllers.embedded``) and the
HTTP API (``serve_api``). SIGTERM or SIGINT stops the API first, then the controllers (the node
agent stops the containers unless ``--keep-workloads``), then closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from capstan import __version__
from capstan.api.registry import default_registry
from capstan.controllers import metrics
from capstan.controllers.embedded import EmbeddedOptions, build_embedded
from capstan.server.api import build_app
from capstan.server.auth import load_or_create_token, write_client_config
from capstan.server.settings import ServerSettings
from capstan.store.base import Store

log = logging.getLogger("capstan.server")


@dataclass(frozen=True)
class ApiServer:
    """A running API server."""

    url: str
    port: int


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


def _client_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def serve_api(store: Store, settings: ServerSettings, token: str,
                    metrics: Callable[[], bytes] | None = None) -> AsyncIterator[ApiServer]:
    """Serve the API until the context exits; writes DATA/config.yaml once it listens."""
    sock = _bind(settings.host, settings.port)
    port = int(sock.getsockname()[1])
    app = build_app(store, token=token, pods_root=settings.pods_root, metrics=metrics)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5)
    server = _EmbeddedUvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the reason uvicorn could not start
                raise RuntimeError("the API server stopped while starting")
            await asyncio.sleep(0.02)
        url = f"http://{_client_host(settings.host)}:{port}"
        write_client_config(settings.data_dir, url, token)
        yield ApiServer(url=url, port=port)
    finally:
        app.state.closing.set()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _open_store(settings: ServerSettings) -> Store:
    from capstan.store.sqlite import SqliteStore

    store: Store = await SqliteStore.open(settings.state_path, default_registry())
    return store


async def _run(settings: ServerSettings) -> None:
    # The data directory holds the token and every Secret: only its owner may enter it.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.pods_root.mkdir(parents=True, exist_ok=True)
    token = load_or_create_token(settings.data_dir)
    metrics.BUILD_INFO.labels(version=__version__).set(1)
    stop = _stop_event()
    store = await _open_store(settings)
    try:
        manager = await build_embedded(store, EmbeddedOptions(
            data_dir=settings.data_dir, node_name=settings.node_name, cpu=settings.cpu,
            memory=settings.memory, extended_resources=settings.extended_resources,
            keep_workloads=settings.keep_workloads))
        controllers_stop = asyncio.Event()
        controllers = asyncio.create_task(manager.run(controllers_stop), name="controllers")
        try:
            async with serve_api(store, settings, token, metrics=metrics.render) as api:
                print(f"Capstan API listening on {api.url} (data: {settings.data_dir})", flush=True)
                await _until_stopped_or_failed(stop, controllers)
                print("Capstan shutting down", flush=True)
        finally:
            controllers_stop.set()
            await controllers
    finally:
        await store.close()


async def _until_stopped_or_failed(stop: asyncio.Event, controllers: asyncio.Task[None]) -> None:
    """Wait for a stop signal; if the controllers end on their own, that is a failure to report."""
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({stopped, controllers}, return_when=asyncio.FIRST_COMPLETED)
    if controllers in done:
        controllers.result()
        raise RuntimeError("the controllers stopped unexpectedly")
    stopped.cancel()


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def run_server(settings: ServerSettings) -> Any:
    """Run until SIGTERM or SIGINT; returns when everything has shut down."""
    _configure_logging()
    asyncio.run(_run(settings))
