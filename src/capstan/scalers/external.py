"""The ``external`` and ``external-push`` scalers: KEDA's external scaler gRPC protocol.

Wire-compatible with KEDA's ``externalscaler.ExternalScaler`` service (see
``_grpc/externalscaler.proto``), so a scaler server written for KEDA works with Capstan unchanged:

- ``GetMetricSpec`` once, in ``prepare()`` (awaited by the controller: never on the event loop's
  thread), for the metric names and targets (``targetSizeFloat`` wins when > 0); an unreachable
  server is a failing trigger (retried every poll), not a broken ScaledObject;
- per poll ``GetMetrics`` then ``IsActive``, like KEDA; the ``sN-`` prefix is stripped from the
  metric name sent to the server; several values for one metric add up (as the HPA adds the
  items of an external metric);
- ``external-push`` also follows ``StreamIsActive`` and calls ``wake(result)`` for every message,
  reconnecting with back-off from 2 s doubling to 60 s.

``ScaledObjectRef`` carries the ScaledObject's name and namespace and all trigger metadata.
Channels are shared per address and TLS settings across scalers.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from capstan.scalers import _metadata as md
from capstan.scalers._brokers import Backoff
from capstan.scalers._grpc import externalscaler_pb2 as pb
from capstan.scalers.base import (
    MetricResult,
    MetricSpec,
    PushScaler,
    Scaler,
    ScalerConfig,
    ScalerConfigError,
    ScalerError,
    WakeCallback,
)
from capstan.scalers.registry import register

SERVICE = "/externalscaler.ExternalScaler/"


@dataclass(frozen=True)
class TLSMaterial:
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None


@dataclass(frozen=True)
class ExternalSettings:
    address: str
    tls: TLSMaterial | None
    metadata: dict[str, str] = field(default_factory=dict)


def parse_settings(config: ScalerConfig) -> ExternalSettings:
    address = md.required(config, "scalerAddress")
    ca = md.raw(config, "caCert", md.AUTH_ONLY)
    cert = md.raw(config, "tlsClientCert", md.AUTH_ONLY)
    key = md.raw(config, "tlsClientKey", md.AUTH_ONLY)
    if bool(cert) != bool(key):
        raise ScalerConfigError(f"{config.label}: tlsClientCert and tlsClientKey go together")
    enable_tls = md.boolean(config, "enableTLS") or bool(ca or cert)
    if enable_tls and md.boolean(config, "unsafeSsl"):
        raise ScalerConfigError(f"{config.label}: unsafeSsl is not supported (the gRPC client always verifies "
                                "the server); give the server's CA as the caCert authentication parameter")
    tls = TLSMaterial(ca=ca.encode() if ca else None, cert=cert.encode() if cert else None,
                      key=key.encode() if key else None) if enable_tls else None
    return ExternalSettings(address=address, tls=tls, metadata=dict(config.metadata))


class _Stub:
    """Typed calls of the ExternalScaler service on one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.is_active = channel.unary_unary(
            SERVICE + "IsActive", request_serializer=pb.ScaledObjectRef.SerializeToString,
            response_deserializer=pb.IsActiveResponse.FromString)
        self.stream_is_active = channel.unary_stream(
            SERVICE + "StreamIsActive", request_serializer=pb.ScaledObjectRef.SerializeToString,
            response_deserializer=pb.IsActiveResponse.FromString)
        self.get_metric_spec = channel.unary_unary(
            SERVICE + "GetMetricSpec", request_serializer=pb.ScaledObjectRef.SerializeToString,
            response_deserializer=pb.GetMetricSpecResponse.FromString)
        self.get_metrics = channel.unary_unary(
            SERVICE + "GetMetrics", request_serializer=pb.GetMetricsRequest.SerializeToString,
            response_deserializer=pb.GetMetricsResponse.FromString)


def _credentials(tls: TLSMaterial) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert)


class _ChannelPool:
    """One aio channel per (event loop, address, TLS material), shared and reference counted."""

    def __init__(self) -> None:
        self._channels: dict[tuple[Any, ...], tuple[grpc.aio.Channel, int]] = {}
        self._lock = threading.Lock()

    def acquire(self, settings: ExternalSettings) -> tuple[tuple[Any, ...], grpc.aio.Channel]:
        key = (id(asyncio.get_running_loop()), settings.address, settings.tls)
        with self._lock:
            channel, users = self._channels.get(key, (None, 0))
            if channel is None:
                channel = (grpc.aio.secure_channel(settings.address, _credentials(settings.tls))
                           if settings.tls else grpc.aio.insecure_channel(settings.address))
            self._channels[key] = (channel, users + 1)
            return key, channel

    async def release(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            channel, users = self._channels.get(key, (None, 0))
            if channel is None:
                return
            if users > 1:
                self._channels[key] = (channel, users - 1)
                return
            del self._channels[key]
        await channel.close()


_POOL = _ChannelPool()


def strip_index(metric_name: str) -> str:
    """``s0-queue`` -> ``queue`` (KEDA's RemoveIndexFromMetricName)."""
    prefix, sep, rest = metric_name.partition("-")
    if sep and prefix.startswith("s") and prefix[1:].isdigit():
        return rest
    return metric_name


def indexed_metric_name(index: int, server_name: str) -> str:
    """KEDA names an external scaler's metrics ``s{index}-{the server's metricName}``."""
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in f"s{index}-{server_name}")


def spec_target(spec: pb.MetricSpec) -> float:
    return spec.targetSizeFloat if spec.targetSizeFloat > 0 else float(spec.targetSize)


