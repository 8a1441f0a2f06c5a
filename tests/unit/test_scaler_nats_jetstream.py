"""nats-jetstream trigger metadata and reading a /jsz document."""

from __future__ import annotations

from typing import Any

import pytest

from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.nats_jetstream import (
    NATSJetStreamScaler,
    consumer_lag,
    consumer_leader,
    find_consumer,
    parse_settings,
)


def config(**metadata: str) -> ScalerConfig:
    base = {"natsServerMonitoringEndpoint": "nats:8222", "account": "$G", "stream": "orders", "consumer": "workers"}
    return ScalerConfig(trigger_type="nats-jetstream", trigger_index=0, metadata={**base, **metadata})


def jsz(cluster_size: int = 1, leader: str | None = None) -> dict[str, Any]:
    consumer: dict[str, Any] = {"name": "workers", "num_pending": 7, "num_ack_pending": 2}
    if leader:
        consumer["cluster"] = {"leader": leader}
    return {"server_name": "n1", "meta_cluster": {"cluster_size": cluster_size},
            "account_details": [{"name": "$G", "id": "$G", "stream_detail": [
                {"name": "other", "consumer_detail": []},
                {"name": "orders", "config": {"subjects": ["orders.*"]}, "consumer_detail": [consumer]}]}]}


def test_defaults_and_metric() -> None:
    s = parse_settings(config())
    assert (s.lag_threshold, s.activation_lag_threshold, s.use_https) == (10.0, 0.0, False)
    assert s.jsz_url() == "http://nats:8222/jsz"
    assert parse_settings(config(useHttps="true")).jsz_url("n2.nats:8222") == "https://n2.nats:8222/jsz"
    assert NATSJetStreamScaler(config()).metric_specs()[0].name == "s0-nats-jetstream-orders"


def test_account_id_is_accepted() -> None:
    metadata = {"natsServerMonitoringEndpoint": "n:8222", "accountID": "ACC", "stream": "s", "consumer": "c"}
    assert parse_settings(ScalerConfig("nats-jetstream", 0, metadata)).account == "ACC"


@pytest.mark.parametrize(("metadata", "message"), [
    ({"natsServerMonitoringEndpoint": "http://nats:8222"}, "without a scheme"),
    ({"account": ""}, "metadata.account is required"),
    ({"stream": ""}, "metadata.stream is required"),
    ({"lagThreshold": "0"}, "lagThreshold must be greater than 0"),
    ({"activationLagThreshold": "-2"}, "must be 0 or more"),
])
def test_bad_metadata(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match="nats-jetstream trigger") as info:
        parse_settings(config(**metadata))
    assert message in str(info.value)


def test_lag_is_pending_plus_ack_pending() -> None:
    stream, consumer = find_consumer(jsz(), parse_settings(config()))
    assert stream["config"]["subjects"] == ["orders.*"]
    assert consumer_lag(consumer) == 9


@pytest.mark.parametrize(("overrides", "message"), [
    ({"consumer": "nobody"}, "consumer 'nobody' not found in stream 'orders'"),
    ({"stream": "nothing"}, "stream 'nothing' not found"),
    ({"account": "ACC"}, "account 'ACC' not found"),
])
def test_missing_names(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(LookupError, match=message):
        find_consumer(jsz(), parse_settings(config(**overrides)))


def test_leader_only_in_a_cluster() -> None:
    s = parse_settings(config())
    assert consumer_leader(jsz(1, "n2"), find_consumer(jsz(1, "n2"), s)[1]) is None
    assert consumer_leader(jsz(3, "n2"), find_consumer(jsz(3, "n2"), s)[1]) == "n2"
