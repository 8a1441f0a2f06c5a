"""mysql trigger: DSN and field parsing, metric naming (no I/O)."""

from __future__ import annotations

import pytest

from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.mysql import MySQLScaler, MySQLTarget, parse_dsn
from capstan.scalers.registry import build_scaler


def scaler(auth: dict[str, str] | None = None, env: dict[str, str] | None = None, **metadata: str) -> MySQLScaler:
    values = {"query": "SELECT COUNT(*) FROM tasks", "queryValue": "4", **metadata}
    built = build_scaler(ScalerConfig(trigger_type="mysql", trigger_index=0, metadata=values,
                                      auth_params=auth or {}, resolved_env=env or {}))
    assert isinstance(built, MySQLScaler)
    return built


@pytest.mark.parametrize(("dsn", "target"), [
    ("root:pw@tcp(db:3307)/shop", MySQLTarget("db", 3307, "root", "pw", "shop")),
    ("user:p@ss/w:rd@tcp(10.0.0.1:3306)/app?tls=skip-verify",
     MySQLTarget("10.0.0.1", 3306, "user", "p@ss/w:rd", "app", "skip-verify")),
    ("user@tcp(db)/x", MySQLTarget("db", 3306, "user", "", "x")),
    ("/plain", MySQLTarget("127.0.0.1", 3306, None, "", "plain")),
    ("mysql://u:p%40ss@db:3310/inv", MySQLTarget("db", 3310, "u", "p@ss", "inv")),
])
def test_dsn_forms(dsn: str, target: MySQLTarget) -> None:
    assert parse_dsn(dsn) == target


@pytest.mark.parametrize("dsn", ["no-slash", "user@unix(/tmp/sock)/db", "u@tcp(h:port)/d"])
def test_bad_dsns(dsn: str) -> None:
    with pytest.raises(ValueError):
        parse_dsn(dsn)


def test_connection_string_from_env_names_the_metric_after_its_database() -> None:
    s = scaler(env={"DSN": "u:p@tcp(db:3306)/orders.v2"}, connectionStringFromEnv="DSN")
    assert s.target.database == "orders.v2"
    [spec] = s.metric_specs()
    assert (spec.name, spec.target, spec.activation_target) == ("s0-mysql-orders-v2", 4.0, 0.0)


def test_fields_with_password_from_authentication() -> None:
    s = scaler(auth={"password": "pw"}, host="maria", username="app", dbName="work", activationQueryValue="1.5")
    assert s.target == MySQLTarget("maria", 3306, "app", "pw", "work")
    assert s.metric_specs()[0].activation_target == 1.5
    assert s.server == "maria:3306/work"


@pytest.mark.parametrize(("metadata", "auth", "message"), [
    ({"host": "h", "queryValue": ""}, {}, "metadata.queryValue is required"),
    ({"dbName": "x"}, {}, "metadata.host is required when no connectionString"),
    ({"host": "h", "port": "x"}, {}, "metadata.port: 'x' is not a port number"),
    ({}, {"connectionString": "nonsense"}, "connectionString is not a MySQL DSN"),
    ({}, {"connectionString": "u@tcp(h:1)/d?tls=custom"}, "tls=custom is not supported"),
])
def test_bad_metadata_is_rejected(metadata: dict[str, str], auth: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match=message):
        scaler(auth=auth, **metadata)
