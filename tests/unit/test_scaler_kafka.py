"""kafka trigger metadata and KEDA's lag rules (invalid offsets, the partition cap)."""

from __future__ import annotations

import pytest

from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.kafka import KafkaScaler, cap_total_lag, parse_settings, partition_lag


def config(auth: dict[str, str] | None = None, **metadata: str) -> ScalerConfig:
    base = {"bootstrapServers": "b1:9092, b2:9092", "consumerGroup": "workers"}
    return ScalerConfig(trigger_type="kafka", trigger_index=1, metadata={**base, **metadata}, auth_params=auth or {})


def test_defaults() -> None:
    s = parse_settings(config(topic="orders"))
    assert s.bootstrap_servers == ["b1:9092", "b2:9092"]
    assert (s.lag_threshold, s.activation_lag_threshold, s.offset_reset_policy) == (10, 0, "latest")
    assert (s.allow_idle_consumers, s.scale_to_zero_on_invalid_offset, s.security_protocol) == (
        False, False, "PLAINTEXT")


def test_metric_names() -> None:
    assert KafkaScaler(config(topic="orders")).metric_specs()[0].name == "s1-kafka-orders"
    [spec] = KafkaScaler(config(lagThreshold="50", activationLagThreshold="3")).metric_specs()
    assert (spec.name, spec.target, spec.activation_target) == ("s1-kafka-workers-topics", 50.0, 3.0)


def test_partition_limitation_ranges() -> None:
    s = parse_settings(config(topic="t", partitionLimitation="1, 2,10-12"))
    assert s.partition_limitation == frozenset({1, 2, 10, 11, 12})


def test_sasl_scram_over_tls() -> None:
    s = parse_settings(config({"sasl": "scram_sha512", "username": "u", "password": "p", "tls": "enable"}, topic="t"))
    assert (s.security_protocol, s.sasl_mechanism, s.username) == ("SASL_SSL", "SCRAM-SHA-512", "u")


@pytest.mark.parametrize(("metadata", "auth", "message"), [
    ({"lagThreshold": "0"}, {}, "lagThreshold must be greater than 0"),
    ({"activationLagThreshold": "-1"}, {}, "activationLagThreshold must be 0 or more"),
    ({"topic": "t", "allowIdleConsumers": "true", "limitToPartitionsWithLag": "true"}, {}, "cannot both be true"),
    ({"limitToPartitionsWithLag": "true"}, {}, "limitToPartitionsWithLag needs metadata.topic"),
    ({"ensureEvenDistributionOfPartitions": "true"}, {}, "needs metadata.topic"),
    ({"partitionLimitation": "1"}, {}, "partitionLimitation needs metadata.topic"),
    ({"topic": "t", "partitionLimitation": "3-1"}, {}, "is not a partition number or range"),
    ({"offsetResetPolicy": "newest"}, {}, "is not one of latest, earliest"),
    ({}, {"sasl": "gssapi"}, "not supported by Capstan"),
    ({}, {"sasl": "plaintext", "username": "u"}, "needs username and password"),
    ({"lagThreshold": "ten"}, {}, "is not an integer"),
])
def test_bad_metadata(metadata: dict[str, str], auth: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match=r"kafka trigger \(triggers\[1\]\)") as info:
        parse_settings(config(auth, **metadata))
    assert message in str(info.value)


def test_invalid_offset_rules() -> None:
    latest = parse_settings(config(topic="t"))
    earliest = parse_settings(config(topic="t", offsetResetPolicy="earliest"))
    zero = parse_settings(config(topic="t", offsetResetPolicy="earliest", scaleToZeroOnInvalidOffset="true"))
    assert partition_lag(latest, -1, 40) == 1
    assert partition_lag(earliest, -1, 40) == 40
    assert partition_lag(zero, -1, 40) == 0
    assert partition_lag(latest, 30, 40) == 10
    assert partition_lag(latest, 30, None) == 0


def test_cap_at_partition_count() -> None:
    s = parse_settings(config(topic="t", lagThreshold="10"))
    assert cap_total_lag(s, 1000, partitions=3, partitions_with_lag=1) == 30
    assert cap_total_lag(s, 25, partitions=3, partitions_with_lag=1) == 25


def test_allow_idle_consumers_lifts_the_cap() -> None:
    s = parse_settings(config(topic="t", lagThreshold="10", allowIdleConsumers="true"))
    assert cap_total_lag(s, 1000, partitions=3, partitions_with_lag=3) == 1000


def test_limit_to_partitions_with_lag() -> None:
    s = parse_settings(config(topic="t", lagThreshold="10", limitToPartitionsWithLag="true"))
    assert cap_total_lag(s, 1000, partitions=6, partitions_with_lag=2) == 20


def test_even_distribution_rounds_up_to_a_factor_of_the_partitions() -> None:
    s = parse_settings(config(topic="t", lagThreshold="10", ensureEvenDistributionOfPartitions="true"))
    assert cap_total_lag(s, 25, partitions=12, partitions_with_lag=12) == 30   # 3 replicas (3 divides 12)
    assert cap_total_lag(s, 45, partitions=12, partitions_with_lag=12) == 60   # 5 -> 6
    assert cap_total_lag(s, 500, partitions=12, partitions_with_lag=12) == 120