def metric_value(value: pb.MetricValue) -> float:
    return value.metricValueFloat if value.metricValueFloat > 0 else float(value.metricValue)


@register("external")
class ExternalScaler(Scaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.settings = parse_settings(config)
        self._specs: list[MetricSpec] | None = None
        self._server_names: dict[str, str] = {}
        self._channel_key: tuple[Any, ...] | None = None
        self._stub: _Stub | None = None

    def scaled_object_ref(self) -> pb.ScaledObjectRef:
        return pb.ScaledObjectRef(name=self.config.scalable_name, namespace=self.config.namespace,
                                  scalerMetadata=self.settings.metadata)

    def _stub_for_loop(self) -> _Stub:
        if self._stub is None:
            self._channel_key, channel = _POOL.acquire(self.settings)
            self._stub = _Stub(channel)
        return self._stub

    def _error(self, rpc: str, exc: grpc.RpcError | grpc.aio.AioRpcError) -> ScalerError:
        code = exc.code() if isinstance(exc, (grpc.aio.AioRpcError, grpc.Call)) else None
        details = exc.details() if isinstance(exc, (grpc.aio.AioRpcError, grpc.Call)) else str(exc)
        name = code.name if code is not None else "error"
        return ScalerError(f"{self.config.label}: external scaler {self.settings.address}: {rpc}: {name}: {details}")

    # -- metric specs ------------------------------------------------------------------------------

    def _accept_specs(self, response: pb.GetMetricSpecResponse) -> list[MetricSpec]:
        specs: list[MetricSpec] = []
        self._server_names = {}
        for spec in response.metricSpecs:
            name = indexed_metric_name(self.config.trigger_index, spec.metricName)
            self._server_names[name] = spec.metricName
            specs.append(MetricSpec(name, spec_target(spec), 0.0, self.config.metric_type))
        if not specs:
            raise ScalerError(f"{self.config.label}: external scaler {self.settings.address} returned no metric specs")
        self._specs = specs
        return specs

    async def prepare(self) -> None:
        """Ask the server for its metric specs (once), without blocking the event loop."""
        if self._specs is None:
            await self.load_metric_specs()

    def metric_specs(self) -> list[MetricSpec]:
        """The server's metric specs, as ``prepare()`` loaded them. Called without ``prepare()``, it
        asks the server synchronously (bounded by the timeout; blocks the thread): the controllers
        always prepare first. Raises ScalerError if the server cannot be reached."""
        if self._specs is not None:
            return self._specs
        channel = (grpc.secure_channel(self.settings.address, _credentials(self.settings.tls))
                   if self.settings.tls else grpc.insecure_channel(self.settings.address))
        try:
            call = channel.unary_unary(SERVICE + "GetMetricSpec",
                                       request_serializer=pb.ScaledObjectRef.SerializeToString,
                                       response_deserializer=pb.GetMetricSpecResponse.FromString)
            response = call(self.scaled_object_ref(), timeout=self.config.timeout_seconds)
        except grpc.RpcError as exc:
            raise self._error("GetMetricSpec", exc) from exc
        finally:
            channel.close()
        return self._accept_specs(response)

    async def load_metric_specs(self) -> list[MetricSpec]:
        """Ask the server for its metric specs without blocking the event loop."""
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                # gRPC's own deadline a little later: the message below is the one users see.
                response = await self._stub_for_loop().get_metric_spec(
                    self.scaled_object_ref(), timeout=self.config.timeout_seconds + 0.5)
        except grpc.aio.AioRpcError as exc:
            raise self._error("GetMetricSpec", exc) from exc
        except TimeoutError as exc:
            raise ScalerError(f"{self.config.label}: external scaler {self.settings.address} did not answer "
                              f"GetMetricSpec within {self.config.timeout_seconds:g}s") from exc
        return self._accept_specs(response)

    # -- metrics -----------------------------------------------------------------------------------

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        if self._specs is None:
            await self.load_metric_specs()
        server_name = self._server_names.get(metric_name, strip_index(metric_name))
        stub = self._stub_for_loop()
        ref = self.scaled_object_ref()
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                metrics = await stub.get_metrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=server_name))
                active = await stub.is_active(ref)
        except grpc.aio.AioRpcError as exc:
            raise self._error("GetMetrics/IsActive", exc) from exc
        except TimeoutError as exc:
            raise ScalerError(f"{self.config.label}: external scaler {self.settings.address} did not answer within "
                              f"{self.config.timeout_seconds:g}s") from exc
        value = sum(metric_value(v) for v in metrics.metricValues)
        return MetricResult(value, bool(active.result))

    async def aclose(self) -> None:
        key, self._channel_key, self._stub = self._channel_key, None, None
        if key is not None:
            await _POOL.release(key)


@register("external-push")
class ExternalPushScaler(ExternalScaler, PushScaler):
    """``external`` plus ``StreamIsActive``: each streamed IsActiveResponse wakes the controller."""

    def __init__(self, config: ScalerConfig, backoff: Backoff | None = None) -> None:
        super().__init__(config)
        self._backoff = backoff or Backoff(2.0, 60.0)

    async def run(self, wake: WakeCallback) -> None:
        while True:
            try:
                stream = self._stub_for_loop().stream_is_active(self.scaled_object_ref())
                async for response in stream:
                    self._backoff.reset()
                    wake(bool(response.result))
            except grpc.aio.AioRpcError:
                pass  # the server went away or ended the stream: reconnect after a pause
            await self._backoff.sleep()

