"""The loop the ScaledObject and ScaledJob controllers share.

An informer over the controller's resource; one pass per object on a PollScheduler (every
``pollingInterval``, at once on a change or when a push scaler wakes it); the object's scalers
cached between passes; and, for an object that cannot be acted on, ``Ready=False`` with a
Warning Event (once per change of its conditions).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from capstan.api.errors import ConflictError, NotFoundError
from capstan.api.registry import causes_from_validation
from capstan.controllers.autoscaling.cache import ScalerCache
from capstan.controllers.autoscaling.common import AutoscalingOptions, merge_conditions
from capstan.controllers.autoscaling.schedule import PollScheduler
from capstan.controllers.events import EventRecorder, utcnow
from capstan.controllers.informer import ChangeType, InformerFactory
from capstan.store.base import Obj, Store

Key = tuple[str, str]  # namespace, name
ModelT = TypeVar("ModelT", bound=BaseModel)


class NotReadyError(Exception):
    """An object that cannot be acted on: Ready=False with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def validated(model: type[ModelT], obj: Obj, reason: str) -> ModelT:
    """``obj`` as ``model``; NotReadyError(reason) naming each bad field when it is not one."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        causes = "; ".join(f"{c.field}: {c.message}" for c in causes_from_validation(exc))
        raise NotReadyError(reason, causes) from None


class PollingController(abc.ABC):
    """Base of the ScaledObject and ScaledJob controllers; subclasses name their ``resource``, the
    scheduler's ``kind`` and their ``errors`` counter, and implement ``_on_change``, ``_pass``
    (calling ``_poll`` for a live object) and ``reconcile``."""

    resource: ClassVar[str]
    kind: ClassVar[str]
    errors: ClassVar[Counter]

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 options: AutoscalingOptions | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.recorder = recorder
        self.options = options or AutoscalingOptions()
        self.clock = clock
        self.rt = store.registry.lookup(self.resource)
        self.informer = informers.informer(self.rt)
        self.cache = ScalerCache()
        self.scheduler: PollScheduler[Key] = PollScheduler(self._pass, kind=self.kind,
                                                           concurrency=self.options.concurrency)
        self._closing: set[asyncio.Task[None]] = set()
        self.informer.add_handler(self._on_change)

    @abc.abstractmethod
    def _on_change(self, change: ChangeType, obj: Obj, old: Obj | None) -> None:
        """Enqueue the object's key when it changes."""

    @abc.abstractmethod
    async def _pass(self, key: Key) -> float | None:
        """One poll of the object: read triggers, decide, apply; returns the next delay."""

    @abc.abstractmethod
    async def reconcile(self, obj: Obj) -> object:
        """Converge one object now (used by tests and explain)."""

    async def run(self, stop: asyncio.Event) -> None:
        await self.informer.wait_synced()
        try:
            await self.scheduler.run(stop)
        finally:
            await self.cache.close_all()

    def _drop_scalers_soon(self, key: Key) -> None:
        """Drop (and close) the object's scalers from a synchronous informer handler."""
        task = asyncio.get_running_loop().create_task(self.cache.drop(key))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _poll(self, obj: Obj) -> float:
        """A pass over a live object; the seconds until the next: its ``pollingInterval``, or one
        second after a write conflict."""
        interval = float((obj.get("spec") or {}).get("pollingInterval") or 30)
        try:
            await self.reconcile(obj)
        except ConflictError:
            return 1.0
        except NotReadyError as exc:
            meta = obj["metadata"]
            self.errors.labels(meta.get("namespace") or "default", meta["name"]).inc()
            await self._reject(obj, exc)
        return interval

    def _not_ready_conditions(self, exc: NotReadyError) -> list[Mapping[str, Any]]:
        return [{"type": "Ready", "status": "False", "reason": exc.reason, "message": exc.message}]

    async def _reject(self, obj: Obj, exc: NotReadyError) -> None:
        current = obj.get("status") or {}
        conditions = merge_conditions(current.get("conditions"), self._not_ready_conditions(exc), self.clock())
        if conditions == current.get("conditions"):
            return
        await self.recorder.record(obj, "Warning", exc.reason, exc.message)
        meta = obj["metadata"]
        with contextlib.suppress(NotFoundError):
            await self.store.patch(self.rt, meta["name"], meta.get("namespace"),
                                   {"status": {"conditions": conditions}}, subresource="status")
