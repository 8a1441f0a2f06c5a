"""``redis``: the length of a list (or set, sorted set, hash) in Redis (KEDA's ``redis_scaler.go``).

Connection (shared with ``redis-streams``): ``address`` (``host:port``; ``addresses`` takes the
first) or ``host`` + ``port`` (6379 when only ``host`` is given); ``username``/``password``
(metadata, ``...FromEnv`` or TriggerAuthentication); ``databaseIndex``; TLS with
``enableTLS: "true"`` in metadata or ``tls: enable`` in the TriggerAuthentication (not both),
``unsafeSsl`` and the authentication's ``ca``, ``cert``, ``key``, ``keyPassword`` (PEM text).

Value: ``LLEN``, ``SCARD``, ``ZCARD`` or ``HLEN`` chosen by the key's type in one server-side
script, as KEDA does; a missing key is an empty list (0); any other type is an error. Target
``listLength`` (default 5); active when ``length > activationListLength`` (default 0).

Push: the scaler follows the key through Redis keyspace notifications
(``__keyspace@<db>__:<key>``). When ``notify-keyspace-events`` lacks the needed classes, the
scaler adds them with ``CONFIG SET`` (turn that off with ``keyspaceNotifications: "false"``;
managed Redis often refuses CONFIG). Without notifications it falls back to a blocking watch:
while the list is empty it waits in ``BLMOVE key key LEFT LEFT`` (which hands an arriving
element back to the head of the same list at once, so the list's content and order do not
change), and polls every second otherwise.

Connections: every redis and redis-streams scaler of the process that talks to the same server
(address, database, credentials, TLS) shares one ``RedisHub``: at most ``POOL_CONNECTIONS``
connections for reads and one pub/sub connection carrying every followed key's notifications,
so 10,000 triggers on one Redis hold 5 connections, not 30,000. The blocking fallback needs a
connection per waiting follower; at most ``BLOCKING_WATCHERS`` per server get one, the others
poll through the shared pool. ``aclose`` ends the push follower and gives the hub back within
a few seconds whatever Redis does (the last user closes the hub).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import BlockingConnectionPool, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from capstan.scalers import _metadata as md
from capstan.scalers.base import (
    MetricResult,
    MetricSpec,
    PushScaler,
    ScalerConfig,
    ScalerConfigError,
    ScalerError,
    WakeCallback,
)
from capstan.scalers.registry import register

log = logging.getLogger(__name__)

DEFAULT_PORT = 6379
RESYNC_SECONDS = 30.0
"""A push loop re-reads the value at least this often, even without notifications."""
MIN_READ_SPACING = 0.2
"""A burst of notifications costs at most one read per this many seconds (the first is at once)."""
FALLBACK_POLL_SECONDS = 1.0
BLOCK_SECONDS = 5

LENGTH_SCRIPT = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'list' or kind == 'none' then return redis.call('LLEN', KEYS[1]) end
if kind == 'set' then return redis.call('SCARD', KEYS[1]) end
if kind == 'zset' then return redis.call('ZCARD', KEYS[1]) end
if kind == 'hash' then return redis.call('HLEN', KEYS[1]) end
return redis.error_reply('ERR unsupported key type: ' .. kind)
"""


def keda_normalize(text: str) -> str:
    """KEDA's NormalizeString for metric names."""
    for char in "/.:%()":
        text = text.replace(char, "-")
    return text


# ---- connection ---------------------------------------------------------------------------------

SECRET_SOURCES = md.Source(metadata=True, auth=True, env=True)


@dataclass(frozen=True)
class RedisConnection:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    database: int = 0
    tls: bool = False
    unsafe_ssl: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _first(config: ScalerConfig, *names: str) -> str | None:
    for name in names:
        value = md.raw(config, name, SECRET_SOURCES)
        if value:
            return value.split(",")[0].strip()
    return None


