"""A work queue with the semantics controllers rely on (as client-go's workqueue):

* a key waiting in the queue is held once, however often it is added (de-duplication);
* a key being processed is never handed to a second worker; adding it meanwhile marks it dirty
  and it is queued again when the worker calls ``done``;
* failures are retried after an exponential back-off per key, reset by ``forget``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class QueueShutDownError(Exception):
    """The queue was shut down; workers should return."""


class WorkQueue(Generic[K]):
    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 60.0) -> None:
        self._queue: list[K] = []
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._delayed: list[tuple[float, int, K]] = []
        self._counter = itertools.count()
        self._wakeup = asyncio.Event()
        self._delay_wakeup = asyncio.Event()
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._shutdown = False
        self._timer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: K) -> None:
        if self._shutdown:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.append(key)
        self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        heapq.heappush(self._delayed, (loop.time() + delay, next(self._counter), key))
        self._delay_wakeup.set()
        if self._timer is None or self._timer.done():
            self._timer = loop.create_task(self._release_delayed())

    def add_rate_limited(self, key: K) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay: float = min(self._base_delay * (2.0**failures), self._max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> K:
        while not self._queue:
            if self._shutdown:
                raise QueueShutDownError
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._queue.pop(0)
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def shutdown(self) -> None:
        self._shutdown = True
        self._wakeup.set()
        if self._timer is not None:
            self._timer.cancel()

    async def _release_delayed(self) -> None:
        loop = asyncio.get_running_loop()
        while self._delayed and not self._shutdown:
            due, _, key = self._delayed[0]
            wait = due - loop.time()
            if wait > 0:
                self._delay_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._delay_wakeup.wait(), timeout=wait)
                continue
            heapq.heappop(self._delayed)
            self.add(key)
