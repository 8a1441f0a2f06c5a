"""Autoscaling end to end on PostgreSQL: a real ``capstan server``, the postgresql scaler and workers
that claim rows of a real job table with ``FOR UPDATE SKIP LOCKED``.

The table is ``(id serial, done bool)``; the trigger's query is ``SELECT count(*) FROM t WHERE NOT
done`` with targetQueryValue 5. A worker keeps its claim's transaction open while it works, so the
query still counts the row until the work is committed. N = 20: the first pass after activation
counts at least 18 rows (one worker, at most one polling interval of 1 s at 0.5 s per row), so the
HPA wants ceil(20 / 5) = 4, which the scale-up limit from 1 replica, max(2 x 1, 4), allows.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.e2e.broker_kit import broker_scaled_object, hpa_peak, run_scaling, script_deployment
from tests.e2e.harness import CapstanServer
from tests.services import ServiceInfo

pytestmark = pytest.mark.slow

ROWS, TARGET, MAXIMUM = 20, 5, 10


def test_postgresql_job_table_scales_workers_zero_to_four_and_back(server: CapstanServer, tmp_path: Path,
                                                                   postgres_service: ServiceInfo) -> None:
    url = postgres_service.url
    table = f"e2e_jobs_{uuid.uuid4().hex[:8]}"
    journal = tmp_path / "journal"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, done bool NOT NULL DEFAULT false)")
                   .format(sql.Identifier(table)))
        try:
            pending = sql.SQL("SELECT count(*) FROM {} WHERE NOT done").format(sql.Identifier(table))
            server.apply(script_deployment("worker", "postgresql_worker.py", {
                "PG_URL": url, "TABLE": table, "JOURNAL": str(journal), "HOLD": "0.5"}))
            trigger = {"type": "postgresql", "metadata": {
                "connectionFromEnv": "PG_URL", "query": f"SELECT count(*) FROM {table} WHERE NOT done",
                "targetQueryValue": str(TARGET)}}

            def publish() -> None:
                db.execute(sql.SQL("INSERT INTO {} (done) SELECT false FROM generate_series(1, %s)")
                           .format(sql.Identifier(table)), (ROWS,))

            def drained() -> bool:
                row = db.execute(pending).fetchone()
                return row is not None and row[0] == 0

            run = run_scaling(
                server, "worker", broker_scaled_object("worker", trigger, maximum=MAXIMUM),
                publish=publish, drained=drained, peak=hpa_peak(ROWS, TARGET, MAXIMUM), journal=journal,
                expected=[str(i) for i in range(1, ROWS + 1)])  # a fresh serial numbers the rows 1..N
            print(run.report())
            done = db.execute(sql.SQL("SELECT count(*) FILTER (WHERE done), count(*) FROM {}")
                              .format(sql.Identifier(table))).fetchone()
            assert done == (ROWS, ROWS)
        finally:
            db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))

