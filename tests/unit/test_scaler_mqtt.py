"""mqtt trigger metadata (Capstan's own scaler): gauge and brokerStat modes, payload parsing."""

from __future__ import annotations

import pytest

from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.mqtt import MQTTScaler, parse_number, parse_settings


def config(auth: dict[str, str] | None = None, **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type="mqtt", trigger_index=0, metadata={"host": "mqtt://broker", **metadata},
                        auth_params=auth or {})


def test_gauge_defaults() -> None:
    s = parse_settings(config(topic="jobs/backlog", value="5"))
    assert (s.hostname, s.port, s.mode, s.topic, s.value, s.activation_value, s.tls) == (
        "broker", 1883, "gauge", "jobs/backlog", 5.0, 0.0, None)
    assert MQTTScaler(config(topic="jobs/backlog", value="5")).metric_specs()[0].name == "s0-mqtt-jobs-backlog"


def test_broker_stat_mode() -> None:
    s = parse_settings(config(mode="brokerStat", value="100"))
    assert s.topic == "$SYS/broker/store/messages/count"
    assert parse_settings(config(mode="brokerStat", stat="load/messages/received/1min", value="1")).topic == (
        "$SYS/broker/load/messages/received/1min")
    assert MQTTScaler(config(mode="brokerStat", value="1")).metric_specs()[0].name == "s0-mqtt-sys-store-messages-count"


def test_host_forms_and_credentials() -> None:
    s = parse_settings(config({"username": "u", "password": "p"}, host="broker.example:1884", topic="t", value="1"))
    assert (s.hostname, s.port, s.username, s.password) == ("broker.example", 1884, "u", "p")
    tls = parse_settings(config(host="mqtts://broker", topic="t", value="1"))
    assert tls.port == 8883 and tls.tls is not None


@pytest.mark.parametrize(("metadata", "message"), [
    ({"mode": "sharedSubscription", "value": "1"}, "does not expose how many messages wait"),
    ({"value": "1"}, "metadata.topic is required"),
    ({"topic": "jobs/+", "value": "1"}, "cannot have wildcards"),
    ({"topic": "t"}, "metadata.value is required"),
    ({"topic": "t", "value": "0"}, "greater than 0"),
    ({"host": "http://broker", "topic": "t", "value": "1"}, "is not mqtt://"),
    ({"mode": "queue", "value": "1"}, "is not one of gauge, brokerStat"),
])
def test_bad_metadata(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match="mqtt trigger") as info:
        parse_settings(config(**metadata))
    assert message in str(info.value)


def test_payload_numbers() -> None:
    assert parse_number(b"42") == 42
    assert parse_number(b" 3.5\n") == 3.5
    assert parse_number(b"1234 seconds") == 1234
    assert parse_number(b"") == 0
    with pytest.raises(ValueError):
        parse_number(b"many")
