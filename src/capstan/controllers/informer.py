"""Informers: a local cache of one kind fed by list + watch, shared between controllers.

The cache is the controllers' view of the world. It lists, then watches from the list's
resource version; when the watch ends or the version is too old (410 Gone) it lists again and
emits the differences, so handlers never miss a deletion that happened while disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Literal

from capstan.api.errors import GoneError
from capstan.api.registry import ResourceType
from capstan.api.selectors import LabelSelector
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

CacheKey = tuple[str, str]  # (namespace or "", name)
ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]
Handler = Callable[[ChangeType, Obj, Obj | None], None]


def cache_key(obj: Obj) -> CacheKey:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class Informer:
    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        resync_period: float = 0.0,
        retry_delay: float = 0.5,
    ) -> None:
        self.store = store
        self.rt = rt
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.retry_delay = retry_delay
        self._cache: dict[CacheKey, Obj] = {}
        # The same objects per namespace, so that a namespaced list costs what it returns, not the
        # size of the whole cache (controllers list one namespace's objects on hot paths).
        self._by_namespace: dict[str, dict[CacheKey, Obj]] = {}
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()
        self._resource_version: str | None = None

    # ---- reading the cache --------------------------------------------------------------

    def get(self, name: str, namespace: str | None = None) -> Obj | None:
        return self._cache.get((namespace or "", name))

    def list(self, namespace: str | None = None, selector: LabelSelector | None = None) -> list[Obj]:
        source = self._cache if namespace is None else self._by_namespace.get(namespace, {})
        items: Iterable[Obj] = source.values()
        if selector is not None and not selector.empty:
            items = (o for o in items if selector.matches(o["metadata"].get("labels")))
        return list(items)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def add_handler(self, handler: Handler) -> None:
        """Register a change handler; it is replayed ADDED for everything already cached."""
        self._handlers.append(handler)
        for obj in list(self._cache.values()):
            handler("ADDED", obj, None)

    # ---- running ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        resync = asyncio.create_task(self._resync_loop(stop)) if self.resync_period > 0 else None
        try:
            while not stop.is_set():
                try:
                    await self._list_and_replace()
                    await self._watch(stop)
                except GoneError:
                    log.info("%s watch expired; relisting", self.rt.plural)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s informer failed; retrying", self.rt.plural)
                    await _sleep_or_stop(stop, self.retry_delay)
        finally:
            if resync is not None:
                resync.cancel()

    async def _list_and_replace(self) -> None:
        result = await self.store.list(self.rt, self.namespace, label_selector=self.label_selector,
                                       field_selector=self.field_selector)
        fresh = {cache_key(obj): obj for obj in result.items}
        for key, old in list(self._cache.items()):
            if key not in fresh:
                self._forget(key)
                self._emit("DELETED", old, old)
        for key, obj in fresh.items():
            old_obj = self._cache.get(key)
            self._remember(key, obj)
            if old_obj is None:
                self._emit("ADDED", obj, None)
            elif _rv(old_obj) != _rv(obj):
                self._emit("MODIFIED", obj, old_obj)
        self._resource_version = result.resource_version
        self._synced.set()

    async def _watch(self, stop: asyncio.Event) -> None:
        stream = self.store.watch(self.rt, self.namespace, resource_version=self._resource_version,
                                  label_selector=self.label_selector, field_selector=self.field_selector)
        stopper = asyncio.create_task(stop.wait())
        try:
            iterator = stream.__aiter__()
            while True:
                next_event = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait({next_event, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if next_event not in done:
                    next_event.cancel()
                    return
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    return
                self._apply(event.type, event.object)
        finally:
            stopper.cancel()
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                with contextlib.suppress(RuntimeError, asyncio.CancelledError):  # already closing
                    await closer()

    def _apply(self, event_type: str, obj: Obj) -> None:
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self._resource_version = rv
        if event_type == "BOOKMARK":
            return
        if event_type == "ERROR":
            raise GoneError(message=str(obj.get("message", "watch error")))
        key = cache_key(obj)
        old = self._cache.get(key)
        if event_type == "DELETED":
            self._forget(key)
            self._emit("DELETED", obj, old)
            return
        self._remember(key, obj)
        self._emit("ADDED" if old is None else "MODIFIED", obj, old)

    def _remember(self, key: CacheKey, obj: Obj) -> None:
        self._cache[key] = obj
        self._by_namespace.setdefault(key[0], {})[key] = obj

    def _forget(self, key: CacheKey) -> None:
        if self._cache.pop(key, None) is None:
            return
        members = self._by_namespace.get(key[0])
        if members is not None:
            members.pop(key, None)
            if not members:
                del self._by_namespace[key[0]]

    def _emit(self, change: ChangeType, obj: Obj, old: Obj | None) -> None:
        for handler in self._handlers:
            try:
                handler(change, obj, old)
            except Exception:
                log.exception("informer handler failed for %s", cache_key(obj))

    async def _resync_loop(self, stop: asyncio.Event) -> None:
        """Periodically hand every cached object to the handlers again, so time-based work
        (deadlines, TTLs) is re-evaluated even when nothing changes."""
        while not stop.is_set():
            await _sleep_or_stop(stop, self.resync_period)
            for obj in list(self._cache.values()):
                self._emit("MODIFIED", obj, obj)


def _rv(obj: Obj) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv is not None else None


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class InformerFactory:
    """One informer per (kind, namespace), shared by every controller that needs it."""

    def __init__(self, store: Store, *, resync_period: float = 0.0) -> None:
        self.store = store
        self.resync_period = resync_period
        self._informers: dict[tuple[str, str, str | None], Informer] = {}

    def informer(self, rt: ResourceType, namespace: str | None = None) -> Informer:
        key = (rt.group, rt.plural, namespace)
        if key not in self._informers:
            self._informers[key] = Informer(self.store, rt, namespace=namespace,
                                            resync_period=self.resync_period)
        return self._informers[key]

    def all(self) -> list[Informer]:
        return list(self._informers.values())
