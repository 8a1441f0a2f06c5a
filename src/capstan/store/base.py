"""The Store interface every controller is written against.

It has the semantics of the Kubernetes API server, so that the same controllers run on the
embedded SQLite store and on a real cluster:

* every write returns the stored object with a new ``metadata.resourceVersion``; resource
  versions are opaque strings to callers, but within one store they only grow;
* ``update`` with a stale ``resourceVersion`` raises ``ConflictError`` (optimistic concurrency);
  an update without one is unconditional;
* writes to the main resource ignore ``status``; ``update_status`` ignores everything but
  ``status``; a change of ``spec`` increments ``metadata.generation``, a status write does not;
* ``delete`` of an object with finalizers only sets ``deletionTimestamp``; the object goes when
  the last finalizer is removed. Dependents (``ownerReferences``) are deleted in the background,
  or first when the propagation policy is ``Foreground``, or left alone with ``Orphan``;
* ``watch`` from a resource version replays what happened after it, then follows live, with
  ADDED / MODIFIED / DELETED and periodic BOOKMARK events; a version older than the store's
  retained history raises ``GoneError`` (HTTP 410) and the caller must list again.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from capstan.api.registry import Registry, ResourceType

Obj = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
PropagationPolicy = Literal["Background", "Foreground", "Orphan"]


@dataclass(frozen=True)
class ListResult:
    items: list[Obj]
    resource_version: str
    continue_token: str | None = None
    remaining_item_count: int | None = None


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    object: Obj = field(default_factory=dict)


class Store(abc.ABC):
    """Kubernetes-semantics object storage. See the module docstring for the contract."""

    registry: Registry

    # ---- reads ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        """The object, or NotFoundError."""

    @abc.abstractmethod
    async def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str | None = None,
    ) -> ListResult:
        """Objects of one kind (all namespaces when ``namespace`` is None), ordered by
        namespace then name. ``limit`` > 0 pages; pass ``continue_token`` back for the next
        page. ``resource_version`` of the result is where a watch should start."""

    # ---- writes ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def create(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Create; AlreadyExistsError if the name is taken; ``generateName`` is honoured."""

    @abc.abstractmethod
    async def update(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Replace spec/metadata (not status); ConflictError on a stale resourceVersion."""

    @abc.abstractmethod
    async def update_status(self, obj: Obj) -> Obj:
        """Replace status only; ConflictError on a stale resourceVersion."""

    @abc.abstractmethod
    async def patch(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None,
        patch: Obj,
        *,
        subresource: Literal["status"] | None = None,
    ) -> Obj:
        """Apply an RFC 7386 JSON merge patch to the object or its status subresource.
        A ``metadata.resourceVersion`` in the patch is a precondition."""

    @abc.abstractmethod
    async def delete(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: PropagationPolicy = "Background",
        uid: str | None = None,
    ) -> Obj | None:
        """Delete. Returns the object as it now is when finalizers keep it (deletionTimestamp
        set), or None when it is gone. ``uid`` is a precondition (ConflictError if it differs)."""

    # ---- scale subresource ----------------------------------------------------------------

    @abc.abstractmethod
    async def get_scale(self, rt: ResourceType, name: str, namespace: str | None) -> Obj:
        """The autoscaling/v1 Scale of an object whose kind has a scale subresource."""

    @abc.abstractmethod
    async def update_scale(
        self, rt: ResourceType, name: str, namespace: str | None, replicas: int,
        *, resource_version: str | None = None,
    ) -> Obj:
        """Set the desired replicas through the scale subresource; returns the new Scale."""

    # ---- watch ----------------------------------------------------------------------------

    @abc.abstractmethod
    def watch(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        bookmarks: bool = True,
    ) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version`` (or from now when None), then live ones.
        Raises GoneError (from the first ``__anext__``) when the version is compacted."""

    # ---- lifecycle ------------------------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; open watches end."""


async def until_stopped(events: AsyncIterator[WatchEvent], stop: asyncio.Event) -> AsyncIterator[WatchEvent]:
    """Relay a watch until it ends or ``stop`` is set, whichever comes first, so a shutdown
    never waits for the next event of a quiet watch."""
    stopper = asyncio.ensure_future(stop.wait())
    following: asyncio.Future[WatchEvent] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({following, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if following not in done:
                return
            try:
                event = following.result()
            except StopAsyncIteration:
                return
            following = None
            yield event
    finally:
        stopper.cancel()
        if following is not None and not following.done():
            # The watch must be idle before anyone closes it (an async generator cannot be
            # closed while a read is in flight).
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following


def object_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta["name"]


def namespaced_name(obj: Obj) -> str:
    namespace, name = object_key(obj)
    return f"{namespace}/{name}" if namespace else name
