"""Helpers shared by the message-broker scalers (rabbitmq, kafka, nats-jetstream, mqtt, external).

- ``tls_context``: an ``ssl.SSLContext`` from PEM strings, as KEDA's ``ca``/``cert``/``key``
  TriggerAuthentication parameters carry them;
- ``Rechecker``: turns a burst of "the source changed" signals into one read at a time and a
  ``wake(active)`` per read, so a busy topic cannot flood the controller;
- ``Backoff``: the reconnect delays of push loops;
- ``follow_with_rechecks``: the push loop of a scaler that follows its source and rechecks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable

from capstan.scalers.base import ScalerError, WakeCallback


def tls_context(*, ca: str | None = None, cert: str | None = None, key: str | None = None,
                key_password: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A client TLS context. ``ca``, ``cert`` and ``key`` are PEM text (not file names)."""
    context = ssl.create_default_context(cadata=ca) if ca else ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert and key:
        # The ssl module loads a certificate chain only from files: write them privately, briefly.
        with tempfile.TemporaryDirectory(prefix="capstan-tls-") as folder:
            cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
            for path, text in ((cert_path, cert), (key_path, key)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
                    handle.write(text)
            context.load_cert_chain(cert_path, key_path, password=key_password or None)
    return context


class Rechecker:
    """Coalesces change signals: ``poke()`` from any callback; ``run()`` reads the source once per
    burst and calls ``wake`` with the result. Read failures are skipped: the poll loop reports them."""

    def __init__(self, read_active: Callable[[], Awaitable[bool]], wake: WakeCallback) -> None:
        self._read_active = read_active
        self._wake = wake
        self._dirty = asyncio.Event()

    def poke(self) -> None:
        self._dirty.set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                active = await self._read_active()
            except ScalerError:
                continue
            self._wake(active)


class Backoff:
    """Exponential reconnect delays (KEDA's streams: from 2 s, doubling, at most 60 s)."""

    def __init__(self, first: float = 2.0, limit: float = 60.0) -> None:
        self.first = first
        self.limit = limit
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    async def sleep(self) -> None:
        delay = self._next
        self._next = min(self._next * 2, self.limit)
        await asyncio.sleep(delay)


async def follow_with_rechecks(read_active: Callable[[], Awaitable[bool]], wake: WakeCallback,
                               follow: Callable[[Rechecker, Backoff], Awaitable[None]],
                               transient: tuple[type[BaseException], ...]) -> None:
    """A push loop until cancelled: ``follow`` watches the source and pokes the Rechecker, which
    reads ``read_active`` and wakes. When ``follow`` returns or raises one of ``transient`` (the
    source went away), it starts again after the Backoff (which ``follow`` resets once connected)."""
    rechecker = Rechecker(read_active, wake)
    checker = asyncio.create_task(rechecker.run())
    backoff = Backoff()
    try:
        while True:
            with contextlib.suppress(*transient):
                await follow(rechecker, backoff)
            await backoff.sleep()
    finally:
        checker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checker
