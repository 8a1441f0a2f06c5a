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
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
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


class RedisClients:
    """The scaler's clients: one for reads (commands bounded by the timeout) and, made on demand,
    one for push loops (blocking reads and pub/sub, no socket timeout)."""

    def __init__(self, connection: RedisConnection, timeout: float) -> None:
        self.connection = connection
        self.timeout = timeout
        self._reader: aioredis.Redis | None = None
        self._cert_dir: str | None = None

    def _tls_files(self) -> dict[str, Any]:
        conn = self.connection
        options: dict[str, Any] = {"ssl": True, "ssl_ca_data": conn.ca, "ssl_password": conn.key_password}
        if conn.unsafe_ssl:
            options.update(ssl_cert_reqs="none", ssl_check_hostname=False)
        if conn.cert and conn.key:
            # redis-py reads client certificates from files on each connect; keep them for the scaler's life.
            if self._cert_dir is None:
                self._cert_dir = tempfile.mkdtemp(prefix="capstan-redis-")
                for name, text in (("cert.pem", conn.cert), ("key.pem", conn.key)):
                    path = Path(self._cert_dir, name)
                    path.touch(mode=0o600)
                    path.write_text(text)
            options.update(ssl_certfile=str(Path(self._cert_dir, "cert.pem")),
                           ssl_keyfile=str(Path(self._cert_dir, "key.pem")))
        return options

    def make(self, socket_timeout: float | None) -> aioredis.Redis:
        conn = self.connection
        tls = self._tls_files() if conn.tls else {}
        return aioredis.Redis(
            host=conn.host, port=conn.port, db=conn.database, username=conn.username, password=conn.password,
            socket_timeout=socket_timeout, socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0), decode_responses=True, **tls)

    @property
    def reader(self) -> aioredis.Redis:
        if self._reader is None:
            self._reader = self.make(self.timeout)
        return self._reader

    async def aclose(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.aclose()
        if self._cert_dir is not None:
            shutil.rmtree(self._cert_dir, ignore_errors=True)
            self._cert_dir = None


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
    """Wakes the controller when one key changes: keyspace notifications, else a blocking wait."""

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
            client = self.clients.make(None)
            try:
                await self._follow(client, wake)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: reconnect with back-off, never give up
                log.info("%s: push watch of %r failed (%s); retrying in %.1fs", self.label, self.key, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                await asyncio.shield(client.aclose())

    async def _follow(self, client: aioredis.Redis, wake: WakeCallback) -> None:
        timeout = self.clients.timeout
        conn = self.clients.connection
        self.using_notifications = await bounded(
            self.label, conn, timeout, ensure_keyspace_events(client, self.classes, self.allow_config_set))
        if not self.using_notifications:
            while True:
                self._report(await self.read(), wake)
                assert self.last is not None
                await self.blocking_wait(client, self.last)
        pubsub = client.pubsub()
        try:
            await bounded(self.label, conn, timeout, pubsub.subscribe(f"__keyspace@{conn.database}__:{self.key}"))
            self._report(await self.read(), wake)
            last_read = time.monotonic()
            while True:
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=RESYNC_SECONDS)
                spacing = MIN_READ_SPACING - (time.monotonic() - last_read)
                if spacing > 0:
                    await asyncio.sleep(spacing)
                while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0) is not None:
                    pass  # coalesce a burst into the one read below
                self._report(await self.read(), wake)
                last_read = time.monotonic()
        finally:
            await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]


# ---- the scaler ---------------------------------------------------------------------------------

@register("redis")
class RedisScaler(PushScaler):
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

    async def run(self, wake: WakeCallback) -> None:
        follower = KeyspaceFollower(self.config.label, self.clients, self.list_name, "glzshxe",
                                    self.allow_config_set, self.read, self._wait_for_change)
        await follower.run(wake)

    async def aclose(self) -> None:
        await self.clients.aclose()
