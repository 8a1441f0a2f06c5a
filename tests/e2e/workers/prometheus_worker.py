"""Backlog-file worker for the prometheus test: takes the first line of ``BACKLOG`` (one job per
line) under an exclusive ``flock`` and works on it. The worker exposes no metrics: the test's own
exporter reports the file's line count to Prometheus, which is what the prometheus trigger queries.

Environment: BACKLOG, JOURNAL, HOLD.
"""

from __future__ import annotations

import fcntl
import os
import time

from _worker import HOLD, Journal, sigterm_flag


def take(path: str) -> str | None:
    """Remove and return the first line of the backlog, or None when it is empty."""
    with open(path, "r+") as backlog:
        fcntl.flock(backlog, fcntl.LOCK_EX)
        lines = backlog.read().splitlines()
        if not lines:
            return None
        backlog.seek(0)
        backlog.truncate()
        backlog.write("".join(f"{line}\n" for line in lines[1:]))
        return lines[0]


stop = sigterm_flag()
journal = Journal()
journal.started()
while not stop.is_set():
    job = take(os.environ["BACKLOG"])
    if job is None:
        stop.wait(0.2)
        continue
    time.sleep(HOLD)  # resumes after a SIGTERM: the job in hand is finished
    journal.processed(job)
journal.stopped()
