"""``prometheus``: the value of one PromQL query (KEDA's ``prometheus_scaler.go`` semantics).

``GET {serverAddress}/api/v1/query?query=...&time=<now>`` must answer a scalar or a vector of
at most one series. An empty vector, an empty value, NaN or ±Inf reads as 0 while
``ignoreNullValues`` is true (the default) and is an error otherwise; two or more series are
always an error. Active when ``value > activationThreshold``.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any

from capstan.scalers import _http
from capstan.scalers import _metadata as md
from capstan.scalers.base import MetricResult, MetricSpec, Scaler, ScalerConfig, ScalerConfigError, ScalerError
from capstan.scalers.registry import register

SUPPORTED_AUTH_MODES = ("bearer", "basic", "custom", "tls")


@register("prometheus")
class PrometheusScaler(Scaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        address = md.required(config, "serverAddress").rstrip("/")
        if not address.startswith(("http://", "https://")):
            raise ScalerConfigError(f"{config.label}: metadata.serverAddress: {address!r} must start with "
                                    "http:// or https://")
        self.server_address = address
        self.query = md.required(config, "query")
        self.threshold = md.number(config, "threshold")
        self.activation_threshold = md.number(config, "activationThreshold", 0.0)
        self.namespace = md.raw(config, "namespace")
        self.query_parameters = _http.key_values(config, "queryParameters")
        self.ignore_null_values = md.boolean(config, "ignoreNullValues", True)
        self.http = _http.HttpSource.from_metadata(config, SUPPORTED_AUTH_MODES, headers_field="customHeaders")
        self.metric = md.metric_name(config)
        if config.metadata.get("awsRegion"):
            raise ScalerConfigError(f"{config.label}: metadata.awsRegion: Amazon Managed Prometheus (SigV4) is "
                                    "not supported; use bearer, basic, custom or tls authModes")

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=self.metric, target=self.threshold, activation_target=self.activation_threshold,
                           target_type=self.config.metric_type)]

    def _params(self) -> dict[str, str]:
        now = self.config.as_of() if self.config.as_of else time.time()
        params = {"query": self.query,
                  "time": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if self.namespace:
            params["namespace"] = self.namespace
        params.update(self.query_parameters)
        return params

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        body = await self.http.get(f"{self.server_address}/api/v1/query", self._params())
        value = self._value(body)
        return MetricResult(value=value, active=value > self.activation_threshold)

    def _null(self, why: str) -> float:
        if self.ignore_null_values:
            return 0.0
        raise ScalerError(f"{self.config.label}: query {self.query!r} {why} (set ignoreNullValues: \"true\" "
                          "to read this as 0)")

    def _value(self, body: bytes) -> float:
        try:
            answer: Any = json.loads(body)
            data = answer["data"]
            result_type, result = data["resultType"], data["result"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ScalerError(f"{self.config.label}: {self.server_address} did not answer a Prometheus "
                              f"query result: {body[:200]!r}") from exc
        if result_type == "scalar":
            sample = result
        elif result_type == "vector":
            if not result:
                return self._null("returned an empty result")
            if len(result) > 1:
                raise ScalerError(f"{self.config.label}: query {self.query!r} returned {len(result)} series; "
                                  "it must return one (aggregate it, e.g. with sum())")
            sample = result[0].get("value") if isinstance(result[0], dict) else None
        else:
            raise ScalerError(f"{self.config.label}: query {self.query!r} returned a {result_type}; "
                              "it must return a scalar or a one-element vector")
        if not sample:
            return self._null("returned an empty value")
        if not isinstance(sample, list) or len(sample) < 2:
            raise ScalerError(f"{self.config.label}: query {self.query!r} did not return a [time, value] sample")
        try:
            value = float(sample[1])
        except (TypeError, ValueError) as exc:
            raise ScalerError(f"{self.config.label}: query {self.query!r} returned {sample[1]!r}, "
                              "not a number") from exc
        if math.isnan(value) or math.isinf(value):
            return self._null(f"returned {sample[1]}")
        return value

    async def aclose(self) -> None:
        await self.http.aclose()
