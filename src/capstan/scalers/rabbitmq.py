"""The ``rabbitmq`` scaler: queue length or message rates of a RabbitMQ queue (KEDA semantics).

Two protocols, chosen from the host's scheme unless ``protocol`` says otherwise:

- AMQP (``amqp://``, ``amqps://``): a passive queue declare, whose reply carries the number of
  messages ready for delivery. Nothing is consumed and nothing is created.
- HTTP (``http://``, ``https://``): the management API, ``/api/queues/<vhost>/<queue>``, which
  also knows unacknowledged messages, rates, and queues matched by a regular expression.

Pull only: AMQP offers no way to learn of a publish to somebody else's queue without consuming
from it or knowing its bindings (see docs/scalers/rabbitmq.md), so Capstan polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import httpx

from capstan.scalers import _metadata as md
from capstan.scalers._brokers import tls_context
from capstan.scalers.base import MetricResult, MetricSpec, Scaler, ScalerConfig, ScalerConfigError, ScalerError
from capstan.scalers.registry import register

MODES = ("QueueLength", "MessageRate", "DeliverGetRate", "PublishedToDeliveredRatio",
         "ExpectedQueueConsumptionTime")
HTTP_ONLY_MODES = MODES[1:]
DEFAULT_QUEUE_LENGTH = 20.0


@dataclass(frozen=True)
class QueueStats:
    """What one read learns about the queue (or the queues a regex matches, aggregated)."""

    messages: float
    publish_rate: float = 0.0
    deliver_rate: float = 0.0


@dataclass(frozen=True)
class RabbitMQSettings:
    protocol: str  # "amqp" | "http"
    url: str  # with credentials and, for AMQP, the vhost
    vhost: str
    queue_name: str
    mode: str
    value: float
    activation_value: float
    use_regex: bool
    operation: str
    page_size: int
    exclude_unacknowledged: bool
    unsafe_ssl: bool
    timeout: float
    tls: ssl.SSLContext | None


def parse_settings(config: ScalerConfig) -> RabbitMQSettings:
    host = md.required(config, "host", md.AUTH_OR_METADATA)
    parts = urlsplit(host)
    protocol = md.choice(config, "protocol", ("auto", "amqp", "http"), "auto")
    if protocol == "auto":
        if parts.scheme in ("amqp", "amqps"):
            protocol = "amqp"
        elif parts.scheme in ("http", "https"):
            protocol = "http"
        else:
            raise ScalerConfigError(
                f"{config.label}: metadata.host: cannot tell the protocol from {parts.scheme or 'no'} scheme; "
                "use amqp://, amqps://, http:// or https://, or set metadata.protocol")
    queue_name = md.required(config, "queueName")
    mode, value = _mode_and_value(config)
    activation_value = md.number(config, "activationValue", 0.0)
    use_regex = md.boolean(config, "useRegex")
    operation = md.choice(config, "operation", ("sum", "max", "avg"), "sum")
    page_size = md.integer(config, "pageSize", 100)
    if page_size < 1:
        raise ScalerConfigError(f"{config.label}: metadata.pageSize must be at least 1, got {page_size}")
    exclude_unacked = md.boolean(config, "excludeUnacknowledged")
    if protocol == "amqp":
        for flag, name in ((use_regex, "useRegex"), (exclude_unacked, "excludeUnacknowledged"),
                           (mode in HTTP_ONLY_MODES, f"mode {mode}")):
            if flag:
                raise ScalerConfigError(f"{config.label}: {name} needs protocol http (the management API)")
    timeout = config.timeout_seconds
    timeout_ms = md.raw(config, "timeout")
    if timeout_ms is not None:
        if protocol != "http":
            raise ScalerConfigError(f"{config.label}: metadata.timeout applies to protocol http only")
        timeout = md.number(config, "timeout") / 1000.0
        if timeout <= 0:
            raise ScalerConfigError(f"{config.label}: metadata.timeout must be a positive number of milliseconds")
    unsafe_ssl = md.boolean(config, "unsafeSsl")
    tls = None
    if md.raw(config, "tls", md.AUTH_ONLY) == "enable" or parts.scheme in ("amqps", "https"):
        tls = tls_context(ca=md.raw(config, "ca", md.AUTH_ONLY), cert=md.raw(config, "cert", md.AUTH_ONLY),
                          key=md.raw(config, "key", md.AUTH_ONLY),
                          key_password=md.raw(config, "keyPassword", md.AUTH_ONLY), insecure=unsafe_ssl)
    username = md.raw(config, "username", md.AUTH_ONLY)
    password = md.raw(config, "password", md.AUTH_ONLY)
    vhost_name = md.raw(config, "vhostName")
    vhost = vhost_name if vhost_name is not None else unquote(parts.path.lstrip("/"))
    vhost = vhost or "/"
    url = _with_credentials(host, username, password)
    if protocol == "amqp":
        url = _with_path(url, "/" + quote(vhost, safe=""))
    return RabbitMQSettings(protocol=protocol, url=url, vhost=vhost, queue_name=queue_name, mode=mode, value=value,
                            activation_value=activation_value, use_regex=use_regex, operation=operation,
                            page_size=page_size, exclude_unacknowledged=exclude_unacked, unsafe_ssl=unsafe_ssl,
                            timeout=timeout, tls=tls)


def _mode_and_value(config: ScalerConfig) -> tuple[str, float]:
    """KEDA: ``mode`` + ``value``; the deprecated ``queueLength`` alone means QueueLength; nothing
    at all means QueueLength with a target of 20."""
    legacy = md.raw(config, "queueLength")
    mode = md.raw(config, "mode")
    has_value = md.raw(config, "value") is not None
    if legacy is not None:
        if mode is not None or has_value:
            raise ScalerConfigError(
                f"{config.label}: metadata.queueLength is deprecated and cannot be combined with mode/value")
        return "QueueLength", md.number(config, "queueLength")
    if mode is None:
        if has_value:
            raise ScalerConfigError(f"{config.label}: metadata.mode is required with metadata.value")
        return "QueueLength", DEFAULT_QUEUE_LENGTH
    mode = md.choice(config, "mode", MODES)
    if not has_value:
        raise ScalerConfigError(f"{config.label}: metadata.value is required with mode {mode}")
    value = md.number(config, "value")
    if value <= 0:
        raise ScalerConfigError(f"{config.label}: metadata.value must be greater than 0, got {value:g}")
    return mode, value


def _with_credentials(url: str, username: str | None, password: str | None) -> str:
    if username is None and password is None:
        return url
    parts = urlsplit(url)
    user = quote(username if username is not None else unquote(parts.username or ""), safe="")
    secret = quote(password if password is not None else unquote(parts.password or ""), safe="")
    netloc = f"{user}:{secret}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def metric_and_activity(settings: RabbitMQSettings, stats: QueueStats) -> MetricResult:
    """KEDA's per-mode metric and activation rule."""
    act = settings.activation_value
    if settings.mode == "QueueLength":
        return MetricResult(stats.messages, stats.messages > act)
    if settings.mode == "MessageRate":
        return MetricResult(stats.publish_rate, stats.publish_rate > act or stats.messages > act)
    if settings.mode == "DeliverGetRate":
        return MetricResult(stats.deliver_rate, stats.deliver_rate > act)
    if settings.mode == "PublishedToDeliveredRatio":
        if stats.deliver_rate == 0:
            ratio = act if stats.publish_rate > 0 else 0.0
        else:
            ratio = stats.publish_rate / stats.deliver_rate
        return MetricResult(ratio, ratio > act or (stats.publish_rate > 0 and stats.deliver_rate == 0))
    # ExpectedQueueConsumptionTime: seconds to drain the backlog at the current delivery rate.
    if stats.messages == 0:
        eta = 0.0
    elif stats.deliver_rate == 0:
        eta = act
    else:
        eta = ((stats.publish_rate - stats.deliver_rate) / stats.deliver_rate
               + stats.messages / stats.deliver_rate)
    return MetricResult(eta, eta > act or (stats.deliver_rate == 0 and stats.messages > 0))


