"""``postgresql``: the number a SQL query returns (KEDA's ``postgresql_scaler.go``).

Connection: ``connection`` (a libpq connection string or ``postgresql://`` URL) from the
TriggerAuthentication or the target's environment (``connectionFromEnv``); otherwise ``host``,
``port``, ``userName``, ``dbName``, ``sslmode`` (all required, as in KEDA; metadata or
TriggerAuthentication) and ``password`` (TriggerAuthentication or ``passwordFromEnv``).

Value: the first column of the first row of ``query``, which must be a number (NULL, no row or a
non-numeric value is an error). Target ``targetQueryValue`` (required, not 0); active when
``value > activationTargetQueryValue`` (default 0). One connection per scaler, in autocommit, with
the server-side ``statement_timeout`` set to the scaler timeout; it is dropped after any error and
made again on the next read. Not supported: Azure workload identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from capstan.scalers import _metadata as md
from capstan.scalers.base import MetricResult, MetricSpec, Scaler, ScalerConfig, ScalerConfigError, ScalerError
from capstan.scalers.registry import register

CONNECTION_SOURCES = md.Source(metadata=False, auth=True, env=True)
FIELD_SOURCES = md.Source(metadata=True, auth=True, env=False)
PASSWORD_SOURCES = md.Source(metadata=False, auth=True, env=True)


def as_number(label: str, what: str, row: Any) -> float:
    """The first column of a result row as a float; errors say what came back instead."""
    if row is None:
        raise ScalerError(f"{label}: {what} returned no rows; it must return one number")
    value = row[0] if len(row) else None
    if value is None:
        raise ScalerError(f"{label}: {what} returned NULL; it must return one number (use COALESCE(..., 0))")
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | Decimal):
        number = float(value)
    else:
        try:
            number = float(str(value))
        except ValueError:
            raise ScalerError(f"{label}: {what} returned {value!r}, not a number") from None
    if math.isnan(number) or math.isinf(number):
        raise ScalerError(f"{label}: {what} returned {number}, not a finite number")
    return number


def build_conninfo(config: ScalerConfig) -> str:
    connection = md.raw(config, "connection", CONNECTION_SOURCES)
    if connection:
        return connection
    fields: dict[str, str] = {}
    for name, keyword in (("host", "host"), ("port", "port"), ("userName", "user"), ("dbName", "dbname"),
                          ("sslmode", "sslmode")):
        value = md.raw(config, name, FIELD_SOURCES)
        if not value:
            raise ScalerConfigError(f"{config.label}: metadata.{name} is required when no connection string "
                                    "is given (connection in the TriggerAuthentication or connectionFromEnv)")
        fields[keyword] = value
    password = md.raw(config, "password", PASSWORD_SOURCES)
    if password:
        fields["password"] = password
    try:
        return make_conninfo(**fields)
    except psycopg.ProgrammingError as exc:
        raise ScalerConfigError(f"{config.label}: connection parameters: {exc}") from exc


@register("postgresql")
class PostgreSQLScaler(Scaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.query = md.required(config, "query")
        self.target = md.number(config, "targetQueryValue", 0.0)
        if self.target == 0:
            raise ScalerConfigError(f"{config.label}: metadata.targetQueryValue is required and must not be 0")
        self.activation_target = md.number(config, "activationTargetQueryValue", 0.0)
        self.conninfo = build_conninfo(config)
        try:
            self.server = self._describe(self.conninfo)
        except psycopg.ProgrammingError as exc:
            raise ScalerConfigError(f"{config.label}: the connection string is not valid: {exc}") from exc
        self.metric = md.metric_name(config)
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def _describe(conninfo: str) -> str:
        """host:port/dbname for messages (never the password)."""
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
        return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=self.metric, target=self.target, activation_target=self.activation_target,
                           target_type=self.config.metric_type)]

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None or self._connection.closed:
            timeout = self.config.timeout_seconds
            connection = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=max(1, math.ceil(timeout)))
            await connection.execute(f"SET statement_timeout = {max(1, int(timeout * 1000))}")
            self._connection = connection
        return self._connection

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(TimeoutError, psycopg.Error, OSError):  # already broken: nothing to release
                await asyncio.wait_for(connection.close(), timeout=1.0)

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        timeout = self.config.timeout_seconds
        async with self._lock:
            try:
                async with asyncio.timeout(timeout):
                    connection = await self._connect()
                    cursor = await connection.execute(self.query)
                    row = await cursor.fetchone()
            except TimeoutError as exc:
                await self._drop()
                raise ScalerError(f"{self.config.label}: PostgreSQL at {self.server} did not answer within "
                                  f"{timeout:g}s") from exc
            except psycopg.OperationalError as exc:
                await self._drop()
                raise ScalerError(f"{self.config.label}: cannot query PostgreSQL at {self.server}: "
                                  f"{str(exc).strip()}") from exc
            except psycopg.Error as exc:
                await self._drop()
                raise ScalerError(f"{self.config.label}: query failed on PostgreSQL at {self.server}: "
                                  f"{str(exc).strip()}") from exc
        value = as_number(self.config.label, "the query", row)
        return MetricResult(value=value, active=value > self.activation_target)

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()
