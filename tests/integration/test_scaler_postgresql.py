"""postgresql scaler against the real PostgreSQL of tests/services.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from tests.integration.scaler_support import closed_port, silent_port, timed, unique
from tests.services import ServiceInfo, service

from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError
from capstan.scalers.postgresql import PostgreSQLScaler


@pytest.fixture(scope="module")
def pg() -> ServiceInfo:
    return service("postgres")


@pytest.fixture
async def table(pg: ServiceInfo) -> AsyncIterator[str]:
    name = unique("jobs").replace("-", "_")
    async with await psycopg.AsyncConnection.connect(pg.url, autocommit=True) as db:
        await db.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, state text NOT NULL)")
        yield name
        await db.execute(f"DROP TABLE {name}")


async def insert(pg: ServiceInfo, table: str, count: int, state: str = "queued") -> None:
    async with await psycopg.AsyncConnection.connect(pg.url, autocommit=True) as db:
        for _ in range(count):
            await db.execute(f"INSERT INTO {table} (state) VALUES (%s)", (state,))


def scaler(timeout: float = 5.0, auth: dict[str, str] | None = None, env: dict[str, str] | None = None,
           **metadata: str) -> PostgreSQLScaler:
    return PostgreSQLScaler(ScalerConfig(trigger_type="postgresql", trigger_index=0, metadata=metadata,
                                         auth_params=auth or {}, resolved_env=env or {}, timeout_seconds=timeout))


def fields(pg: ServiceInfo) -> dict[str, str]:
    return {"host": pg.host, "port": str(pg.port), "userName": pg.user, "dbName": pg.extra["database"],
            "sslmode": "disable"}


async def read(s: PostgreSQLScaler) -> MetricResult:
    return await s.get_metrics_and_activity(s.metric)


async def test_queued_rows_from_a_connection_in_the_environment(pg: ServiceInfo, table: str) -> None:
    s = scaler(env={"PG_URL": pg.url}, connectionFromEnv="PG_URL", targetQueryValue="10",
               activationTargetQueryValue="1", query=f"SELECT count(*) FROM {table} WHERE state = 'queued'")
    try:
        assert await read(s) == MetricResult(0.0, False)
        await insert(pg, table, 1)
        assert await read(s) == MetricResult(1.0, False)  # 1 is not above the activation value
        await insert(pg, table, 11)
        await insert(pg, table, 4, state="done")
        assert await read(s) == MetricResult(12.0, True)
        async with await psycopg.AsyncConnection.connect(pg.url, autocommit=True) as db:
            await db.execute(f"DELETE FROM {table}")
        assert await read(s) == MetricResult(0.0, False)
    finally:
        await s.aclose()


async def test_fields_with_password_from_the_authentication(pg: ServiceInfo) -> None:
    s = scaler(auth={"password": pg.password}, query="SELECT 2.5::numeric", targetQueryValue="1", **fields(pg))
    try:
        assert await read(s) == MetricResult(2.5, True)
    finally:
        await s.aclose()


async def test_wrong_password_is_a_scaler_error(pg: ServiceInfo) -> None:
    s = scaler(auth={"password": "wrong"}, query="SELECT 1", targetQueryValue="1", **fields(pg))
    with pytest.raises(ScalerError, match=r"cannot query PostgreSQL at 127\.0\.0\.1:\d+/capstan: .*password"):
        await read(s)
    await s.aclose()


async def test_query_errors_name_the_problem_and_the_scaler_recovers(pg: ServiceInfo, table: str) -> None:
    s = scaler(env={"PG_URL": pg.url}, connectionFromEnv="PG_URL", targetQueryValue="1",
               query=f"SELECT max(id) FROM {table}")
    try:
        with pytest.raises(ScalerError, match=r"returned NULL; it must return one number \(use COALESCE"):
            await read(s)
        await insert(pg, table, 3)
        assert await read(s) == MetricResult(3.0, True)
        broken = scaler(env={"PG_URL": pg.url}, connectionFromEnv="PG_URL", targetQueryValue="1",
                        query="SELECT count(*) FROM no_such_table_here")
        with pytest.raises(ScalerError, match=r'query failed on PostgreSQL .*"no_such_table_here" does not exist'):
            await read(broken)
        await broken.aclose()
    finally:
        await s.aclose()


async def test_slow_query_is_stopped_within_the_timeout(pg: ServiceInfo) -> None:
    s = scaler(env={"PG_URL": pg.url}, connectionFromEnv="PG_URL", targetQueryValue="1",
               query="SELECT 1 FROM pg_sleep(10)", timeout=1.0)
    elapsed, error = await timed(read(s))
    assert isinstance(error, ScalerError)
    assert "did not answer within 1s" in str(error) or "statement timeout" in str(error)
    assert elapsed < 4.0
    await s.aclose()


async def test_unreachable_and_silent_servers(pg: ServiceInfo) -> None:
    refused = scaler(host="127.0.0.1", port=str(closed_port()), userName="u", dbName="d", sslmode="disable",
                     query="SELECT 1", targetQueryValue="1", timeout=3.0)
    elapsed, error = await timed(read(refused))
    assert isinstance(error, ScalerError) and "cannot query PostgreSQL at 127.0.0.1" in str(error)
    assert elapsed < 3.0
    with silent_port() as port:
        silent = scaler(host="127.0.0.1", port=str(port), userName="u", dbName="d", sslmode="disable",
                        query="SELECT 1", targetQueryValue="1", timeout=1.0)
        elapsed, error = await timed(read(silent))
        await silent.aclose()
    assert isinstance(error, ScalerError)
    assert f"PostgreSQL at 127.0.0.1:{port}/d did not answer within 1s" in str(error)
    assert elapsed < 3.0
