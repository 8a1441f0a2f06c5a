"""prometheus trigger: metadata, authentication and reading query answers (no I/O)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from capstan.scalers._http import apply_auth
from capstan.scalers.base import ScalerConfig, ScalerConfigError, ScalerError
from capstan.scalers.prometheus import PrometheusScaler
from capstan.scalers.registry import build_scaler


def scaler(auth: dict[str, str] | None = None, **metadata: str) -> PrometheusScaler:
    values = {"serverAddress": "http://prom:9090/", "query": "sum(queue_depth)", "threshold": "100", **metadata}
    built = build_scaler(ScalerConfig(trigger_type="prometheus", trigger_index=1, metadata=values,
                                      auth_params=auth or {}, as_of=lambda: 1_780_000_000.0))
    assert isinstance(built, PrometheusScaler)
    return built


def vector(*values: Any) -> bytes:
    result = [{"metric": {}, "value": [1.0, v]} for v in values]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def test_spec_and_request_parameters() -> None:
    s = scaler(activationThreshold="5.5", namespace="team-a", queryParameters="dedup=true, partial=false")
    [spec] = s.metric_specs()
    assert (spec.name, spec.target, spec.activation_target) == ("s1-prometheus", 100.0, 5.5)
    assert s.server_address == "http://prom:9090"
    assert s._params() == {"query": "sum(queue_depth)", "time": "2026-05-28T20:26:40Z", "namespace": "team-a",
                           "dedup": "true", "partial": "false"}


def test_custom_headers_and_timeout() -> None:
    s = scaler(customHeaders="X-Scope-OrgID=tenant1, X-Other = two", timeout="1500")
    assert dict(s.http.headers) == {"X-Scope-OrgID": "tenant1", "X-Other": "two"}
    assert s.http.timeout == 1.5
    assert scaler(timeout="250ms").http.timeout == 0.25
    assert scaler().http.timeout == 3.0


def test_reads_a_one_element_vector_or_a_scalar() -> None:
    s = scaler()
    assert s._value(vector("42.5")) == 42.5
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}}
    assert s._value(json.dumps(scalar).encode()) == 7.0


def test_null_values_read_as_zero_by_default() -> None:
    s = scaler()
    assert s._value(vector()) == 0.0
    assert s._value(vector("NaN")) == 0.0
    assert s._value(vector("+Inf")) == 0.0


def test_null_values_are_errors_when_not_ignored() -> None:
    s = scaler(ignoreNullValues="false")
    with pytest.raises(ScalerError, match="returned an empty result"):
        s._value(vector())
    with pytest.raises(ScalerError, match="returned NaN"):
        s._value(vector("NaN"))


def test_several_series_and_other_shapes_are_errors() -> None:
    s = scaler()
    with pytest.raises(ScalerError, match="returned 2 series; it must return one"):
        s._value(vector("1", "2"))
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    with pytest.raises(ScalerError, match="returned a matrix"):
        s._value(json.dumps(matrix).encode())
    with pytest.raises(ScalerError, match="did not answer a Prometheus query result"):
        s._value(b"<html>login</html>")


def test_bearer_and_basic_authentication() -> None:
    headers: dict[str, str] = {}
    apply_auth(scaler(auth={"bearerToken": "tok"}, authModes="bearer").http.auth, headers, {})
    assert headers == {"Authorization": "Bearer tok"}
    headers = {}
    apply_auth(scaler(auth={"username": "u", "password": "p"}, authModes="basic").http.auth, headers, {})
    assert headers == {"Authorization": "Basic dTpw"}
    headers = {}
    custom = scaler(auth={"authModes": "custom", "customAuthHeader": "X-Key", "customAuthValue": "v"})
    apply_auth(custom.http.auth, headers, {})
    assert headers == {"X-Key": "v"}


@pytest.mark.parametrize(("metadata", "auth", "message"), [
    ({"serverAddress": ""}, {}, "metadata.serverAddress is required"),
    ({"serverAddress": "prom:9090"}, {}, "must start with http:// or https://"),
    ({"threshold": ""}, {}, "metadata.threshold is required"),
    ({"ignoreNullValues": "maybe"}, {}, "ignoreNullValues: 'maybe' is not true or false"),
    ({"customHeaders": "novalue"}, {}, "customHeaders: expected key=value, got 'novalue'"),
    ({"timeout": "soon"}, {}, "metadata.timeout: 'soon' is not a duration"),
    ({"authModes": "bearer"}, {}, "authModes bearer needs bearerToken"),
    ({"authModes": "basic"}, {}, "authModes basic needs username"),
    ({"authModes": "bearer,basic"}, {"bearerToken": "t", "username": "u"}, "bearer and basic cannot be combined"),
    ({"authModes": "oauth"}, {}, "'oauth' is not supported"),
    ({"authModes": "kerberos"}, {}, "'kerberos' is not one of"),
    ({"awsRegion": "eu-west-1"}, {}, "SigV4"),
])
def test_bad_metadata_is_rejected(metadata: dict[str, str], auth: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match=message):
        scaler(auth=auth, **metadata)
