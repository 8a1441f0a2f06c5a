"""The ``nats-jetstream`` scaler: pending messages of a JetStream consumer (KEDA semantics).

The lag is ``num_pending + num_ack_pending`` of the consumer, read from the server's monitoring
endpoint ``/jsz?acc=<account>&consumers=true&config=true``. In a cluster the consumer's numbers
are authoritative on its leader, so (like KEDA) Capstan then asks the leader's node, addressed as
``<leader>.<natsServerMonitoringEndpoint>`` (the per-pod DNS name of a headless Service).

Push: a core NATS subscription (not a JetStream consumer, so nothing is consumed or acked) to the
stream's subjects and to the consumer's acknowledgement subject ``$JS.ACK.<stream>.<consumer>.>``:
a publish or an ack triggers one lag read and ``wake(active)``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
import nats.errors
from nats.aio.client import Client as NATSClient
from nats.aio.msg import Msg

from capstan.scalers import _metadata as md
from capstan.scalers._brokers import Backoff, Rechecker, follow_with_rechecks
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


@dataclass(frozen=True)
class NATSJetStreamSettings:
    endpoint: str  # host:port of the monitoring endpoint
    account: str
    stream: str
    consumer: str
    lag_threshold: float
    activation_lag_threshold: float
    use_https: bool
    server_url: str | None  # Capstan extension: the client URL for push; derived from /varz if absent

    @property
    def scheme(self) -> str:
        return "https" if self.use_https else "http"

    def jsz_url(self, endpoint: str | None = None) -> str:
        return f"{self.scheme}://{endpoint or self.endpoint}/jsz"


def parse_settings(config: ScalerConfig) -> NATSJetStreamSettings:
    endpoint = md.required(config, "natsServerMonitoringEndpoint", md.AUTH_OR_METADATA)
    if "://" in endpoint:
        raise ScalerConfigError(f"{config.label}: metadata.natsServerMonitoringEndpoint is host:port, without a "
                                f"scheme (got {endpoint!r}; use useHttps for https)")
    account = md.raw(config, "account") or md.raw(config, "accountID")
    if not account:
        raise ScalerConfigError(f"{config.label}: metadata.account is required (\"$G\" is the default account)")
    lag_threshold = md.number(config, "lagThreshold", 10.0)
    if lag_threshold <= 0:
        raise ScalerConfigError(f"{config.label}: metadata.lagThreshold must be greater than 0, got {lag_threshold:g}")
    activation = md.number(config, "activationLagThreshold", 0.0)
    if activation < 0:
        raise ScalerConfigError(
            f"{config.label}: metadata.activationLagThreshold must be 0 or more, got {activation:g}")
    return NATSJetStreamSettings(
        endpoint=endpoint.rstrip("/"), account=account, stream=md.required(config, "stream"),
        consumer=md.required(config, "consumer"), lag_threshold=lag_threshold, activation_lag_threshold=activation,
        use_https=md.boolean(config, "useHttps"), server_url=md.raw(config, "natsServerUrl", md.AUTH_OR_METADATA))


def find_consumer(jsz: dict[str, Any], settings: NATSJetStreamSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (stream, consumer) details of a /jsz document; ScalerError-free: raises LookupError."""
    for account in jsz.get("account_details") or []:
        if settings.account not in (account.get("name"), account.get("id")):
            continue
        for stream in account.get("stream_detail") or []:
            if stream.get("name") != settings.stream:
                continue
            for consumer in stream.get("consumer_detail") or []:
                if consumer.get("name") == settings.consumer:
                    return stream, consumer
            raise LookupError(f"consumer {settings.consumer!r} not found in stream {settings.stream!r}")
        raise LookupError(f"stream {settings.stream!r} not found in account {settings.account!r}")
    raise LookupError(f"account {settings.account!r} not found (or it has no JetStream streams)")


def consumer_lag(consumer: dict[str, Any]) -> int:
    return int(consumer.get("num_pending") or 0) + int(consumer.get("num_ack_pending") or 0)


def consumer_leader(jsz: dict[str, Any], consumer: dict[str, Any]) -> str | None:
    """The consumer's leader node when the server is part of a cluster, else None."""
    if int((jsz.get("meta_cluster") or {}).get("cluster_size") or 0) <= 1:
        return None
    leader = (consumer.get("cluster") or {}).get("leader")
    return str(leader) if leader else None


