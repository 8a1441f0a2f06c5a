"""A poll scheduler: one timer heap for every ScaledObject (or ScaledJob), not one sleeping task each.

``schedule(key, delay)`` arms a key's next pass; ``wake(key)`` runs it now (push scalers, spec
changes). One dispatcher task sleeps until the earliest due key and starts a pass task per due
key, with at most ``concurrency`` passes at a time, so a hung pass delays only its own key (and
holds one slot until its reads time out). A key is never run twice at once: a wake during a pass
runs the key again right after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from capstan.controllers.autoscaling.metrics import SCALE_LOOP_LATENCY

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
PassFn = Callable[[K], Awaitable[float | None]]
"""Runs one pass of a key; returns the delay until its next pass (None: until woken)."""


class PollScheduler(Generic[K]):
    def __init__(self, run_pass: PassFn[K], *, kind: str, concurrency: int = 256) -> None:
        self._run_pass = run_pass
        self._kind = kind
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, tuple[float, int]] = {}
        self._counter = itertools.count()
        self._running: set[K] = set()
        self._again: set[K] = set()
        self._changed = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.passes = 0

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def schedule(self, key: K, delay: float) -> None:
        """Run ``key`` after ``delay`` seconds (replacing an earlier schedule)."""
        due = self._now() + max(delay, 0.0)
        seq = next(self._counter)
        self._due[key] = (due, seq)
        heapq.heappush(self._heap, (due, seq, key))
        if self._heap[0][1] == seq:
            self._changed.set()

    def wake(self, key: K) -> None:
        """Run ``key`` as soon as possible (right after its current pass, if one is running)."""
        if key in self._running:
            self._again.add(key)
            return
        self.schedule(key, 0.0)

    def remove(self, key: K) -> None:
        self._due.pop(key, None)
        self._again.discard(key)

    def __len__(self) -> int:
        return len(self._due)

    async def run(self, stop: asyncio.Event) -> None:
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._start_due()
                timeout = None
                if self._heap:
                    timeout = max(self._heap[0][0] - self._now(), 0.0)
                self._changed.clear()
                changed = asyncio.create_task(self._changed.wait())
                await asyncio.wait({changed, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                changed.cancel()
        finally:
            stopper.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_due(self) -> None:
        now = self._now()
        while self._heap and self._heap[0][0] <= now:
            due, seq, key = heapq.heappop(self._heap)
            if self._due.get(key) != (due, seq):
                continue  # superseded by a later schedule() or removed
            del self._due[key]
            if key in self._running:
                self._again.add(key)
                continue
            SCALE_LOOP_LATENCY.labels(self._kind).observe(now - due)
            self._running.add(key)
            task = asyncio.create_task(self._pass(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pass(self, key: K) -> None:
        try:
            while True:
                self._again.discard(key)
                delay: float | None = None
                async with self._slots:
                    try:
                        delay = await self._run_pass(key)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("%s: pass of %s failed; retrying in 5 s", self._kind, key)
                        delay = 5.0
                    self.passes += 1
                if key not in self._again:
                    break
        finally:
            self._running.discard(key)
        if delay is not None:
            with contextlib.suppress(RuntimeError):
                self.schedule(key, delay)
