"""mysql scaler against the real MariaDB of tests/services.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiomysql
import pytest
from tests.integration.scaler_support import closed_port, silent_port, timed, unique
from tests.services import ServiceInfo, service

from capstan.scalers.base import MetricResult, ScalerConfig, ScalerError
from capstan.scalers.mysql import MySQLScaler


@pytest.fixture(scope="module")
def maria() -> ServiceInfo:
    return service("mariadb")


async def execute(maria: ServiceInfo, sql: str, *args: object) -> None:
    db = await aiomysql.connect(host=maria.host, port=maria.port, user=maria.user, password=maria.password,
                                db=maria.extra["database"], autocommit=True)
    try:
        async with db.cursor() as cursor:
            await cursor.execute(sql, args or None)
    finally:
        db.close()


@pytest.fixture
async def table(maria: ServiceInfo) -> AsyncIterator[str]:
    name = unique("tasks").replace("-", "_")
    await execute(maria, f"CREATE TABLE {name} (id INT AUTO_INCREMENT PRIMARY KEY, done BOOL NOT NULL)")
    yield name
    await execute(maria, f"DROP TABLE {name}")


def scaler(timeout: float = 5.0, auth: dict[str, str] | None = None, env: dict[str, str] | None = None,
           **metadata: str) -> MySQLScaler:
    return MySQLScaler(ScalerConfig(trigger_type="mysql", trigger_index=0, metadata=metadata,
                                    auth_params=auth or {}, resolved_env=env or {}, timeout_seconds=timeout))


async def read(s: MySQLScaler) -> MetricResult:
    return await s.get_metrics_and_activity(s.metric)


async def test_open_tasks_with_fields_and_password_from_authentication(maria: ServiceInfo, table: str) -> None:
    s = scaler(auth={"password": maria.password}, host=maria.host, port=str(maria.port), username=maria.user,
               dbName=maria.extra["database"], queryValue="5", activationQueryValue="2",
               query=f"SELECT COUNT(*) FROM {table} WHERE done = 0")
    try:
        assert s.metric_specs()[0].name == "s0-mysql-capstan"
        assert await read(s) == MetricResult(0.0, False)
        for _ in range(2):
            await execute(maria, f"INSERT INTO {table} (done) VALUES (0)")
        assert await read(s) == MetricResult(2.0, False)  # not above the activation value
        for _ in range(7):
            await execute(maria, f"INSERT INTO {table} (done) VALUES (0)")
        await execute(maria, f"INSERT INTO {table} (done) VALUES (1)")
        assert await read(s) == MetricResult(9.0, True)
        await execute(maria, f"UPDATE {table} SET done = 1")
        assert await read(s) == MetricResult(0.0, False)
    finally:
        await s.aclose()


async def test_go_dsn_from_the_environment(maria: ServiceInfo) -> None:
    dsn = f"{maria.user}:{maria.password}@tcp({maria.host}:{maria.port})/{maria.extra['database']}"
    s = scaler(env={"DSN": dsn}, connectionStringFromEnv="DSN", queryValue="1", query="SELECT 1.25")
    try:
        assert await read(s) == MetricResult(1.25, True)
    finally:
        await s.aclose()


async def test_errors_name_the_problem(maria: ServiceInfo) -> None:
    base = {"host": maria.host, "port": str(maria.port), "username": maria.user, "dbName": "capstan",
            "queryValue": "1"}
    wrong = scaler(auth={"password": "wrong"}, query="SELECT 1", **base)
    with pytest.raises(ScalerError, match=r"cannot query MySQL at 127\.0\.0\.1:\d+/capstan: .*Access denied"):
        await read(wrong)
    await wrong.aclose()
    missing = scaler(auth={"password": maria.password}, query="SELECT COUNT(*) FROM no_such_table", **base)
    with pytest.raises(ScalerError, match=r"MySQL at .*no_such_table' doesn't exist"):
        await read(missing)
    await missing.aclose()
    empty = scaler(auth={"password": maria.password}, query="SELECT 1 FROM DUAL WHERE 1 = 0", **base)
    with pytest.raises(ScalerError, match="returned no rows"):
        await read(empty)
    await empty.aclose()


async def test_unreachable_and_silent_servers() -> None:
    refused = scaler(host="127.0.0.1", port=str(closed_port()), query="SELECT 1", queryValue="1", timeout=3.0)
    elapsed, error = await timed(read(refused))
    assert isinstance(error, ScalerError) and "cannot query MySQL at 127.0.0.1" in str(error)
    assert elapsed < 3.0
    with silent_port() as port:
        silent = scaler(host="127.0.0.1", port=str(port), query="SELECT 1", queryValue="1", timeout=1.0)
        elapsed, error = await timed(read(silent))
        await silent.aclose()
    assert isinstance(error, ScalerError)
    assert f"MySQL at 127.0.0.1:{port}/ did not answer within 1s" in str(error)
    assert elapsed < 3.0
