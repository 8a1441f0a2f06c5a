"""prometheus scaler against the real Prometheus of tests/services.py, which scrapes a tiny exporter
this test serves (registered through Prometheus' file_sd targets directory)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from tests.integration.scaler_support import closed_port, http_server, silent_port, timed, unique
from tests.services import ServiceInfo, service

from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError
from capstan.scalers.prometheus import PrometheusScaler


@pytest.fixture(scope="module")
def prom() -> ServiceInfo:
    return service("prometheus")


class Exporter:
    """Serves ``capstan_test_depth`` (the value the test sets) and two ``capstan_test_shard`` series."""

    def __init__(self) -> None:
        self.depth = 0.0
        self.run = unique("run")

    def handle(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        body = (f"# TYPE capstan_test_depth gauge\ncapstan_test_depth {self.depth}\n"
                '# TYPE capstan_test_shard gauge\ncapstan_test_shard{shard="a"} 1\ncapstan_test_shard{shard="b"} 2\n')
        return 200, "text/plain; version=0.0.4", body.encode()


@pytest.fixture(scope="module")
def exporter(prom: ServiceInfo) -> Iterator[Exporter]:
    served = Exporter()
    with http_server(served.handle) as port:
        target = Path(prom.extra["file_sd_dir"]) / f"{served.run}.json"
        staging = target.with_suffix(".tmp")  # write then rename: Prometheus never reads half a file
        staging.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"run": served.run}}]))
        staging.rename(target)
        try:
            yield served
        finally:
            target.unlink(missing_ok=True)


def scaler(prom_url: str, timeout: float = 5.0, auth: dict[str, str] | None = None,
           **metadata: str) -> PrometheusScaler:
    return PrometheusScaler(ScalerConfig(trigger_type="prometheus", trigger_index=0, timeout_seconds=timeout,
                                         metadata={"serverAddress": prom_url, "threshold": "10", **metadata},
                                         auth_params=auth or {}))


async def eventually(s: PrometheusScaler, want: float, deadline: float = 60.0) -> MetricResult:
    """Prometheus scrapes every second; wait until the value it serves is the one we set."""
    end = time.monotonic() + deadline
    while True:
        result = await s.get_metrics_and_activity(s.metric)
        if result.value == want or time.monotonic() > end:
            return result
        await asyncio.sleep(0.25)


async def test_value_follows_the_scraped_gauge(prom: ServiceInfo, exporter: Exporter) -> None:
    s = scaler(prom.url, query=f'capstan_test_depth{{run="{exporter.run}"}}', activationThreshold="3")
    try:
        exporter.depth = 42
        assert await eventually(s, 42.0) == MetricResult(42.0, True)
        exporter.depth = 3
        assert await eventually(s, 3.0) == MetricResult(3.0, False)  # not above activationThreshold
        exporter.depth = 0
        assert await eventually(s, 0.0) == MetricResult(0.0, False)
    finally:
        await s.aclose()


async def test_several_series_are_an_error_until_aggregated(prom: ServiceInfo, exporter: Exporter) -> None:
    aggregated = scaler(prom.url, query=f'sum(capstan_test_shard{{run="{exporter.run}"}})')
    raw = scaler(prom.url, query=f'capstan_test_shard{{run="{exporter.run}"}}')
    try:
        assert await eventually(aggregated, 3.0) == MetricResult(3.0, True)
        with pytest.raises(ScalerError, match="returned 2 series; it must return one"):
            await raw.get_metrics_and_activity(raw.metric)
    finally:
        await aggregated.aclose()
        await raw.aclose()


async def test_scalar_queries(prom: ServiceInfo) -> None:
    s = scaler(prom.url, query="scalar(vector(7))")
    try:
        assert await s.get_metrics_and_activity(s.metric) == MetricResult(7.0, True)
    finally:
        await s.aclose()


async def test_empty_results_read_as_zero_unless_told_otherwise(prom: ServiceInfo) -> None:
    query = f'capstan_test_absent{{run="{unique()}"}}'
    lenient, strict = scaler(prom.url, query=query), scaler(prom.url, query=query, ignoreNullValues="false")
    try:
        assert await lenient.get_metrics_and_activity(lenient.metric) == MetricResult(0.0, False)
        with pytest.raises(ScalerError, match="returned an empty result"):
            await strict.get_metrics_and_activity(strict.metric)
    finally:
        await lenient.aclose()
        await strict.aclose()


async def test_bad_query_is_an_error(prom: ServiceInfo) -> None:
    s = scaler(prom.url, query="sum(")
    try:
        with pytest.raises(ScalerError, match=r"/api/v1/query answered HTTP 400: .*parse error"):
            await s.get_metrics_and_activity(s.metric)
    finally:
        await s.aclose()


async def test_credentials_headers_and_parameters_reach_the_server() -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    def handle(path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        seen.append((path, headers))
        if headers.get("Authorization") != "Bearer s3cret":
            return 401, "text/plain", b"unauthorized"
        answer = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "5"]}]}}
        return 200, "application/json", json.dumps(answer).encode()

    with http_server(handle) as port:
        url = f"http://127.0.0.1:{port}"
        s = scaler(url, query="up", authModes="bearer", auth={"bearerToken": "s3cret"}, namespace="team-a",
                   customHeaders="X-Scope-OrgID=tenant-1", queryParameters="dedup=false")
        anonymous = scaler(url, query="up")
        try:
            assert await s.get_metrics_and_activity(s.metric) == MetricResult(5.0, True)
            with pytest.raises(ScalerError, match="answered HTTP 401: unauthorized"):
                await anonymous.get_metrics_and_activity(anonymous.metric)
        finally:
            await s.aclose()
            await anonymous.aclose()
    path, headers = seen[0]
    query = parse_qs(urlsplit(path).query)
    assert urlsplit(path).path == "/api/v1/query"
    assert (query["query"], query["namespace"], query["dedup"]) == (["up"], ["team-a"], ["false"])
    assert headers["X-Scope-OrgID"] == "tenant-1"


async def test_unreachable_and_silent_servers() -> None:
    refused = scaler(f"http://127.0.0.1:{closed_port()}", query="up")
    elapsed, error = await timed(refused.get_metrics_and_activity(refused.metric))
    await refused.aclose()
    assert isinstance(error, ScalerError) and "request to http://127.0.0.1" in str(error)
    assert elapsed < 3.0
    with silent_port() as port:
        silent = scaler(f"http://127.0.0.1:{port}", query="up", timeout=1.0)
        elapsed, error = await timed(silent.get_metrics_and_activity(silent.metric))
        await silent.aclose()
    assert isinstance(error, ScalerError)
    assert f"no answer from http://127.0.0.1:{port}/api/v1/query within 1s" in str(error)
    assert elapsed < 3.0
