"""``mysql``: the number a SQL query returns from MySQL or MariaDB (KEDA's ``mysql_scaler.go``).

Connection: ``connectionString`` from the TriggerAuthentication or the target's environment
(``connectionStringFromEnv``), in the Go driver's DSN form KEDA uses,
``user:password@tcp(host:3306)/dbname?tls=true`` (a ``mysql://user:password@host:3306/dbname`` URL
is also accepted); otherwise ``host``, ``port`` (3306 when unset), ``username``, ``dbName``
(metadata or TriggerAuthentication) and ``password`` (TriggerAuthentication or ``passwordFromEnv``).

Value: the first column of the first row of ``query``. Target ``queryValue`` (required);
active when ``value > activationQueryValue`` (default 0). Metric ``mysql-<dbName>``; KEDA's
``metricName`` metadata is ignored, as in current KEDA. Not supported: DSN parameters other than
``tls`` (``true``/``skip-verify``), unix sockets.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
import pymysql

from capstan.scalers import _metadata as md
from capstan.scalers.base import MetricResult, MetricSpec, Scaler, ScalerConfig, ScalerConfigError, ScalerError
from capstan.scalers.postgresql import as_number
from capstan.scalers.registry import register

SECRET_SOURCES = md.Source(metadata=False, auth=True, env=True)
FIELD_SOURCES = md.Source(metadata=True, auth=True, env=False)
USERNAME_SOURCES = md.Source(metadata=True, auth=True, env=True)
DEFAULT_PORT = 3306


@dataclass(frozen=True)
class MySQLTarget:
    host: str
    port: int = DEFAULT_PORT
    user: str | None = None
    password: str = ""
    database: str = ""
    tls: str | None = None
    """None, "true" (verified) or "skip-verify"."""


_ADDRESS = re.compile(r"^(?P<net>[a-z0-9]*)(?:\((?P<addr>[^)]*)\))?$")


def parse_dsn(dsn: str) -> MySQLTarget:
    """A Go-driver DSN (``[user[:password]@][tcp[(host:port)]]/dbname[?params]``) or a mysql:// URL,
    split as the Go driver does: at the last ``/``, then at the last ``@`` before it."""
    if dsn.startswith("mysql://"):
        url = urlsplit(dsn)
        params = dict(p.split("=", 1) for p in url.query.split("&") if "=" in p)
        return MySQLTarget(host=url.hostname or "localhost", port=url.port or DEFAULT_PORT,
                           user=unquote(url.username) if url.username else None,
                           password=unquote(url.password or ""), database=url.path.lstrip("/"),
                           tls=params.get("tls"))
    slash = dsn.rfind("/")
    if slash < 0:
        raise ValueError("expected user:password@tcp(host:port)/dbname")
    head, tail = dsn[:slash], dsn[slash + 1:]
    database, _, query = tail.partition("?")
    at = head.rfind("@")
    credentials, address = (head[:at], head[at + 1:]) if at >= 0 else (None, head)
    match = _ADDRESS.match(address)
    if not match:
        raise ValueError(f"{address!r} is not net(address), e.g. tcp(db:3306)")
    if match.group("net") not in ("", "tcp"):
        raise ValueError(f"network {match.group('net')!r} is not supported (use tcp)")
    user, password = None, ""
    if credentials is not None:
        user, _, password = credentials.partition(":")
    addr = match.group("addr") or f"127.0.0.1:{DEFAULT_PORT}"
    host, _, port = addr.rpartition(":") if ":" in addr else (addr, "", str(DEFAULT_PORT))
    if not port.isdigit():
        raise ValueError(f"{port!r} is not a port number")
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    return MySQLTarget(host=host.strip("[]"), port=int(port), user=user or None, password=password,
                       database=database, tls=params.get("tls"))


def parse_target(config: ScalerConfig) -> MySQLTarget:
    dsn = md.raw(config, "connectionString", SECRET_SOURCES)
    if dsn:
        try:
            return parse_dsn(dsn)
        except ValueError as exc:
            raise ScalerConfigError(f"{config.label}: connectionString is not a MySQL DSN: {exc}") from None
    host = md.raw(config, "host", FIELD_SOURCES)
    if not host:
        raise ScalerConfigError(f"{config.label}: metadata.host is required when no connectionString is given "
                                "(in the TriggerAuthentication or connectionStringFromEnv)")
    port_text = md.raw(config, "port", FIELD_SOURCES) or str(DEFAULT_PORT)
    if not port_text.isdigit():
        raise ScalerConfigError(f"{config.label}: metadata.port: {port_text!r} is not a port number")
    return MySQLTarget(host=host, port=int(port_text), user=md.raw(config, "username", USERNAME_SOURCES),
                       password=md.raw(config, "password", SECRET_SOURCES) or "",
                       database=md.raw(config, "dbName", FIELD_SOURCES) or "")


@register("mysql")
class MySQLScaler(Scaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.query = md.required(config, "query")
        self.query_value = md.number(config, "queryValue")
        self.activation_query_value = md.number(config, "activationQueryValue", 0.0)
        self.target = parse_target(config)
        if self.target.tls not in (None, "false", "true", "skip-verify", "preferred"):
            raise ScalerConfigError(f"{config.label}: connectionString: tls={self.target.tls} is not supported "
                                    "(use true or skip-verify)")
        database = self.target.database
        self.metric = md.metric_name(config, "".join("-" if c in "/.:%()" else c for c in database))
        self.server = f"{self.target.host}:{self.target.port}/{database}"
        self._connection: aiomysql.Connection | None = None
        self._lock = asyncio.Lock()

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=self.metric, target=self.query_value,
                           activation_target=self.activation_query_value, target_type=self.config.metric_type)]

    def _ssl(self) -> ssl.SSLContext | None:
        if self.target.tls in ("true", "skip-verify", "preferred"):
            context = ssl.create_default_context()
            if self.target.tls != "true":
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return context
        return None

    async def _connect(self) -> aiomysql.Connection:
        if self._connection is None or self._connection.closed:
            target = self.target
            self._connection = await aiomysql.connect(
                host=target.host, port=target.port, user=target.user, password=target.password,
                db=target.database or None, autocommit=True, ssl=self._ssl(),
                connect_timeout=self.config.timeout_seconds)
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()  # closes the socket at once, no round trip

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        timeout = self.config.timeout_seconds
        row: Any
        async with self._lock:
            try:
                async with asyncio.timeout(timeout):
                    connection = await self._connect()
                    async with connection.cursor() as cursor:
                        await cursor.execute(self.query)
                        row = await cursor.fetchone()
            except TimeoutError as exc:
                self._drop()
                raise ScalerError(f"{self.config.label}: MySQL at {self.server} did not answer within "
                                  f"{timeout:g}s") from exc
            except pymysql.err.OperationalError as exc:
                self._drop()
                raise ScalerError(f"{self.config.label}: cannot query MySQL at {self.server}: {exc}") from exc
            except (pymysql.err.MySQLError, OSError) as exc:
                self._drop()
                raise ScalerError(f"{self.config.label}: query failed on MySQL at {self.server}: {exc}") from exc
        value = as_number(self.config.label, "the query", row)
        return MetricResult(value=value, active=value > self.activation_query_value)

    async def aclose(self) -> None:
        async with self._lock:
            self._drop()

