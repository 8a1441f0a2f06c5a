"""The garbage collector: deletes objects whose owners are all gone.

The store already deletes dependents when their owner is deleted (background or foreground
cascade). This controller is the safety net for what a cascade cannot see: a dependent created
just as its owner went (a controller acting on a stale view), and objects written while Capstan
was not running. It reacts to deletions (the dependents of a deleted owner are looked at), to
new or changed objects whose owners it cannot confirm from its caches, and sweeps every
``sweep_interval`` seconds.

An owner is gone only when the store itself says so (not found, or a different uid): a cache
that has not yet seen an owner is never a reason to delete. Dependents with some owners left
only lose the dangling references, as on Kubernetes. Work-queue keys are
``("<plural.group>/<namespace>", name)`` so one queue serves every kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from capstan.api.errors import ApiError, ConflictError, NotFoundError
from capstan.api.registry import ResourceType
from capstan.controllers.events import EventRecorder, utcnow
from capstan.controllers.informer import ChangeType, Informer, InformerFactory
from capstan.controllers.runtime import Controller, ObjectKey, Result
from capstan.core.workloads.gc import GcDecision, OwnerState, decide, owner_state
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

DEFAULT_KINDS = ("pods", "jobs", "deployments")


class GarbageCollector(Controller):
    name = "garbage-collector"

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 clock: Callable[[], datetime] = utcnow, kinds: Sequence[str] = DEFAULT_KINDS,
                 sweep_interval: float = 60.0, workers: int = 1) -> None:
        super().__init__(informers, workers=workers)
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.sweep_interval = sweep_interval
        self._types: dict[str, ResourceType] = {}
        self._informers: dict[tuple[str, str], Informer] = {}  # (group, kind) -> informer
        for kind in kinds:
            rt = store.registry.lookup(kind)
            informer = informers.informer(rt)
            self._types[rt.group_plural] = rt
            self._informers[(rt.group, rt.kind)] = informer
            self.watch(informer, self._unconfirmed_key(rt), predicate=_not_deleted)
            self.watch(informer, self._dependents_of, predicate=_deleted)

    # ---- what to look at --------------------------------------------------------------------

    def _key(self, rt: ResourceType, obj: Obj) -> ObjectKey:
        meta = obj.get("metadata") or {}
        return f"{rt.group_plural}/{meta.get('namespace') or ''}", str(meta.get("name") or "")

    def _unconfirmed_key(self, rt: ResourceType) -> Callable[[Obj], Iterable[ObjectKey]]:
        def mapper(obj: Obj) -> Iterable[ObjectKey]:
            refs = (obj.get("metadata") or {}).get("ownerReferences") or []
            if refs and not all(self._cached_owner_matches(obj, ref) for ref in refs):
                return [self._key(rt, obj)]
            return []

        return mapper

    def _dependents_of(self, owner: Obj) -> Iterable[ObjectKey]:
        uid = (owner.get("metadata") or {}).get("uid")
        if not uid:
            return []
        keys = []
        for informer in self._informers.values():
            for obj in informer.list():
                if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or []):
                    keys.append(self._key(informer.rt, obj))
        return keys

    def _cached_owner_matches(self, dependent: Obj, ref: dict[str, Any]) -> bool:
        """True when a cache holds the owner with the referenced uid (then nothing to check)."""
        group = str(ref.get("apiVersion") or "").rpartition("/")[0]
        informer = self._informers.get((group, str(ref.get("kind") or "")))
        if informer is None:
            return False
        namespace = (dependent.get("metadata") or {}).get("namespace") if informer.rt.namespaced else None
        cached = informer.get(str(ref.get("name") or ""), namespace)
        return cached is not None and cached["metadata"].get("uid") == ref.get("uid")

    def sweep(self) -> None:
        """Queue every cached object whose owners the caches cannot vouch for."""
        for informer in self._informers.values():
            mapper = self._unconfirmed_key(informer.rt)
            for obj in informer.list():
                for key in mapper(obj):
                    self.queue.add(key)

    async def run(self, stop: asyncio.Event) -> None:
        sweeper = asyncio.create_task(self._sweep_loop(stop))
        try:
            await super().run(stop)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        for informer in self._informers.values():
            await informer.wait_synced()
        while not stop.is_set():
            self.sweep()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.sweep_interval)

    # ---- deciding against the store -----------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Result | None:
        kind_and_namespace, name = key
        group_plural, _, namespace = kind_and_namespace.partition("/")
        rt = self._types[group_plural]
        try:
            obj = await self.store.get(rt, name, namespace or None)
        except NotFoundError:
            return None
        meta = obj["metadata"]
        refs = list(meta.get("ownerReferences") or [])
        if not refs or meta.get("deletionTimestamp"):
            return None
        states = [await self._owner_state(rt, obj, ref) for ref in refs]
        await self._apply(rt, obj, decide(refs, states))
        return None

    async def _owner_state(self, rt: ResourceType, dependent: Obj, ref: dict[str, Any]) -> OwnerState:
        try:
            owner_rt = self.store.registry.for_object({"apiVersion": ref.get("apiVersion"), "kind": ref.get("kind")})
        except ApiError:
            return OwnerState.UNKNOWN  # a kind this build does not serve: not ours to judge
        namespace = dependent["metadata"].get("namespace")
        if owner_rt.namespaced and not namespace:
            return OwnerState.UNKNOWN  # a cluster-scoped object cannot be owned by a namespaced one
        try:
            found = await self.store.get(owner_rt, str(ref.get("name") or ""),
                                         namespace if owner_rt.namespaced else None)
        except NotFoundError:
            found = None
        except ApiError:
            return OwnerState.UNKNOWN
        return owner_state(ref, found)

    async def _apply(self, rt: ResourceType, obj: Obj, decision: GcDecision) -> None:
        meta = obj["metadata"]
        if decision.action == "delete":
            log.info("deleting %s %s/%s: all its owners are gone", rt.kind, meta.get("namespace"), meta["name"])
            with contextlib.suppress(NotFoundError, ConflictError):
                await self.store.delete(rt, meta["name"], meta.get("namespace"),
                                        propagation_policy="Background", uid=meta["uid"])
        elif decision.action == "prune":
            patch = {"metadata": {"resourceVersion": meta["resourceVersion"],
                                  "ownerReferences": [dict(ref) for ref in decision.remaining_refs]}}
            with contextlib.suppress(NotFoundError):
                await self.store.patch(rt, meta["name"], meta.get("namespace"), patch)


def _deleted(change: ChangeType, obj: Obj, old: Obj | None) -> bool:
    return change == "DELETED"


def _not_deleted(change: ChangeType, obj: Obj, old: Obj | None) -> bool:
    return change != "DELETED"
