"""rabbitmq trigger metadata: protocols, modes, defaults and KEDA's per-mode activation rules."""

from __future__ import annotations

import pytest

from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.rabbitmq import (
    QueueStats,
    RabbitMQScaler,
    RabbitMQSettings,
    aggregate,
    metric_and_activity,
    parse_settings,
)


def config(auth: dict[str, str] | None = None, **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type="rabbitmq", trigger_index=0, metadata=metadata, auth_params=auth or {})


def test_amqp_defaults_to_queue_length_20() -> None:
    s = parse_settings(config(host="amqp://guest:guest@localhost:5672/", queueName="jobs"))
    assert (s.protocol, s.mode, s.value, s.activation_value, s.vhost) == ("amqp", "QueueLength", 20.0, 0.0, "/")
    assert s.url == "amqp://guest:guest@localhost:5672/%2F"


def test_http_protocol_from_scheme_and_vhost_from_path() -> None:
    s = parse_settings(config(host="http://u:p@rabbit:15672/team", queueName="jobs", mode="MessageRate", value="5"))
    assert (s.protocol, s.vhost, s.mode, s.value) == ("http", "team", "MessageRate", 5.0)


def test_vhost_name_overrides_the_path() -> None:
    s = parse_settings(config(host="amqp://rabbit/team", queueName="q", vhostName="other"))
    assert s.vhost == "other" and s.url.endswith("/other")


def test_host_from_trigger_authentication_and_credentials_from_auth_params() -> None:
    s = parse_settings(config({"host": "amqp://rabbit:5672/", "username": "bob", "password": "s3cret/"},
                              queueName="q"))
    assert s.url == "amqp://bob:s3cret%2F@rabbit:5672/%2F"


def test_metric_name_and_spec() -> None:
    scaler = RabbitMQScaler(config(host="amqp://rabbit/", queueName="jobs", queueLength="7", activationValue="2"))
    [spec] = scaler.metric_specs()
    assert (spec.name, spec.target, spec.activation_target) == ("s0-rabbitmq-jobs", 7.0, 2.0)


@pytest.mark.parametrize(("metadata", "message"), [
    ({"host": "redis://x", "queueName": "q"}, "cannot tell the protocol"),
    ({"host": "amqp://x", "queueName": "q", "useRegex": "true"}, "useRegex needs protocol http"),
    ({"host": "amqp://x", "queueName": "q", "excludeUnacknowledged": "true"},
     "excludeUnacknowledged needs protocol http"),
    ({"host": "amqp://x", "queueName": "q", "mode": "MessageRate", "value": "1"}, "mode MessageRate needs protocol"),
    ({"host": "http://x", "queueName": "q", "mode": "QueueLength"}, "metadata.value is required with mode"),
    ({"host": "http://x", "queueName": "q", "value": "3"}, "metadata.mode is required"),
    ({"host": "http://x", "queueName": "q", "queueLength": "3", "mode": "QueueLength"}, "deprecated"),
    ({"host": "http://x", "queueName": "q", "mode": "Sideways", "value": "1"}, "is not one of"),
    ({"host": "http://x", "queueName": "q", "mode": "QueueLength", "value": "0"}, "greater than 0"),
    ({"host": "http://x", "queueName": "q", "operation": "median", "useRegex": "true"}, "is not one of"),
    ({"host": "amqp://x", "queueName": "q", "timeout": "1000"}, "protocol http only"),
    ({"host": "amqp://x"}, "metadata.queueName is required"),
    ({"queueName": "q"}, "metadata.host is required"),
])
def test_bad_metadata_names_the_field(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match="rabbitmq trigger") as info:
        parse_settings(config(**metadata))
    assert message in str(info.value)


def test_http_timeout_is_in_milliseconds() -> None:
    assert parse_settings(config(host="http://x", queueName="q", timeout="1500")).timeout == 1.5


def _settings(mode: str, activation: str = "0") -> RabbitMQSettings:
    return parse_settings(config(host="http://x", queueName="q", mode=mode, value="10", activationValue=activation))


def test_queue_length_activation_is_strictly_greater() -> None:
    s = _settings("QueueLength", "3")
    assert metric_and_activity(s, QueueStats(3)).active is False
    assert metric_and_activity(s, QueueStats(4)).active is True


def test_message_rate_is_active_on_rate_or_backlog() -> None:
    s = _settings("MessageRate", "1")
    assert metric_and_activity(s, QueueStats(messages=5, publish_rate=0)).value == 0
    assert metric_and_activity(s, QueueStats(messages=5, publish_rate=0)).active is True
    assert metric_and_activity(s, QueueStats(messages=0, publish_rate=0.5)).active is False


def test_published_to_delivered_ratio_without_deliveries_is_the_activation_value() -> None:
    s = _settings("PublishedToDeliveredRatio", "2")
    result = metric_and_activity(s, QueueStats(messages=0, publish_rate=4, deliver_rate=0))
    assert (result.value, result.active) == (2.0, True)
    assert metric_and_activity(s, QueueStats(0, publish_rate=6, deliver_rate=2)).value == 3.0


def test_expected_consumption_time() -> None:
    s = _settings("ExpectedQueueConsumptionTime", "5")
    assert metric_and_activity(s, QueueStats(0, 1, 1)).value == 0.0
    assert metric_and_activity(s, QueueStats(20, publish_rate=2, deliver_rate=2)).value == 10.0
    stalled = metric_and_activity(s, QueueStats(3, publish_rate=0, deliver_rate=0))
    assert (stalled.value, stalled.active) == (5.0, True)


def test_regex_aggregation() -> None:
    assert aggregate("sum", [1, 2, 3]) == 6
    assert aggregate("max", [1, 5, 3]) == 5
    assert aggregate("avg", [1, 2, 3]) == 2
    assert aggregate("avg", []) == 0
