"""postgresql trigger: connection parameters, targets and result conversion (no I/O)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from psycopg.conninfo import conninfo_to_dict

from capstan.scalers.base import ScalerConfig, ScalerConfigError, ScalerError
from capstan.scalers.postgresql import PostgreSQLScaler, as_number
from capstan.scalers.registry import build_scaler

FIELDS = {"host": "db.local", "port": "5433", "userName": "keda", "dbName": "shop", "sslmode": "disable"}


def scaler(auth: dict[str, str] | None = None, env: dict[str, str] | None = None, **metadata: str) -> PostgreSQLScaler:
    values = {"query": "SELECT count(*) FROM jobs", "targetQueryValue": "10", **metadata}
    built = build_scaler(ScalerConfig(trigger_type="postgresql", trigger_index=3, metadata=values,
                                      auth_params=auth or {}, resolved_env=env or {}))
    assert isinstance(built, PostgreSQLScaler)
    return built


def test_fields_make_a_connection_string_with_the_password_from_authentication() -> None:
    s = scaler(auth={"password": "it's secret"}, **FIELDS)
    assert conninfo_to_dict(s.conninfo) == {"host": "db.local", "port": "5433", "user": "keda", "dbname": "shop",
                                            "sslmode": "disable", "password": "it's secret"}
    assert s.server == "db.local:5433/shop"
    [spec] = s.metric_specs()
    assert (spec.name, spec.target, spec.activation_target) == ("s3-postgresql", 10.0, 0.0)


def test_connection_from_env_or_authentication_wins() -> None:
    url = "postgresql://u:p@pg:5432/app?sslmode=disable"
    assert scaler(env={"PG": url}, connectionFromEnv="PG").conninfo == url
    assert scaler(auth={"connection": "host=a dbname=b"}, **FIELDS).conninfo == "host=a dbname=b"


def test_fields_may_come_from_the_authentication() -> None:
    s = scaler(auth={"host": "secret-host", "port": "1", "userName": "u", "dbName": "d", "sslmode": "require"})
    assert conninfo_to_dict(s.conninfo)["host"] == "secret-host"


def test_thresholds() -> None:
    s = scaler(targetQueryValue="2.5", activationTargetQueryValue="1", **FIELDS)
    assert (s.target, s.activation_target) == (2.5, 1.0)


@pytest.mark.parametrize(("metadata", "message"), [
    ({**FIELDS, "targetQueryValue": ""}, "targetQueryValue is required and must not be 0"),
    ({**FIELDS, "targetQueryValue": "0"}, "targetQueryValue is required and must not be 0"),
    ({**FIELDS, "query": ""}, "metadata.query is required"),
    ({k: v for k, v in FIELDS.items() if k != "sslmode"}, "metadata.sslmode is required when no connection"),
    ({k: v for k, v in FIELDS.items() if k != "host"}, "metadata.host is required"),
    ({**FIELDS, "activationTargetQueryValue": "some"}, "activationTargetQueryValue: 'some' is not a number"),
])
def test_bad_metadata_is_rejected(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match=message):
        scaler(**metadata)


def test_password_is_never_in_the_metadata() -> None:
    s = scaler(**FIELDS, password="in-plain-sight")
    assert "password" not in conninfo_to_dict(s.conninfo)


def test_first_column_must_be_one_number() -> None:
    assert as_number("t", "q", (Decimal("4.5"), "ignored")) == 4.5
    assert as_number("t", "q", (7,)) == 7.0
    assert as_number("t", "q", ("12",)) == 12.0
    with pytest.raises(ScalerError, match="returned no rows"):
        as_number("t", "q", None)
    with pytest.raises(ScalerError, match="returned NULL"):
        as_number("t", "q", (None,))
    with pytest.raises(ScalerError, match="returned 'many', not a number"):
        as_number("t", "q", ("many",))
