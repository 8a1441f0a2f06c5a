"""redis trigger: connection and list metadata as KEDA reads them (no I/O)."""

from __future__ import annotations

import pytest

from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.redis import RedisConnection, RedisScaler, parse_connection
from capstan.scalers.registry import build_scaler


def config(auth: dict[str, str] | None = None, env: dict[str, str] | None = None, **metadata: str) -> ScalerConfig:
    return ScalerConfig(trigger_type="redis", trigger_index=2, trigger_name="jobs", metadata=metadata,
                        auth_params=auth or {}, resolved_env=env or {})


def test_defaults_follow_keda() -> None:
    scaler = build_scaler(config(address="cache:6380", listName="jobs.high"))
    assert isinstance(scaler, RedisScaler)
    [spec] = scaler.metric_specs()
    assert (spec.name, spec.target, spec.activation_target) == ("s2-redis-jobs-high", 5.0, 0.0)
    assert scaler.connection == RedisConnection(host="cache", port=6380)
    assert scaler.is_push


def test_thresholds_from_metadata() -> None:
    scaler = build_scaler(config(address="cache:6380", listName="q", listLength="20", activationListLength="3"))
    [spec] = scaler.metric_specs()
    assert (spec.target, spec.activation_target) == (20.0, 3.0)


def test_host_and_port_and_database() -> None:
    conn = parse_connection(config(host="10.0.0.5", port="7000", databaseIndex="3"))
    assert (conn.host, conn.port, conn.database, conn.address) == ("10.0.0.5", 7000, 3, "10.0.0.5:7000")
    assert parse_connection(config(host="cache")).port == 6379


def test_first_of_several_addresses_and_ipv6() -> None:
    assert parse_connection(config(addresses="a:1, b:2")).address == "a:1"
    assert parse_connection(config(address="[::1]:6379")).host == "::1"


def test_credentials_from_authentication_or_environment() -> None:
    conn = parse_connection(config(auth={"username": "scaler", "password": "s3cret"}, address="r:6379"))
    assert (conn.username, conn.password) == ("scaler", "s3cret")
    conn = parse_connection(config(env={"REDIS_PASSWORD": "fromenv"}, address="r:6379",
                                   passwordFromEnv="REDIS_PASSWORD"))
    assert conn.password == "fromenv"
    conn = parse_connection(config(env={"REDIS_ADDR": "envhost:1234"}, addressFromEnv="REDIS_ADDR"))
    assert conn.address == "envhost:1234"


def test_tls_from_metadata_or_authentication_not_both() -> None:
    assert parse_connection(config(address="r:1", enableTLS="true")).tls
    assert parse_connection(config(auth={"tls": "enable", "ca": "PEM"}, address="r:1")).tls
    assert not parse_connection(config(auth={"tls": "disable"}, address="r:1")).tls
    with pytest.raises(ScalerConfigError, match="not both"):
        parse_connection(config(auth={"tls": "enable"}, address="r:1", enableTLS="true"))
    with pytest.raises(ScalerConfigError, match="'yes please' is not enable or disable"):
        parse_connection(config(auth={"tls": "yes please"}, address="r:1"))


@pytest.mark.parametrize(("metadata", "message"), [
    ({"listName": "q"}, r'redis trigger "jobs" \(triggers\[2\]\): metadata.address \(host:port\) or metadata.host'),
    ({"address": "r:1"}, "metadata.listName is required"),
    ({"address": "nohostport", "listName": "q"}, "'nohostport' must be host:port"),
    ({"address": "r:99999", "listName": "q"}, "'99999' is not a port number"),
    ({"address": "r:1", "listName": "q", "listLength": "0"}, "listLength must be greater than 0"),
    ({"address": "r:1", "listName": "q", "listLength": "five"}, "metadata.listLength: 'five' is not an integer"),
    ({"address": "r:1", "listName": "q", "databaseIndex": "-1"}, "databaseIndex must not be negative"),
    ({"address": "r:1", "listName": "q", "passwordFromEnv": "NOPE"}, "'NOPE', which is not set"),
])
def test_bad_metadata_is_rejected(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match=message):
        build_scaler(config(**metadata))