def _split_address(config: ScalerConfig, address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ScalerConfigError(f"{config.label}: metadata.address: {address!r} must be host:port")
    return host.strip("[]"), _port(config, "address", port)


def _port(config: ScalerConfig, name: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ScalerConfigError(f"{config.label}: metadata.{name}: {text!r} is not a port number")
    return int(text)


def _tls(config: ScalerConfig) -> bool:
    in_metadata = config.metadata.get("enableTLS")
    in_auth = config.auth_params.get("tls")
    if in_metadata and in_auth:
        raise ScalerConfigError(f"{config.label}: set TLS either with metadata.enableTLS or with the "
                                "TriggerAuthentication's tls, not both")
    if in_auth:
        if in_auth not in ("enable", "disable"):
            raise ScalerConfigError(f"{config.label}: TriggerAuthentication tls: {in_auth!r} is not enable or disable")
        return in_auth == "enable"
    return md.boolean(config, "enableTLS", False)


def parse_connection(config: ScalerConfig) -> RedisConnection:
    """Where and how to connect, in KEDA's parameter names; ScalerConfigError names the field."""
    address = _first(config, "address", "addresses")
    if address:
        host, port = _split_address(config, address)
    else:
        host_text = _first(config, "host", "hosts")
        if not host_text:
            raise ScalerConfigError(f"{config.label}: metadata.address (host:port) or metadata.host is required")
        port_text = _first(config, "port", "ports")
        host, port = host_text, _port(config, "port", port_text) if port_text else DEFAULT_PORT
    database = md.integer(config, "databaseIndex", 0)
    if database < 0:
        raise ScalerConfigError(f"{config.label}: metadata.databaseIndex must not be negative")
    auth = config.auth_params
    return RedisConnection(
        host=host, port=port,
        username=md.raw(config, "username", SECRET_SOURCES),
        password=md.raw(config, "password", SECRET_SOURCES),
        database=database, tls=_tls(config), unsafe_ssl=md.boolean(config, "unsafeSsl", False),
        ca=auth.get("ca") or None, cert=auth.get("cert") or auth.get("Cert") or None,
        key=auth.get("key") or None, key_password=auth.get("keyPassword") or None,
    )


# ---- connections shared by every scaler of the process ------------------------------------------

POOL_CONNECTIONS = 4
"""Connections for reads per Redis server (address, database, credentials, TLS) per process, shared by
every redis and redis-streams scaler; a read waits for a free one (within its timeout)."""
BLOCKING_WATCHERS = 16
"""Without keyspace notifications, at most this many push followers per server block on a connection
of their own (BLMOVE / XREAD BLOCK); the others poll through the shared pool."""
FALLBACK_READS_PER_SECOND = 200.0
"""Polling followers of one server together read at most this often (each at least every second)."""
CLOSE_SECONDS = 2.0
"""Closing a scaler or a hub never waits longer than this for Redis."""


async def quietly(call: Awaitable[Any], seconds: float = CLOSE_SECONDS) -> None:
    """Await a clean-up step, bounded, ignoring its failure: closing must never hang or raise."""
    try:
        async with asyncio.timeout(seconds):
            await call
    except (Exception, TimeoutError):
        log.debug("clean-up step failed or timed out", exc_info=True)


class RedisHub:
    """What every scaler of this process shares for one Redis server and database and one set of
    credentials: a pool of at most ``POOL_CONNECTIONS`` connections for reads, and one pub/sub
    connection that carries the keyspace notifications of every followed key (one SUBSCRIBE per
    key, so a busy unrelated key costs nothing). Made by ``acquire_hub``, reference counted, closed
    by ``release_hub`` when its last scaler goes."""

    def __init__(self, connection: RedisConnection, timeout: float) -> None:
        self.connection = connection
        self.timeout = timeout
        self.users = 0
        self._cert_dir: str | None = None
        self.client = self._pooled(POOL_CONNECTIONS)
        self._notify_client = self._pooled(1)
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        self._pubsub: PubSub | None = None
        self._subscribed: set[str] = set()
        self._live = False
        """Subscribed to every watched channel on a working connection."""
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._events: dict[tuple[str, bool], bool] = {}
        """(classes, allow CONFIG SET) -> whether keyspace notifications for them are on."""
        self.blocking_slots = BLOCKING_WATCHERS
        self.pollers = 0

    # -- clients --

    def _tls_options(self) -> dict[str, Any]:
        conn = self.connection
        options: dict[str, Any] = {"connection_class": SSLConnection, "ssl_ca_data": conn.ca,
                                   "ssl_password": conn.key_password}
        if conn.unsafe_ssl:
            options.update(ssl_cert_reqs="none", ssl_check_hostname=False)
        if conn.cert and conn.key:
            # redis-py reads client certificates from files on each connect; keep them for the hub's life.
            if self._cert_dir is None:
                self._cert_dir = tempfile.mkdtemp(prefix="capstan-redis-")
                for name, text in (("cert.pem", conn.cert), ("key.pem", conn.key)):
                    path = Path(self._cert_dir, name)
                    path.touch(mode=0o600)
                    path.write_text(text)
            options.update(ssl_certfile=str(Path(self._cert_dir, "cert.pem")),
                           ssl_keyfile=str(Path(self._cert_dir, "key.pem")))
        return options

    def options(self, socket_timeout: float | None) -> dict[str, Any]:
        conn = self.connection
        options: dict[str, Any] = {
            "host": conn.host, "port": conn.port, "db": conn.database, "username": conn.username,
            "password": conn.password, "socket_timeout": socket_timeout, "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 0), "decode_responses": True,
            # CLIENT LIST shows whose connections these are (and a benchmark counts them).
            "client_name": f"capstan-scaler-{os.getpid()}"}
        if conn.tls:
            options.update(self._tls_options())
        return options

    def _pooled(self, size: int) -> aioredis.Redis:
        # Reads are bounded by asyncio.timeout (which drops a connection whose answer did not come),
        # so neither the socket nor the wait for a free connection needs a timeout of its own.
        pool = BlockingConnectionPool(max_connections=size, timeout=None, **self.options(None))
        return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool

    def dedicated(self, socket_timeout: float | None) -> aioredis.Redis:
        """A client with connections of its own (for blocking waits)."""
        options = self.options(socket_timeout)
        connection_class = options.pop("connection_class", None)
        if connection_class is not None:
            options["ssl"] = True
        return aioredis.Redis(**options)

    # -- keyspace notifications --

    async def keyspace_events(self, label: str, classes: str, allow_config_set: bool) -> bool:
        """Whether notifications of ``classes`` are on (switched on when allowed); checked on first
        use and again whenever the notification listener reconnects (a restarted server forgets
        a CONFIG SET)."""
        key = (classes, allow_config_set)
        if key not in self._events:
            self._events[key] = await bounded(label, self.connection, self.timeout,
                                              ensure_keyspace_events(self.client, classes, allow_config_set))
        return self._events[key]

    def events_on(self, classes: str, allow_config_set: bool) -> bool:
        return self._events.get((classes, allow_config_set), True)

    def watch(self, channel: str, poke: Callable[[], None]) -> None:
        """Call ``poke`` on every message of ``channel``, and once after its SUBSCRIBE and after every
        reconnection (changes may have been missed meanwhile)."""
        new = channel not in self._watchers
        self._watchers.setdefault(channel, set()).add(poke)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        elif new and self._live:
            self._spawn(self._subscribe(channel))
        self._wanted.set()

    def unwatch(self, channel: str, poke: Callable[[], None]) -> None:
        pokes = self._watchers.get(channel)
        if pokes is None:
            return
        pokes.discard(poke)
        if not pokes:
            del self._watchers[channel]
            if self._live:
                self._spawn(self._unsubscribe(channel))

    @property
    def watched(self) -> int:
        return len(self._watchers)

    def _poke(self, channel: str) -> None:
        for poke in list(self._watchers.get(channel, ())):
            poke()

    def _spawn(self, call: Awaitable[None]) -> None:
        task = asyncio.ensure_future(call)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _subscribe(self, channel: str) -> None:
        async with self._lock:
            if (not self._live or self._pubsub is None or channel not in self._watchers
                    or channel in self._subscribed):
                return  # the listener subscribes every watched channel when it (re)connects
            try:
                await asyncio.wait_for(self._pubsub.subscribe(channel), self.timeout)
            except (Exception, TimeoutError) as exc:
                log.info("Redis at %s: SUBSCRIBE %s failed: %s", self.connection.address, channel, exc)
                return
            self._subscribed.add(channel)
        self._poke(channel)

    async def _unsubscribe(self, channel: str) -> None:
        async with self._lock:
            if not self._live or self._pubsub is None or channel in self._watchers:
                return
            self._subscribed.discard(channel)
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(self._pubsub.unsubscribe(channel), self.timeout)

    async def _listen(self) -> None:
        """One pub/sub connection for every followed key; reconnects with back-off, forever."""
        backoff = 0.5
        while True:
            pubsub = self._notify_client.pubsub()
            try:
                await self._connect(pubsub)
                backoff = 0.5
                for channel in list(self._watchers):
                    self._poke(channel)
                while True:
                    if not self._watchers:
                        self._wanted.clear()
                        await self._wanted.wait()
                        continue
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=RESYNC_SECONDS)
                    if message is not None:
                        self._poke(str(message["channel"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server went away: reconnect, re-check notifications
                log.info("Redis at %s: keyspace notifications lost (%s); reconnecting in %.1fs",
                         self.connection.address, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self._live, self._pubsub = False, None
                await asyncio.shield(quietly(pubsub.aclose()))  # type: ignore[no-untyped-call]

    async def _connect(self, pubsub: PubSub) -> None:
        label = f"Redis keyspace notifications ({self.connection.address})"
        for classes, allow in list(self._events):  # a restarted server forgot a CONFIG SET
            self._events[(classes, allow)] = await bounded(
                label, self.connection, self.timeout, ensure_keyspace_events(self.client, classes, allow))
        async with self._lock:
            self._subscribed = set()
            await bounded(label, self.connection, self.timeout, pubsub.connect())  # type: ignore[no-untyped-call]
            # Followers keep arriving while SUBSCRIBE is on its way: repeat until none is missing.
            while missing := [channel for channel in self._watchers if channel not in self._subscribed]:
                await bounded(label, self.connection, self.timeout, pubsub.subscribe(*missing))
                self._subscribed.update(missing)
            self._pubsub, self._live = pubsub, True

    async def aclose(self) -> None:
        tasks = [task for task in (self._listener, *self._background) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_SECONDS)
        await quietly(self.client.aclose())
        await quietly(self._notify_client.aclose())
        if self._cert_dir is not None:
            shutil.rmtree(self._cert_dir, ignore_errors=True)
            self._cert_dir = None


_HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[RedisConnection, RedisHub]] = (
    weakref.WeakKeyDictionary())


def acquire_hub(connection: RedisConnection, timeout: float) -> RedisHub:
    """The running loop's hub for ``connection`` (made on first use); give it back with ``release_hub``."""
    hubs = _HUBS.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(connection)
    if hub is None:
        hub = hubs[connection] = RedisHub(connection, timeout)
    hub.users += 1
    return hub


async def release_hub(hub: RedisHub) -> None:
    hub.users -= 1
    if hub.users > 0:
        return
    hubs = _HUBS.get(asyncio.get_running_loop()) or {}
    if hubs.get(hub.connection) is hub:
        del hubs[hub.connection]
    await hub.aclose()


def open_hubs() -> list[RedisHub]:
    """The hubs of the running loop (for tests and diagnostics)."""
    return list((_HUBS.get(asyncio.get_running_loop()) or {}).values())


class RedisClients:
    """A scaler's handle on its server's hub: taken on first use, given back by ``aclose``."""

    def __init__(self, connection: RedisConnection, timeout: float) -> None:
        self.connection = connection
        self.timeout = timeout
        self._hub: RedisHub | None = None

    @property
    def hub(self) -> RedisHub:
        if self._hub is None:
            self._hub = acquire_hub(self.connection, self.timeout)
        return self._hub

    @property
    def reader(self) -> aioredis.Redis:
        """The shared client for reads (bound every call by the timeout: see ``bounded``)."""
        return self.hub.client

    def make(self, socket_timeout: float | None) -> aioredis.Redis:
        """A client with connections of its own; the caller closes it."""
        return self.hub.dedicated(socket_timeout)

    async def aclose(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            await release_hub(hub)


async def bounded(label: str, connection: RedisConnection, seconds: float, call: Awaitable[Any]) -> Any:
    """Run one Redis call within the timeout; every failure is a ScalerError naming the server."""
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError as exc:
        raise ScalerError(f"{label}: Redis at {connection.address} did not answer within {seconds:g}s") from exc
    except ResponseError as exc:
        raise ScalerError(f"{label}: Redis at {connection.address}: {exc}") from exc
    except (RedisError, OSError) as exc:
        raise ScalerError(f"{label}: cannot reach Redis at {connection.address}: {exc}") from exc


# ---- push: keyspace notifications ---------------------------------------------------------------

_ALL_CLASSES = "g$lshzxetd"  # what "A" stands for in notify-keyspace-events


def _expand(flags: str) -> set[str]:
    return set(flags.replace("A", _ALL_CLASSES))


async def ensure_keyspace_events(client: aioredis.Redis, classes: str, allow_config_set: bool) -> bool:
    """True when keyspace notifications for ``classes`` are on (switching them on when allowed)."""
    try:
        current = (await client.config_get("notify-keyspace-events")).get("notify-keyspace-events") or ""
    except ResponseError:
        return False  # CONFIG is disabled or not permitted: no way to know, use the fallback
    have = _expand(current)
    missing = "".join(c for c in "K" + classes if c not in have)
    if not missing:
        return True
    if not allow_config_set:
        return False
    try:
        await client.config_set("notify-keyspace-events", current + missing)
    except ResponseError:
        return False
    return True


Reader = Callable[[], Awaitable[MetricResult]]
BlockingWait = Callable[[aioredis.Redis, MetricResult], Awaitable[None]]


class KeyspaceFollower:
    """Wakes the controller when one key changes: through the hub's shared keyspace notifications,
    else (notifications off and not allowed to switch them on) a blocking wait on a connection of
    its own while the hub has one to spare, else polling through the shared pool."""

    def __init__(self, label: str, clients: RedisClients, key: str, classes: str, allow_config_set: bool,
                 read: Reader, blocking_wait: BlockingWait) -> None:
        self.label = label
        self.clients = clients
        self.key = key
        self.classes = classes
        self.allow_config_set = allow_config_set
        self.read = read
        self.blocking_wait = blocking_wait
        self.last: MetricResult | None = None
        self.using_notifications: bool | None = None

    def _report(self, result: MetricResult, wake: WakeCallback) -> None:
        """Wake with the first reading (the loop may start after a change) and on every change."""
        changed = result != self.last
        self.last = result
        if changed:
            wake(result.active)

    async def run(self, wake: WakeCallback) -> None:
        backoff = 0.5
        while True:
            try:
                hub = self.clients.hub
                self.using_notifications = await hub.keyspace_events(self.label, self.classes,
                                                                     self.allow_config_set)
                if self.using_notifications:
                    await self._follow_notifications(hub, wake)
                else:
                    await self._follow_without_notifications(hub, wake)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: start over with back-off, never give up
                log.info("%s: push watch of %r failed (%s); retrying in %.1fs", self.label, self.key, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _follow_notifications(self, hub: RedisHub, wake: WakeCallback) -> None:
        changed = asyncio.Event()
        poke = changed.set
        channel = f"__keyspace@{self.clients.connection.database}__:{self.key}"
        hub.watch(channel, poke)
        try:
            self._report(await self.read(), wake)
            last_read = time.monotonic()
            while hub.events_on(self.classes, self.allow_config_set):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESYNC_SECONDS):
                        await changed.wait()
                spacing = MIN_READ_SPACING - (time.monotonic() - last_read)
                if spacing > 0:
                    await asyncio.sleep(spacing)
                changed.clear()  # a burst of notifications becomes the one read below
                self._report(await self.read(), wake)
                last_read = time.monotonic()
        finally:
            hub.unwatch(channel, poke)

    async def _follow_without_notifications(self, hub: RedisHub, wake: WakeCallback) -> None:
        """Until the next re-check of notifications (RESYNC_SECONDS)."""
        until = time.monotonic() + RESYNC_SECONDS
        if hub.blocking_slots > 0:
            hub.blocking_slots -= 1
            client = self.clients.make(None)
            try:
                while time.monotonic() < until:
                    self._report(await self.read(), wake)
                    assert self.last is not None
                    await self.blocking_wait(client, self.last)
            finally:
                hub.blocking_slots += 1
                await asyncio.shield(quietly(client.aclose()))
            return
        hub.pollers += 1
        try:
            while time.monotonic() < until:
                self._report(await self.read(), wake)
                await asyncio.sleep(max(FALLBACK_POLL_SECONDS, hub.pollers / FALLBACK_READS_PER_SECOND))
        finally:
            hub.pollers -= 1


class RedisPushScaler(PushScaler):
    """What ``redis`` and ``redis-streams`` share: the hub handle, the push follower, and an
    ``aclose`` that ends the follower and gives the hub back promptly, however Redis behaves."""

    clients: RedisClients

    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self._followers: set[asyncio.Task[None]] = set()
        self._closed = False

    @abc.abstractmethod
    def follower(self) -> KeyspaceFollower:
        """The follower of this scaler's key."""

    async def run(self, wake: WakeCallback) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self.follower().run(wake))
        self._followers.add(task)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and task.cancelled() and (current is None or not current.cancelling()):
                return  # ended by aclose(), not by our caller
            raise
        finally:
            task.cancel()
            self._followers.discard(task)

    async def aclose(self) -> None:
        self._closed = True
        followers = list(self._followers)
        for task in followers:
            task.cancel()
        if followers:
            await asyncio.wait(followers, timeout=CLOSE_SECONDS)
        await quietly(self.clients.aclose(), CLOSE_SECONDS * 2)


# ---- the scaler ---------------------------------------------------------------------------------

@register("redis")
class RedisScaler(RedisPushScaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.connection = parse_connection(config)
        self.list_name = md.required(config, "listName")
        self.list_length = md.integer(config, "listLength", 5)
        if self.list_length <= 0:
            raise ScalerConfigError(f"{config.label}: metadata.listLength must be greater than 0")
        self.activation_list_length = md.integer(config, "activationListLength", 0)
        self.allow_config_set = md.boolean(config, "keyspaceNotifications", True)
        self.clients = RedisClients(self.connection, config.timeout_seconds)
        self.metric = md.metric_name(config, keda_normalize(self.list_name))

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=self.metric, target=float(self.list_length),
                           activation_target=float(self.activation_list_length),
                           target_type=self.config.metric_type)]

    async def _length(self, client: aioredis.Redis) -> int:
        length = await bounded(self.config.label, self.connection, self.config.timeout_seconds,
                               client.eval(LENGTH_SCRIPT, 1, self.list_name))
        return int(length)

    async def read(self) -> MetricResult:
        length = await self._length(self.clients.reader)
        return MetricResult(value=float(length), active=length > self.activation_list_length)

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        return await self.read()

    async def _wait_for_change(self, client: aioredis.Redis, last: MetricResult) -> None:
        """Without notifications: block while the list is empty, poll while it is not."""
        if last.value == 0:
            try:
                await client.blmove(self.list_name, self.list_name, BLOCK_SECONDS, "LEFT", "LEFT")
                return
            except ResponseError:
                pass  # not a list, or a Redis before 6.2: poll instead
        await asyncio.sleep(FALLBACK_POLL_SECONDS)

    def follower(self) -> KeyspaceFollower:
        return KeyspaceFollower(self.config.label, self.clients, self.list_name, "glzshxe",
                                self.allow_config_set, self.read, self._wait_for_change)
