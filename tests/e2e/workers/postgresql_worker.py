"""PostgreSQL worker: claims one row at a time from the job table ``TABLE`` (id serial, done bool).

The claim is ``UPDATE ... SET done = true WHERE id = (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT 1)``
inside a transaction that stays open during the work: other workers skip the locked row, and the
scaler's ``count(*) ... WHERE NOT done`` (another session) keeps counting the row until the commit —
work in progress is still backlog, as an unacknowledged message would be.

Environment: PG_URL, TABLE, JOURNAL, HOLD.
"""

from __future__ import annotations

import os
import time

import psycopg
from _worker import HOLD, Journal, sigterm_flag
from psycopg import sql

stop = sigterm_flag()
journal = Journal()
claim = sql.SQL("UPDATE {t} SET done = true WHERE id = (SELECT id FROM {t} WHERE NOT done ORDER BY id "
                "FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id").format(t=sql.Identifier(os.environ["TABLE"]))

with psycopg.connect(os.environ["PG_URL"], autocommit=True) as db:
    journal.started()
    while not stop.is_set():
        with db.transaction():
            row = db.execute(claim).fetchone()
            if row is not None:
                time.sleep(HOLD)
                journal.processed(row[0])
        if row is None:
            stop.wait(0.2)
journal.stopped()
