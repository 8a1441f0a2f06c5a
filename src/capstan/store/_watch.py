"""Fan-out of committed changes to watchers, each with its own bounded queue.

Writers never wait for watchers: ``publish`` appends to every interested watcher's queue and
returns. A watcher whose queue is full is cut off (its next read raises GoneError, so the client
lists again) instead of slowing the writers or growing without bound.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from capstan.api.selectors import FieldSelector, LabelSelector

Obj = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One committed change, as stored in the event history."""

    type: str
    kind: str
    namespace: str
    name: str
    rv: int
    object: Obj
    body: str


class Watcher:
    """One open watch: its filter and the events waiting to be read."""

    def __init__(self, kind: str, namespace: str | None, labels: LabelSelector, fields: FieldSelector,
                 limit: int) -> None:
        self.kind = kind
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.limit = limit
        # Items are (type, object) with the object either decoded or as JSON text still to decode:
        # live events are decoded on delivery so every watcher gets its own copy to mutate.
        self.pending: deque[tuple[str, Obj | str]] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def matches(self, namespace: str, obj: Obj) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        labels = (obj.get("metadata") or {}).get("labels")
        return self.labels.matches(labels) and self.fields.matches(obj)

    def preload(self, items: list[tuple[str, Obj]]) -> None:
        """Replayed history: delivered before live events and not counted against the limit."""
        self.pending.extend(items)
        self.limit += len(items)

    def offer(self, change: Change) -> bool:
        """Queue a change if it matches; False when the queue overflowed and the watch must end."""
        if not self.matches(change.namespace, change.object):
            return True
        if len(self.pending) >= self.limit:
            self.overflowed = True
            self.pending.clear()
            self.wakeup.set()
            return False
        self.pending.append((change.type, change.body))
        self.wakeup.set()
        return True

    def next_pending(self) -> tuple[str, Obj]:
        event_type, payload = self.pending.popleft()
        return event_type, json.loads(payload) if isinstance(payload, str) else payload

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()


class WatchHub:
    def __init__(self) -> None:
        self._by_kind: dict[str, set[Watcher]] = {}

    def add(self, watcher: Watcher) -> None:
        self._by_kind.setdefault(watcher.kind, set()).add(watcher)

    def remove(self, watcher: Watcher) -> None:
        watchers = self._by_kind.get(watcher.kind)
        if watchers is not None:
            watchers.discard(watcher)

    def publish(self, changes: list[Change]) -> None:
        for change in changes:
            for watcher in tuple(self._by_kind.get(change.kind, ())):
                if not watcher.offer(change):
                    self.remove(watcher)

    def close_all(self) -> None:
        for watchers in self._by_kind.values():
            for watcher in watchers:
                watcher.close()
        self._by_kind.clear()
