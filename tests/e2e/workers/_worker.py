"""What every e2e worker shares: its settings from the environment, a SIGTERM flag, and the journal.

The journal is a file shared by all replicas (``JOURNAL``); each line is written with one
``write`` on an ``O_APPEND`` descriptor, so lines of concurrent workers never interleave:

    started <pod>       the worker is connected and about to take work
    processed <id>      one message or job finished (after the work, before it is acknowledged)
    stopped <pod>       the worker left its loop because of SIGTERM and closed its connections

Workers are started as ``python -u tests/e2e/workers/<broker>_worker.py``; this directory is then
``sys.path[0]``, which is how they import this module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading

POD = os.environ.get("HOSTNAME", f"pid-{os.getpid()}")
HOLD = float(os.environ.get("HOLD", "0.5"))  # seconds of "work" per message: slow enough to watch scaling


class Journal:
    def __init__(self, path: str | None = None) -> None:
        self._fd = os.open(path or os.environ["JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, kind: str, what: object) -> None:
        os.write(self._fd, f"{kind} {what}\n".encode())

    def started(self) -> None:
        self.write("started", POD)
        print("worker started", POD, flush=True)

    def processed(self, item: object) -> None:
        self.write("processed", item)
        print("processed", item, flush=True)

    def stopped(self) -> None:
        self.write("stopped", POD)
        print("worker stopped on SIGTERM", POD, flush=True)


def sigterm_flag() -> threading.Event:
    """For blocking workers: set on SIGTERM. The work in progress finishes (time.sleep resumes
    after the handler), then the loop sees the flag."""
    flag = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: flag.set())
    return flag


def sigterm_event() -> asyncio.Event:
    """For asyncio workers (call inside the running loop): set on SIGTERM."""
    event = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, event.set)
    return event