def aggregate(operation: str, values: list[float]) -> float:
    if not values:
        return 0.0
    if operation == "max":
        return max(values)
    total = sum(values)
    return total / len(values) if operation == "avg" else total


@register("rabbitmq")
class RabbitMQScaler(Scaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.settings = parse_settings(config)
        self._metric = md.metric_name(config, quote(self.settings.queue_name, safe=""))
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._http: httpx.AsyncClient | None = None

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(self._metric, self.settings.value, self.settings.activation_value,
                           self.config.metric_type)]

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        stats = await self.read_stats()
        return metric_and_activity(self.settings, stats)

    async def read_stats(self) -> QueueStats:
        try:
            async with asyncio.timeout(self.settings.timeout):
                if self.settings.protocol == "amqp":
                    return await self._read_amqp()
                return await self._read_http()
        except TimeoutError as exc:
            await self._drop_amqp()
            raise ScalerError(f"{self.config.label}: RabbitMQ did not answer within "
                              f"{self.settings.timeout:g}s") from exc

    # -- AMQP ---------------------------------------------------------------------------------

    async def _read_amqp(self) -> QueueStats:
        try:
            channel = await self._amqp_channel()
            queue = await channel.declare_queue(self.settings.queue_name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity as exc:
            self._channel = None  # the broker closes the channel after a failed passive declare
            raise ScalerError(f"{self.config.label}: queue {self.settings.queue_name!r} not found in vhost "
                              f"{self.settings.vhost!r}") from exc
        except (aio_pika.exceptions.AMQPError, OSError, ConnectionError) as exc:
            await self._drop_amqp()
            raise ScalerError(f"{self.config.label}: RabbitMQ (AMQP): {exc!r}") from exc
        result = queue.declaration_result
        return QueueStats(messages=float(result.message_count or 0))

    async def _amqp_channel(self) -> aio_pika.abc.AbstractChannel:
        if self._connection is None or self._connection.is_closed:
            self._channel = None
            self._connection = await aio_pika.connect(self.settings.url, ssl_context=self.settings.tls,
                                                      timeout=self.settings.timeout)
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    async def _drop_amqp(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            # Closing a broken connection may fail; it is gone either way.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 1.0)

    # -- HTTP (management API) ------------------------------------------------------------------

    async def _read_http(self) -> QueueStats:
        client = self._http_client()
        base = _with_path(self.settings.url, "")
        vhost = quote(self.settings.vhost, safe="")
        if not self.settings.use_regex:
            data = await self._get_json(client, f"{base}/api/queues/{vhost}/{quote(self.settings.queue_name, safe='')}")
            return self._queue_stats(data)
        queues: list[dict[str, Any]] = []
        page = 1
        while True:
            data = await self._get_json(client, f"{base}/api/queues/{vhost}", params={
                "page": str(page), "page_size": str(self.settings.page_size), "name": self.settings.queue_name,
                "use_regex": "true", "pagination": "true"})
            queues.extend(data.get("items", []))
            if page >= int(data.get("page_count", 1)):
                break
            page += 1
        per_queue = [self._queue_stats(q) for q in queues]
        op = self.settings.operation
        return QueueStats(messages=aggregate(op, [s.messages for s in per_queue]),
                          publish_rate=aggregate(op, [s.publish_rate for s in per_queue]),
                          deliver_rate=aggregate(op, [s.deliver_rate for s in per_queue]))

    def _queue_stats(self, queue: dict[str, Any]) -> QueueStats:
        key = "messages_ready" if self.settings.exclude_unacknowledged else "messages"
        stats = queue.get("message_stats") or {}
        return QueueStats(messages=float(queue.get(key) or 0),
                          publish_rate=float((stats.get("publish_details") or {}).get("rate") or 0),
                          deliver_rate=float((stats.get("deliver_get_details") or {}).get("rate") or 0))

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            parts = urlsplit(self.settings.url)
            auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
            verify: ssl.SSLContext | bool = self.settings.tls if self.settings.tls is not None else True
            self._http = httpx.AsyncClient(auth=auth, verify=verify, timeout=self.settings.timeout)
        return self._http

    async def _get_json(self, client: httpx.AsyncClient, url: str,
                        params: dict[str, str] | None = None) -> dict[str, Any]:
        # Credentials travel in the Authorization header, not the URL.
        parts = urlsplit(url)
        bare = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else "")
                           if parts.hostname else parts.netloc, parts.path, parts.query, ""))
        try:
            response = await client.get(bare, params=params)
        except httpx.HTTPError as exc:
            raise ScalerError(f"{self.config.label}: RabbitMQ management API: {exc!r}") from exc
        if response.status_code == 404:
            raise ScalerError(f"{self.config.label}: queue {self.settings.queue_name!r} not found in vhost "
                              f"{self.settings.vhost!r}")
        if response.status_code != 200:
            raise ScalerError(f"{self.config.label}: RabbitMQ management API answered {response.status_code}: "
                              f"{response.text[:200]}")
        data = response.json()
        if not isinstance(data, dict):
            raise ScalerError(f"{self.config.label}: RabbitMQ management API sent an unexpected document")
        return data

    async def aclose(self) -> None:
        await self._drop_amqp()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
