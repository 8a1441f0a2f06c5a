"""The ``mqtt`` scaler (Capstan's own; KEDA has none): a number published on an MQTT topic.

MQTT has no notion of "messages waiting for a shared-subscription group": a broker may hold
QoS 1/2 messages for offline persistent sessions, but MQTT exposes no per-group count, and
Mosquitto's ``$SYS`` tree only has broker-wide totals. So Capstan scales on numbers the broker or
the producers actually publish:

- ``mode: gauge`` (default): ``topic`` carries a number (producers publish their backlog, retained,
  e.g. ``jobs/backlog`` = ``42``); the metric is the last number published.
- ``mode: brokerStat``: a Mosquitto ``$SYS/broker/<stat>`` statistic, e.g. ``store/messages/count``
  (messages the broker holds: queued for offline persistent sessions, in flight and retained) or
  ``load/messages/received/1min`` (message rate). Mosquitto refreshes ``$SYS`` every
  ``sys_interval`` seconds (10 by default).

``mode: sharedSubscription`` is rejected with this explanation rather than guessed at.

One subscription per scaler serves both polls (which return the latest number at once) and push
(every new number calls ``wake(active)`` immediately). To know that the broker has delivered the
retained value (or that there is none), the scaler then round-trips one empty message through a
private topic ``capstan/probe/<client id>``; brokers deliver a client's messages in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt

from capstan.scalers import _metadata as md
from capstan.scalers._brokers import Backoff, tls_context
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

MODES = ("gauge", "brokerStat")
DEFAULT_STAT = "store/messages/count"
SHARED_SUBSCRIPTION_UNSUPPORTED = (
    "mode sharedSubscription is not supported: MQTT does not expose how many messages wait for a "
    "shared-subscription group. Have producers publish the backlog to a retained topic (mode gauge) or "
    "scale on a broker statistic (mode brokerStat)")


@dataclass(frozen=True)
class MQTTSettings:
    hostname: str
    port: int
    topic: str
    mode: str
    value: float
    activation_value: float
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None


def parse_settings(config: ScalerConfig) -> MQTTSettings:
    host = md.required(config, "host", md.AUTH_OR_METADATA)
    parts = urlsplit(host if "://" in host else f"mqtt://{host}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ScalerConfigError(f"{config.label}: metadata.host: {host!r} is not mqtt://host[:port] or "
                                "mqtts://host[:port]")
    secure = parts.scheme in ("mqtts", "ssl")
    mode_text = md.raw(config, "mode")
    if mode_text == "sharedSubscription":
        raise ScalerConfigError(f"{config.label}: {SHARED_SUBSCRIPTION_UNSUPPORTED}")
    mode = md.choice(config, "mode", MODES, "gauge")
    if mode == "gauge":
        topic = md.required(config, "topic")
        if "+" in topic or "#" in topic:
            raise ScalerConfigError(f"{config.label}: metadata.topic {topic!r}: a gauge topic cannot have wildcards")
    else:
        stat = (md.raw(config, "stat") or DEFAULT_STAT).strip("/")
        if "+" in stat or "#" in stat:
            raise ScalerConfigError(f"{config.label}: metadata.stat {stat!r} cannot have wildcards")
        topic = stat if stat.startswith("$SYS/") else f"$SYS/broker/{stat}"
    value = md.number(config, "value")
    if value <= 0:
        raise ScalerConfigError(f"{config.label}: metadata.value must be greater than 0, got {value:g}")
    tls = None
    if secure or md.raw(config, "tls", md.AUTH_OR_METADATA) == "enable":
        cert, key = md.raw(config, "cert", md.AUTH_ONLY), md.raw(config, "key", md.AUTH_ONLY)
        tls = tls_context(ca=md.raw(config, "ca", md.AUTH_ONLY), cert=cert, key=key,
                          key_password=md.raw(config, "keyPassword", md.AUTH_ONLY),
                          insecure=md.boolean(config, "unsafeSsl"))
    username = md.raw(config, "username", md.AUTH_OR_METADATA) or (unquote(parts.username) if parts.username
                                                                      else None)
    password = md.raw(config, "password", md.AUTH_ONLY) or (unquote(parts.password) if parts.password else None)
    return MQTTSettings(hostname=parts.hostname, port=parts.port or (8883 if tls else 1883), topic=topic, mode=mode,
                        value=value, activation_value=md.number(config, "activationValue", 0.0),
                        username=username, password=password, tls=tls)


def parse_number(payload: bytes) -> float:
    """The number a gauge message carries: ``42``, ``3.5``, or Mosquitto's ``"1234 seconds"``.
    An empty payload (a cleared retained message) reads as 0."""
    text = payload.decode("utf-8", errors="replace").strip()
    if not text:
        return 0.0
    return float(text.split()[0])


@register("mqtt")
class MQTTScaler(PushScaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.settings = parse_settings(config)
        self._metric = md.metric_name(config, self.settings.topic.replace("$SYS/broker/", "sys-"))
        self._client_id = f"capstan-scaler-{uuid.uuid4().hex[:12]}"
        self._probe_topic = f"capstan/probe/{self._client_id}"
        self._follower: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._value = 0.0
        self._value_error: str | None = None
        self._listeners: list[WakeCallback] = []
        self._syncs = 0

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(self._metric, self.settings.value, self.settings.activation_value,
                           self.config.metric_type)]

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        value = await self.read_value()
        return MetricResult(value, value > self.settings.activation_value)

    async def read_value(self) -> float:
        follower = self._ensure_following()
        synced = asyncio.ensure_future(self._synced.wait())
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                await asyncio.wait({synced, follower}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError as exc:
            raise ScalerError(f"{self.config.label}: MQTT broker {self.settings.hostname}:{self.settings.port} "
                              f"did not answer within {self.config.timeout_seconds:g}s") from exc
        finally:
            synced.cancel()
        if not self._synced.is_set():
            raise ScalerError(f"{self.config.label}: {self._follower_failure(follower)}")
        if self._value_error is not None:
            raise ScalerError(f"{self.config.label}: {self._value_error}")
        return self._value

    def _follower_failure(self, follower: asyncio.Task[None]) -> str:
        self._follower = None
        exc = follower.exception() if follower.done() and not follower.cancelled() else None
        return (f"MQTT broker {self.settings.hostname}:{self.settings.port}: "
                f"{exc!r}" if exc else "MQTT connection ended")

    def _ensure_following(self) -> asyncio.Task[None]:
        if self._follower is None or self._follower.done():
            self._synced.clear()
            self._follower = asyncio.create_task(self._follow(), name=f"mqtt-scaler-{self._client_id}")
        return self._follower

    async def _follow(self) -> None:
        s = self.settings
        try:
            async with aiomqtt.Client(
                    s.hostname, s.port, username=s.username, password=s.password, identifier=self._client_id,
                    tls_context=s.tls, timeout=self.config.timeout_seconds, keepalive=30) as client:
                await client.subscribe(s.topic, qos=1)
                await client.subscribe(self._probe_topic, qos=1)
                await client.publish(self._probe_topic, b"", qos=1)
                async for message in client.messages:
                    if message.topic.matches(self._probe_topic):
                        if not self._synced.is_set():
                            self._syncs += 1
                            self._synced.set()
                            self._notify()
                        continue
                    self._accept(message.payload)
        finally:
            self._synced.clear()

    def _accept(self, payload: object) -> None:
        raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
        try:
            value = parse_number(raw)
        except ValueError:
            self._value_error = (f"the last message on topic {self.settings.topic!r} is not a number: "
                                 f"{raw[:80]!r}")
            return
        changed = value != self._value or self._value_error is not None
        self._value, self._value_error = value, None
        if changed and self._synced.is_set():
            self._notify()

    def _notify(self) -> None:
        if self._value_error is not None:
            return
        active = self._value > self.settings.activation_value
        for wake in self._listeners:
            wake(active)

    async def run(self, wake: WakeCallback) -> None:
        self._listeners.append(wake)
        backoff = Backoff()
        try:
            while True:
                follower = self._ensure_following()
                if self._synced.is_set():
                    self._notify()
                syncs = self._syncs
                with contextlib.suppress(Exception):
                    await asyncio.shield(follower)
                if self._follower is follower:
                    self._follower = None
                if self._syncs != syncs:
                    backoff.reset()  # it was connected: retry soon
                await backoff.sleep()
        finally:
            self._listeners.remove(wake)

    async def aclose(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower
