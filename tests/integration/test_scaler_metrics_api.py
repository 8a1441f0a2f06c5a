"""metrics-api scaler against a real HTTP server this test runs (JSON, YAML, XML, Prometheus text; auth)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
from tests.integration.scaler_support import closed_port, http_server, silent_port, timed

from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError
from capstan.scalers.metrics_api import MetricsApiScaler


@dataclass
class StatsApi:
    """A status API whose queue depth the test sets; /secure/* needs credentials."""

    depth: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def handle(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        self.requests.append((path, headers))
        url = urlsplit(path)
        query = parse_qs(url.query)
        if url.path.startswith("/secure/") and not (
                headers.get("X-API-KEY") == "k1" or query.get("token") == ["k1"]
                or headers.get("Authorization") == "Basic " + base64.b64encode(b"ops:pw").decode()
                or headers.get("Authorization") == "Bearer t0k"):
            return 401, "text/plain", b"who are you?"
        kind = url.path.rsplit("/", 1)[-1]
        if kind == "json":
            body = json.dumps({"data": {"queues": [{"name": "main", "depth": self.depth}]}})
            return 200, "application/json", body.encode()
        if kind == "yaml":
            return 200, "application/yaml", f"queues:\n  main:\n    depth: {self.depth}\n".encode()
        if kind == "xml":
            return 200, "application/xml", f"<stats><queue><depth>{self.depth}</depth></queue></stats>".encode()
        if kind == "prometheus":
            text = f'# TYPE queue_depth gauge\nqueue_depth{{queue="main"}} {self.depth}\nqueue_depth{{queue="x"}} 99\n'
            return 200, "text/plain", text.encode()
        return 404, "text/plain", b"no such page"


@pytest.fixture
def api() -> Iterator[tuple[StatsApi, str]]:
    stats = StatsApi()
    with http_server(stats.handle) as port:
        yield stats, f"http://127.0.0.1:{port}"


def scaler(url: str, timeout: float = 5.0, auth: dict[str, str] | None = None, **metadata: str) -> MetricsApiScaler:
    return MetricsApiScaler(ScalerConfig(trigger_type="metrics-api", trigger_index=0, timeout_seconds=timeout,
                                         metadata={"url": url, "targetValue": "10", **metadata},
                                         auth_params=auth or {}))


async def read(s: MetricsApiScaler) -> MetricResult:
    return await s.get_metrics_and_activity(s.metric)


@pytest.mark.parametrize(("fmt", "location"), [
    ("json", "data.queues.0.depth"),
    ("yaml", "queues.main.depth"),
    ("xml", "queue.depth"),
    ("prometheus", 'queue_depth{queue="main"}'),
])
async def test_value_in_each_format(api: tuple[StatsApi, str], fmt: str, location: str) -> None:
    stats, base = api
    s = scaler(f"{base}/status/{fmt}", format=fmt, valueLocation=location, activationTargetValue="1")
    try:
        assert await read(s) == MetricResult(0.0, False)
        stats.depth = 1
        assert await read(s) == MetricResult(1.0, False)  # not above the activation value
        stats.depth = 37
        assert await read(s) == MetricResult(37.0, True)
    finally:
        await s.aclose()


async def test_connections_are_reused(api: tuple[StatsApi, str]) -> None:
    stats, base = api
    s = scaler(f"{base}/status/json", valueLocation="data.queues.0.depth")
    try:
        for _ in range(3):
            await read(s)
        assert len(stats.requests) == 3
        assert all(h.get("Connection", "keep-alive").lower() == "keep-alive" for _, h in stats.requests)
    finally:
        await s.aclose()


@pytest.mark.parametrize(("auth", "metadata"), [
    ({"apiKey": "k1"}, {"authModes": "apiKey"}),
    ({"apiKey": "k1"}, {"authModes": "apiKey", "method": "query", "keyParamName": "token"}),
    ({"username": "ops", "password": "pw"}, {"authModes": "basic"}),
    ({"bearerToken": "t0k"}, {"authModes": "bearer"}),
])
async def test_authentication_modes(api: tuple[StatsApi, str], auth: dict[str, str],
                                    metadata: dict[str, str]) -> None:
    stats, base = api
    stats.depth = 4
    s = scaler(f"{base}/secure/json", auth=auth, valueLocation="data.queues.0.depth", **metadata)
    try:
        assert await read(s) == MetricResult(4.0, True)
    finally:
        await s.aclose()


async def test_errors_say_what_went_wrong(api: tuple[StatsApi, str]) -> None:
    _, base = api
    cases = [
        (scaler(f"{base}/secure/json", valueLocation="data.queues.0.depth"), "answered HTTP 401: who are you?"),
        (scaler(f"{base}/nowhere", valueLocation="x"), "/nowhere answered HTTP 404"),
        (scaler(f"{base}/status/json", valueLocation="data.queues.3.depth"),
         "'data.queues.3' is not an index of a list of 1"),
        (scaler(f"{base}/status/xml", valueLocation="x"), "the answer is not JSON"),
    ]
    for s, message in cases:
        with pytest.raises(ScalerError, match=message):
            await read(s)
        await s.aclose()


async def test_unreachable_and_silent_servers() -> None:
    refused = scaler(f"http://127.0.0.1:{closed_port()}/m", valueLocation="v")
    elapsed, error = await timed(read(refused))
    await refused.aclose()
    assert isinstance(error, ScalerError) and "request to http://127.0.0.1" in str(error)
    assert elapsed < 3.0
    with silent_port() as port:
        silent = scaler(f"http://127.0.0.1:{port}/m?api_key=secret", valueLocation="v", timeout=1.0)
        elapsed, error = await timed(read(silent))
        await silent.aclose()
    assert isinstance(error, ScalerError)
    assert str(error).endswith(f"no answer from http://127.0.0.1:{port}/m within 1s")  # no query: no secrets
    assert elapsed < 3.0
