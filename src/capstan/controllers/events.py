"""Recording Events about objects, aggregated like Kubernetes does.

Repeats of the same reason and message for the same object bump ``count`` and
``lastTimestamp`` on one Event instead of creating a new one each time.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from capstan.api.errors import AlreadyExistsError, ApiError, ConflictError
from capstan.api.registry import ResourceType
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

EventKind = Literal["Normal", "Warning"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, store: Store, component: str, *, host: str | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.component = component
        self.host = host
        self.clock = clock
        self._events_rt: ResourceType = store.registry.lookup("events")

    async def record(self, obj: Obj, kind: EventKind, reason: str, message: str) -> None:
        """Record an Event; never raises (an Event is a courtesy, not part of the decision)."""
        try:
            await self._record(obj, kind, reason, message)
        except ApiError as exc:
            log.warning("could not record event %s for %s: %s", reason, obj["metadata"].get("name"), exc)

    async def _record(self, obj: Obj, kind: EventKind, reason: str, message: str) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        digest = hashlib.sha1(f"{meta.get('uid')}/{reason}/{message}".encode(), usedforsecurity=False)
        name = f"{meta['name']}.{digest.hexdigest()[:16]}"
        now = rfc3339(self.clock())
        # Most events happen once: create first (one write), and only on a repeat read the
        # existing Event to bump its count.
        try:
            await self.store.create(self._new_event(obj, name, namespace, kind, reason, message, now))
            return
        except AlreadyExistsError:
            pass
        for _ in range(3):
            existing = await self.store.get(self._events_rt, name, namespace)
            existing["count"] = int(existing.get("count") or 1) + 1
            existing["lastTimestamp"] = now
            try:
                await self.store.update(existing)
                return
            except ConflictError:
                continue  # another recorder bumped it meanwhile; read again

    def _new_event(self, obj: Obj, name: str, namespace: str, kind: EventKind, reason: str, message: str,
                   now: str) -> Obj:
        meta = obj["metadata"]
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind"),
                               "name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "reportingComponent": self.component,
        }