@register("nats-jetstream")
class NATSJetStreamScaler(PushScaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.settings = parse_settings(config)
        self._metric = md.metric_name(config, self.settings.stream)
        self._http: httpx.AsyncClient | None = None
        self._leader_endpoint: str | None = None
        self._subjects: list[str] = []

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(self._metric, self.settings.lag_threshold, self.settings.activation_lag_threshold,
                           self.config.metric_type)]

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        lag = await self.read_lag()
        return MetricResult(float(lag), lag > self.settings.activation_lag_threshold)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.config.timeout_seconds)
        return self._http

    async def _get(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            response = await self._client().get(url, params=params)
        except httpx.HTTPError as exc:
            raise ScalerError(f"{self.config.label}: NATS monitoring endpoint {url}: {exc!r}") from exc
        if response.status_code != 200:
            raise ScalerError(f"{self.config.label}: NATS monitoring endpoint {url} answered "
                              f"{response.status_code}: {response.text[:200]}")
        data = response.json()
        if not isinstance(data, dict):
            raise ScalerError(f"{self.config.label}: NATS monitoring endpoint {url} sent an unexpected document")
        return data

    async def _jsz(self, endpoint: str | None = None) -> dict[str, Any]:
        params = {"acc": self.settings.account, "consumers": "true", "config": "true"}
        return await self._get(self.settings.jsz_url(endpoint), params)

    async def read_lag(self) -> int:
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                return await self._read_lag()
        except TimeoutError as exc:
            raise ScalerError(f"{self.config.label}: NATS monitoring endpoint did not answer within "
                              f"{self.config.timeout_seconds:g}s") from exc

    async def _read_lag(self) -> int:
        if self._leader_endpoint is not None:
            try:
                stream, consumer = self._lookup(await self._jsz(self._leader_endpoint))
                self._subjects = list((stream.get("config") or {}).get("subjects") or [])
                return consumer_lag(consumer)
            except ScalerError:
                self._leader_endpoint = None  # leadership moved or the node went: ask the endpoint again
        jsz = await self._jsz()
        stream, consumer = self._lookup(jsz)
        self._subjects = list((stream.get("config") or {}).get("subjects") or [])
        leader = consumer_leader(jsz, consumer)
        if leader is not None and leader != jsz.get("server_name"):
            leader_endpoint = f"{leader}.{self.settings.endpoint}"
            try:
                _, consumer = self._lookup(await self._jsz(leader_endpoint))
                self._leader_endpoint = leader_endpoint
            except ScalerError:
                pass  # keep the (possibly stale) numbers the endpoint itself reported
        return consumer_lag(consumer)

    def _lookup(self, jsz: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            return find_consumer(jsz, self.settings)
        except LookupError as exc:
            raise ScalerError(f"{self.config.label}: {exc}") from exc

    # -- push --------------------------------------------------------------------------------------

    async def _client_url(self) -> str:
        if self.settings.server_url:
            return self.settings.server_url
        varz = await self._get(f"{self.settings.scheme}://{self.settings.endpoint}/varz")
        host = urlsplit(f"//{self.settings.endpoint}").hostname or "localhost"
        return f"nats://{host}:{int(varz.get('port') or 4222)}"

    async def run(self, wake: WakeCallback) -> None:
        await follow_with_rechecks(self._read_active, wake, self._follow,
                                   (ScalerError, OSError, TimeoutError, nats.errors.Error))

    async def _read_active(self) -> bool:
        return (await self.get_metrics_and_activity(self._metric)).active

    async def _follow(self, rechecker: Rechecker, backoff: Backoff) -> None:
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        async def on_message(_: Msg) -> None:
            rechecker.poke()

        async def on_error(_: Exception) -> None:
            return None

        async with asyncio.timeout(self.config.timeout_seconds):
            await self.read_lag()  # learns the stream's subjects and checks the names
            url = await self._client_url()
            client: NATSClient = await nats.connect(
                servers=[url], connect_timeout=self.config.timeout_seconds, allow_reconnect=False,
                closed_cb=on_closed, error_cb=on_error, name="capstan-nats-jetstream-scaler")
        try:
            ack_subject = f"$JS.ACK.{self.settings.stream}.{self.settings.consumer}.>"
            for subject in [*self._subjects, ack_subject]:
                await client.subscribe(subject, cb=on_message)
            await client.flush(timeout=max(1, round(self.config.timeout_seconds)))
            backoff.reset()
            rechecker.poke()  # report the state we start from
            await closed.wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2.0)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
