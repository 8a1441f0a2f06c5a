"""external / external-push trigger metadata and the wire format of externalscaler.proto."""

from __future__ import annotations

import pytest

from capstan.scalers._grpc import externalscaler_pb2 as pb
from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.external import (
    ExternalPushScaler,
    ExternalScaler,
    indexed_metric_name,
    metric_value,
    parse_settings,
    spec_target,
    strip_index,
)
from capstan.scalers.registry import build_scaler


def config(trigger_type: str = "external", auth: dict[str, str] | None = None, **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type=trigger_type, trigger_index=2, metadata={"scalerAddress": "svc:6000", **metadata},
                        auth_params=auth or {}, scalable_name="app", namespace="team")


def test_registry_builds_both_types() -> None:
    assert type(build_scaler(config())) is ExternalScaler
    push = build_scaler(config("external-push"))
    assert type(push) is ExternalPushScaler and push.is_push


def test_all_metadata_is_passed_to_the_server() -> None:
    scaler = ExternalScaler(config(queue="jobs", threshold="3"))
    ref = scaler.scaled_object_ref()
    assert (ref.name, ref.namespace) == ("app", "team")
    assert dict(ref.scalerMetadata) == {"scalerAddress": "svc:6000", "queue": "jobs", "threshold": "3"}


def test_tls_settings() -> None:
    assert parse_settings(config()).tls is None
    tls = parse_settings(config(auth={"caCert": "CA", "tlsClientCert": "C", "tlsClientKey": "K"})).tls
    assert tls is not None and (tls.ca, tls.cert, tls.key) == (b"CA", b"C", b"K")
    assert parse_settings(config(enableTLS="true")).tls is not None


@pytest.mark.parametrize(("metadata", "auth", "message"), [
    ({"scalerAddress": ""}, {}, "metadata.scalerAddress is required"),
    ({}, {"tlsClientCert": "C"}, "tlsClientCert and tlsClientKey go together"),
    ({"enableTLS": "true", "unsafeSsl": "true"}, {}, "unsafeSsl is not supported"),
])
def test_bad_metadata(metadata: dict[str, str], auth: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match=r"external trigger \(triggers\[2\]\)") as info:
        parse_settings(config(auth=auth, **metadata))
    assert message in str(info.value)


def test_metric_names_follow_keda() -> None:
    assert indexed_metric_name(2, "queueLength") == "s2-queueLength"
    assert strip_index("s2-queueLength") == "queueLength"
    assert strip_index("queue-length") == "queue-length"


def test_float_fields_win_when_positive() -> None:
    assert spec_target(pb.MetricSpec(metricName="m", targetSize=5)) == 5.0
    assert spec_target(pb.MetricSpec(metricName="m", targetSize=5, targetSizeFloat=2.5)) == 2.5
    assert metric_value(pb.MetricValue(metricName="m", metricValue=7)) == 7.0
    assert metric_value(pb.MetricValue(metricName="m", metricValue=7, metricValueFloat=0.25)) == 0.25


def test_wire_field_numbers_match_keda() -> None:
    def numbers(message: type) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    assert numbers(pb.ScaledObjectRef) == {"name": 1, "namespace": 2, "scalerMetadata": 3}
    assert numbers(pb.IsActiveResponse) == {"result": 1}
    assert numbers(pb.GetMetricSpecResponse) == {"metricSpecs": 1}
    assert numbers(pb.MetricSpec) == {"metricName": 1, "targetSize": 2, "targetSizeFloat": 3}
    assert numbers(pb.GetMetricsRequest) == {"scaledObjectRef": 1, "metricName": 2}
    assert numbers(pb.GetMetricsResponse) == {"metricValues": 1}
    assert numbers(pb.MetricValue) == {"metricName": 1, "metricValue": 2, "metricValueFloat": 3}
    service = pb.DESCRIPTOR.services_by_name["ExternalScaler"]
    assert service.full_name == "externalscaler.ExternalScaler"
    assert {m.name: m.server_streaming for m in service.methods} == {
        "IsActive": False, "StreamIsActive": True, "GetMetricSpec": False, "GetMetrics": False}
