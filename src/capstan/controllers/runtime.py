"""The controller runtime: informers feed a de-duplicating work queue, workers reconcile keys.

Reconcilers are level-triggered: ``reconcile(key)`` reads the current state (from informer
caches or the store) and converges; it never depends on having seen a particular event. Errors
are retried with per-key exponential back-off; a reconciler can also ask to be called again
after a delay (deadlines, back-offs, TTLs).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from capstan.api.errors import ConflictError
from capstan.controllers.informer import ChangeType, Informer, InformerFactory, cache_key
from capstan.controllers.workqueue import QueueShutDownError, WorkQueue
from capstan.store.base import Obj

log = logging.getLogger(__name__)

ObjectKey = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class Result:
    """What a reconcile asks for next: nothing, or another look after ``requeue_after`` s."""

    requeue_after: float | None = None


class Runnable(Protocol):
    """Anything the process runs until ``stop`` is set: informers, controllers, the agent."""

    async def run(self, stop: asyncio.Event) -> None: ...


Mapper = Callable[[Obj], Iterable[ObjectKey]]


def own_key(obj: Obj) -> Iterable[ObjectKey]:
    return [cache_key(obj)]


def controller_owner(kind: str) -> Mapper:
    """Map a dependent to its controlling owner of ``kind`` (same namespace)."""

    def mapper(obj: Obj) -> Iterable[ObjectKey]:
        meta = obj.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == kind and ref.get("controller"):
                return [(meta.get("namespace") or "", ref["name"])]
        return []

    return mapper


class Controller(abc.ABC):
    """Base of every reconcile loop. Subclasses set ``name`` and implement ``reconcile``."""

    name: str = "controller"

    def __init__(self, informers: InformerFactory, *, workers: int = 1) -> None:
        self.informers = informers
        self.queue: WorkQueue[ObjectKey] = WorkQueue()
        self.workers = workers
        self._watched: list[Informer] = []

    def watch(self, informer: Informer, mapper: Mapper = own_key,
              predicate: Callable[[ChangeType, Obj, Obj | None], bool] | None = None) -> None:
        """Enqueue the keys ``mapper`` derives from every change of ``informer``'s objects."""

        def handler(change: ChangeType, obj: Obj, old: Obj | None) -> None:
            if predicate is not None and not predicate(change, obj, old):
                return
            for key in mapper(obj):
                self.queue.add(key)
            if old is not None and old is not obj:
                for key in mapper(old):
                    self.queue.add(key)

        informer.add_handler(handler)
        self._watched.append(informer)

    @abc.abstractmethod
    async def reconcile(self, key: ObjectKey) -> Result | None:
        """Converge the object named by ``key``; raise to retry with back-off."""

    async def run(self, stop: asyncio.Event) -> None:
        for informer in self._watched:
            await informer.wait_synced()
        workers = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        await stop.wait()
        self.queue.shutdown()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDownError:
                return
            try:
                result = await self.reconcile(key)
            except ConflictError:
                # Someone wrote in between: the next look sees their write.
                self.queue.add_rate_limited(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = self.queue.add_rate_limited(key)
                log.exception("%s: reconcile of %s failed; retry in %.2fs", self.name, "/".join(key), delay)
            else:
                self.queue.forget(key)
                if result is not None and result.requeue_after is not None:
                    self.queue.add_after(key, result.requeue_after)
            finally:
                self.queue.done(key)


class Manager:
    """Runs informers and controllers together and stops them together."""

    def __init__(self, informers: InformerFactory) -> None:
        self.informers = informers
        self.runnables: list[Runnable] = []

    def add(self, runnable: Runnable) -> None:
        self.runnables.append(runnable)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(informer.run(stop), name=f"informer-{informer.rt.plural}")
                 for informer in self.informers.all()]
        tasks += [asyncio.create_task(r.run(stop), name=type(r).__name__) for r in self.runnables]
        try:
            await stop.wait()
        finally:
            done, pending = await asyncio.wait(tasks, timeout=30)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s ended with %r", task.get_name(), task.exception())
