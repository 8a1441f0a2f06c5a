"""metrics-api trigger: metadata and finding the value in JSON, YAML, XML and Prometheus text (no I/O)."""

from __future__ import annotations

import pytest

from capstan.scalers._http import apply_auth
from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.metrics_api import (
    MetricsApiScaler,
    ValueLocationError,
    parse_selector,
    split_path,
    value_from_body,
)
from capstan.scalers.registry import build_scaler


def scaler(auth: dict[str, str] | None = None, **metadata: str) -> MetricsApiScaler:
    values = {"url": "http://api:8080/stats", "valueLocation": "data.items.0.count", "targetValue": "10",
              **metadata}
    built = build_scaler(ScalerConfig(trigger_type="metrics-api", trigger_index=0, metadata=values,
                                      auth_params=auth or {}))
    assert isinstance(built, MetricsApiScaler)
    return built


def test_spec_uses_keda_metric_name() -> None:
    [spec] = scaler(activationTargetValue="2").metric_specs()
    assert (spec.name, spec.target, spec.activation_target) == ("s0-metric-api-data-items-0-count", 10.0, 2.0)


JSON = b'{"data": {"items": [{"count": 7}, {"count": "1.5k"}], "a.b": 3, "flag": true, "name": "x"}}'


@pytest.mark.parametrize(("location", "value"), [
    ("data.items.0.count", 7.0),
    ("data.items.1.count", 1500.0),
    ("data.items.#", 2.0),
    ("data.a\\.b", 3.0),
])
def test_json_paths(location: str, value: float) -> None:
    assert value_from_body(JSON, location, "json") == value


@pytest.mark.parametrize(("location", "message"), [
    ("data.missing", "'data.missing' not found"),
    ("data.items.5.count", "'data.items.5' is not an index of a list of 2"),
    ("data.items", "must point to a number, got a list"),
    ("data", "must point to a number, got an object"),
    ("data.flag", "points to a boolean"),
    ("data.name", "points to 'x', which is not a number"),
    ("data.items.0.count.deeper", "its parent is a value"),
])
def test_json_path_errors(location: str, message: str) -> None:
    with pytest.raises(ValueLocationError, match=message):
        value_from_body(JSON, location, "json")


def test_split_path_keeps_escaped_dots() -> None:
    assert split_path("a\\.b.c.0") == ["a.b", "c", "0"]


def test_yaml() -> None:
    body = b"queue:\n  depth: 12\n  shards:\n    - size: 3\n    - size: 4\n"
    assert value_from_body(body, "queue.depth", "yaml") == 12.0
    assert value_from_body(body, "queue.shards.1.size", "yaml") == 4.0


def test_xml() -> None:
    body = (b"<stats><queue><depth>9</depth></queue>"
            b"<worker><busy>1</busy></worker><worker><busy>5</busy></worker></stats>")
    assert value_from_body(body, "queue.depth", "xml") == 9.0
    assert value_from_body(body, "stats.queue.depth", "xml") == 9.0
    assert value_from_body(body, "worker.1.busy", "xml") == 5.0
    with pytest.raises(ValueLocationError, match=r"'worker' not found"):
        value_from_body(body, "worker.2.busy", "xml")


PROM = b"""# HELP queue_depth Messages waiting.
# TYPE queue_depth gauge
queue_depth{queue="high"} 17
queue_depth{queue="low"} 3
# TYPE jobs_total counter
jobs_total 120"""


def test_prometheus_text() -> None:
    assert value_from_body(PROM, 'queue_depth{queue="low"}', "prometheus") == 3.0
    assert value_from_body(PROM, "queue_depth", "prometheus") == 17.0
    assert value_from_body(PROM, "jobs_total", "prometheus") == 120.0
    with pytest.raises(ValueLocationError, match="metric 'absent' not found"):
        value_from_body(PROM, "absent", "prometheus")
    with pytest.raises(ValueLocationError, match="no 'queue_depth' sample matches"):
        value_from_body(PROM, 'queue_depth{queue="mid"}', "prometheus")


def test_selector_parsing() -> None:
    assert parse_selector('m{a="1", b="x\\"y"}') == ("m", {"a": "1", "b": 'x"y'})
    with pytest.raises(ValueLocationError, match="only label"):
        parse_selector('m{a=~"1.*"}')


def test_api_key_in_header_or_query() -> None:
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    apply_auth(scaler(auth={"apiKey": "k"}, authModes="apiKey").http.auth, headers, params)
    assert (headers, params) == ({"X-API-KEY": "k"}, {})
    headers, params = {}, {}
    query = scaler(auth={"apiKey": "k"}, authModes="apiKey", method="query", keyParamName="token")
    apply_auth(query.http.auth, headers, params)
    assert (headers, params) == ({}, {"token": "k"})


@pytest.mark.parametrize(("metadata", "message"), [
    ({"targetValue": ""}, "targetValue is required and must not be 0"),
    ({"url": "ftp://x"}, "must start with http:// or https://"),
    ({"valueLocation": ""}, "metadata.valueLocation is required"),
    ({"format": "csv"}, "metadata.format: 'csv' is not one of json, xml, yaml, prometheus"),
    ({"format": "prometheus", "valueLocation": "bad selector{"}, "is not a metric selector"),
    ({"aggregateFromKubeServiceEndpoints": "true"}, "aggregateFromKubeServiceEndpoints is not supported"),
    ({"authModes": "apiKey"}, "authModes apiKey needs apiKey"),
    ({"authModes": "apiKey", "apiKey": "k", "method": "cookie"}, "method: 'cookie' is not one of header, query"),
])
def test_bad_metadata_is_rejected(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match=message):
        scaler(**metadata)
