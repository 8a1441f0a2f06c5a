"""The embedded Store: Kubernetes API semantics on one SQLite file.

Design choices, and why:

* One connection, owned by the store, used directly on the event loop. Every operation is a
  handful of indexed statements on a local file (well under a millisecond), so handing each one
  to a thread would cost more than it saves. It also makes the store trivially serial: a write's
  statements run without an ``await`` between them, so no two writes interleave, and a watch can
  register itself and read history without missing or duplicating an event.
* Group commit: the writes made in one turn of the event loop share one SQLite transaction (each
  in its own savepoint, so a failing write leaves the others alone), committed at the start of the
  next turn. A write returns, and its watchers hear of it, only after that COMMIT: a write is never
  acknowledged before it is durable. A commit costs about as much as the statements of one write,
  so a busy control plane spends far less on commits. A read commits the turn's pending writes
  first, so nobody ever reads a write that is not yet durable; if the COMMIT itself fails (a full
  disk) all of the turn's writes are rolled back and every one of their writers gets the error.
* WAL journal with ``synchronous=NORMAL`` by default: a commit is in the WAL file (the OS page
  cache) when ``create`` returns, which survives a crash or ``kill -9`` of this process; only a
  power loss or kernel crash can drop the last few commits. ``synchronous="FULL"`` fsyncs the WAL
  on every commit for machines where that matters, at a large cost in write throughput.
* One global revision (like etcd's), stored as each object's ``resourceVersion`` and as the key
  of the event history table. Every change (including each step of a cascading delete) gets its
  own revision and its own history row, so a watcher can resume from any retained revision, even
  after a restart.
* Owner references are indexed in a side table (owner uid -> dependent uid) so that garbage
  collection visits only the dependents, never the whole store. The store collects garbage
  itself, synchronously, inside the deleting transaction (on Kubernetes the garbage collector
  does it a little later, so portable callers must not rely on the timing).
* Paging (``limit`` / ``continue``) is by key, not by snapshot: the next page starts after the
  last name returned and sees writes made in between (etcd-backed lists are snapshots).
* Label and field selectors on a watch filter each event by the object's new state; an object
  that stops matching is not reported as DELETED (Kubernetes' filtered watch does that).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import inspect
import json
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import orjson

from capstan.api.errors import BadRequestError, Cause, ForbiddenError, GoneError, InvalidError
from capstan.api.patch import merge_patch
from capstan.api.registry import Registry, ResourceType
from capstan.api.selectors import FieldSelector, LabelSelector, SelectorError
from capstan.store._objects import (
    FOREGROUND_FINALIZER,
    already_exists,
    bad_resource_version,
    carry_server_fields,
    check_new_finalizers,
    conflict,
    generated_name,
    kind_key,
    merge_string_data,
    name_causes,
    namespace_not_found,
    no_subresource,
    not_found,
    rfc3339,
    same_ignoring_version,
    scale_view,
    uid_conflict,
    with_replicas,
)
from capstan.store._watch import Change, Watcher, WatchHub
from capstan.store.base import EventType, ListResult, Obj, PropagationPolicy, Store, WatchEvent

Validator = Callable[[Obj, Obj | None], Awaitable[None] | None]
Mutator = Callable[[Obj, Obj | None], Awaitable[None] | None]
# Aliases for annotations inside SqliteStore, where the name ``list`` is the method.
_Objs = list[Obj]
_Uids = list[str]
_Params = list[Any]
_Causes = list[Cause]
_Changes = list[Change]
_EventList = list[tuple[str, Obj]]
_Validators = list[Validator]
_Mutators = list[Mutator]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind      TEXT    NOT NULL,          -- "group/Kind"
    namespace TEXT    NOT NULL,          -- '' for cluster-scoped kinds
    name      TEXT    NOT NULL,
    uid       TEXT    NOT NULL UNIQUE,
    rv        INTEGER NOT NULL,
    body      TEXT    NOT NULL,          -- the object as wire JSON
    UNIQUE (kind, namespace, name)
);
CREATE INDEX IF NOT EXISTS objects_by_namespace ON objects (namespace);
CREATE TABLE IF NOT EXISTS owner_refs (
    owner_uid     TEXT NOT NULL,
    dependent_uid TEXT NOT NULL,
    PRIMARY KEY (owner_uid, dependent_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owner_refs_by_dependent ON owner_refs (dependent_uid);
CREATE TABLE IF NOT EXISTS events (
    rv        INTEGER PRIMARY KEY,
    type      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    body      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, rv);
"""
_NAMESPACE_KIND = "/Namespace"
_GENERATE_NAME_ATTEMPTS = 8


def _dumps(obj: Obj) -> str:
    """Compact JSON text. orjson is several times faster than json on the write path; anything it
    refuses (integers beyond 64 bits, non-string keys) is written by json as before."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _loads(body: str) -> Any:
    """Parse stored JSON text (orjson, falling back to json for what only json reads, e.g. NaN)."""
    try:
        return orjson.loads(body)
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        return json.loads(body)


def _owner_uids(obj: Obj) -> list[str]:
    return sorted({ref["uid"] for ref in (obj["metadata"].get("ownerReferences") or []) if ref.get("uid")})


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Batch:
    """The writes of one event-loop turn: one SQLite transaction, committed by ``_flush``."""

    revision_before: int
    compacted_before: int
    changes: list[Change] = field(default_factory=list)
    done: asyncio.Future[None] | None = None  # created when a writer waits for the commit
    committed: bool = False
    error: BaseException | None = None


class SqliteStore(Store):
    """The embedded Store. Open it with ``await SqliteStore.open(path, registry)``.

    Namespaced calls given ``namespace=None`` (and objects without ``metadata.namespace``) use
    "default", as kubectl does; ``list`` and ``watch`` with ``None`` cover all namespaces.
    """

    def __init__(self, conn: sqlite3.Connection, registry: Registry, *, clock: Callable[[], datetime],
                 history_limit: int, bookmark_interval: float, watch_queue_limit: int) -> None:
        self.registry = registry
        self._conn = conn
        self._clock = clock
        self._history_limit = max(1, history_limit)
        self._bookmark_interval = bookmark_interval
        self._watch_queue_limit = watch_queue_limit
        self._hub = WatchHub()
        self._validators: dict[str, _Validators] = {}
        self._mutators: dict[str, _Mutators] = {}
        self._rng = random.Random()
        self._changes: _Changes | None = None
        self._batch: _Batch | None = None
        self._closed = False
        self._revision = self._scalar("SELECT max(coalesce((SELECT max(rv) FROM events), 0), "
                                      "coalesce((SELECT max(rv) FROM objects), 0))")
        oldest_event = self._scalar("SELECT coalesce(min(rv), 0) FROM events")
        # The newest revision whose event is no longer in the history (watching from it still works).
        self._compacted_through = oldest_event - 1 if oldest_event else self._revision

    @classmethod
    async def open(
        cls,
        path: str | Path,
        registry: Registry,
        *,
        clock: Callable[[], datetime] | None = None,
        history_limit: int = 100_000,
        bookmark_interval: float = 5.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        watch_queue_limit: int = 10_000,
    ) -> SqliteStore:
        """Open (creating if needed) the store at ``path`` (":memory:" for a private in-memory one).

        ``history_limit`` is how many events are kept for watches to resume from;
        ``watch_queue_limit`` is how many undelivered events a watcher may fall behind by before
        its watch ends with GoneError."""
        conn = sqlite3.connect(str(path), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=5000")  # another process (a CLI, a backup) may hold a lock briefly
        conn.execute("PRAGMA cache_size=-32000")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        store = cls(conn, registry, clock=clock or _utc_now, history_limit=history_limit,
                    bookmark_interval=bookmark_interval, watch_queue_limit=watch_queue_limit)
        store._ensure_default_namespace()
        return store

    # ---- small public extras ------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The newest resourceVersion in the store."""
        return self._revision

    def add_validator(self, kind: str, fn: Validator) -> None:
        """Run ``fn(new, old_or_None)`` before every create/update/patch/scale of ``kind`` is
        written (not on status writes or garbage collection); it rejects by raising InvalidError."""
        self._validators.setdefault(kind, []).append(fn)

    def add_mutator(self, kind: str, fn: Mutator) -> None:
        """Run ``fn(new, old_or_None)`` before the validators of every create/update/patch of
        ``kind``; it edits ``new`` in place (a mutating admission webhook's job: defaults, a
        suspend flag, a scheduling gate). The edited object is validated again."""
        self._mutators.setdefault(kind, []).append(fn)

    # ---- reads --------------------------------------------------------------------------------

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        self._read_committed()
        return self._load_or_404(rt, self._namespace_of(rt, namespace), name)

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
        self._read_committed()
        labels, fields = _parse_selectors(label_selector, field_selector)
        where, params = self._list_filter(rt, namespace)
        after = _decode_continue(continue_token) if continue_token else None
        if after is not None:
            where += " AND (namespace, name) > (?, ?)"
            params.extend(after)
        rows = self._conn.execute(
            f"SELECT namespace, name, body FROM objects WHERE {where} ORDER BY namespace, name", params)
        items: _Objs = []
        last: tuple[str, str] | None = None
        more = False
        for row_namespace, row_name, body in rows:
            obj = _loads(body)
            if not (labels.matches((obj["metadata"]).get("labels")) and fields.matches(obj)):
                continue
            if limit > 0 and len(items) >= limit:
                more = True
                break
            items.append(obj)
            last = (row_namespace, row_name)
        rows.close()
        if not more or last is None:
            return ListResult(items=items, resource_version=str(self._revision))
        remaining = None
        if labels.empty and not fields.requirements:
            where_rest, rest_params = self._list_filter(rt, namespace)
            remaining = self._scalar(
                f"SELECT count(*) FROM objects WHERE {where_rest} AND (namespace, name) > (?, ?)",
                [*rest_params, *last])
        return ListResult(items=items, resource_version=str(self._revision),
                          continue_token=_encode_continue(last), remaining_item_count=remaining)

    # ---- writes -------------------------------------------------------------------------------

    async def create(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        rt = self.registry.for_object(obj)
        candidate = self._prepare_create(rt, obj)
        self._check_namespace_accepts(rt, candidate)
        candidate = await self._admit(rt, candidate, None)
        if dry_run:
            self._check_namespace_accepts(rt, candidate)
            if self._load(kind_key(rt), candidate["metadata"].get("namespace") or "",
                          candidate["metadata"]["name"]) is not None:
                raise already_exists(rt, candidate["metadata"]["name"])
            return candidate
        with self._transaction() as batch:
            self._insert_new(rt, candidate)
        await self._committed(batch)
        return candidate

    async def update(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        rt = self.registry.for_object(obj)
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        name = str(meta.get("name") or "")
        namespace = self._namespace_of(rt, meta.get("namespace"))
        candidate = self._normalized(rt, _with_secret_data(rt, obj), name_causes(rt, name))
        return await self._replace(
            rt, namespace, name, lambda current: carry_server_fields(rt, current, candidate),
            expected_rv=meta.get("resourceVersion") or None, expected_uid=meta.get("uid") or None,
            dry_run=dry_run)

    async def update_status(self, obj: Obj) -> Obj:
        rt = self.registry.for_object(obj)
        if not rt.has_status:
            raise no_subresource(rt, "status")
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        status = obj.get("status")
        return await self._replace(
            rt, self._namespace_of(rt, meta.get("namespace")), name,
            lambda current: self._with_status(rt, current, status),
            expected_rv=meta.get("resourceVersion") or None, expected_uid=meta.get("uid") or None,
            admit=False)

    async def patch(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None,
        patch: Obj,
        *,
        subresource: Literal["status"] | None = None,
    ) -> Obj:
        """Merge-patch the object. With ``subresource="status"`` the patch is still shaped like
        the whole object (``{"status": {...}}``), as on Kubernetes, and only status is kept."""
        if not isinstance(patch, dict):
            raise BadRequestError("a merge patch must be a JSON object")
        namespace = self._namespace_of(rt, namespace)
        patch_meta = patch.get("metadata") if isinstance(patch.get("metadata"), dict) else {}
        assert isinstance(patch_meta, dict)
        expected_rv = patch_meta.get("resourceVersion") or None
        expected_uid = patch_meta.get("uid") or None
        if subresource == "status":
            if not rt.has_status:
                raise no_subresource(rt, "status")
            return await self._replace(
                rt, namespace, name,
                lambda current: self._with_status(rt, current, merge_patch(current, patch).get("status")),
                expected_rv=expected_rv, expected_uid=expected_uid, admit=False)
        if subresource is not None:
            raise no_subresource(rt, str(subresource))

        def patched(current: Obj) -> Obj:
            merged = _with_secret_data(rt, merge_patch(current, patch))
            return carry_server_fields(rt, current, self._normalized(rt, merged, []))

        return await self._replace(rt, namespace, name, patched, expected_rv=expected_rv,
                                   expected_uid=expected_uid)

    async def delete(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: PropagationPolicy = "Background",
        uid: str | None = None,
    ) -> Obj | None:
        if propagation_policy not in ("Background", "Foreground", "Orphan"):
            raise BadRequestError(f'unsupported propagation policy "{propagation_policy}"')
        current = self._load_or_404(rt, self._namespace_of(rt, namespace), name)
        if uid and uid != current["metadata"]["uid"]:
            raise uid_conflict(rt, name, uid, current["metadata"]["uid"])
        with self._transaction() as batch:
            remaining = self._delete_object(current, propagation_policy)
        await self._committed(batch)
        return remaining

    # ---- scale subresource --------------------------------------------------------------------

    async def get_scale(self, rt: ResourceType, name: str, namespace: str | None) -> Obj:
        if rt.scale is None:
            raise no_subresource(rt, "scale")
        self._read_committed()
        return scale_view(rt, self._load_or_404(rt, self._namespace_of(rt, namespace), name))

    async def update_scale(
        self, rt: ResourceType, name: str, namespace: str | None, replicas: int,
        *, resource_version: str | None = None,
    ) -> Obj:
        if rt.scale is None:
            raise no_subresource(rt, "scale")
        if replicas < 0:
            raise InvalidError.from_causes("Scale", name, [Cause(
                "spec.replicas", "FieldValueInvalid",
                f"Invalid value: {replicas}: must be greater than or equal to 0")])

        def scaled(current: Obj) -> Obj:
            return carry_server_fields(rt, current, self._normalized(rt, with_replicas(rt, current, replicas), []))

        updated = await self._replace(rt, self._namespace_of(rt, namespace), name, scaled,
                                      expected_rv=resource_version)
        return scale_view(rt, updated)

    # ---- watch --------------------------------------------------------------------------------

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
        """Without a resource version (or "0"): an ADDED event per existing object, then live
        events. With one: every retained event after it, then live events."""
        return self._watch(rt, namespace, resource_version, label_selector, field_selector, bookmarks)

    async def _watch(self, rt: ResourceType, namespace: str | None, resource_version: str | None,
                     label_selector: str, field_selector: str, bookmarks: bool) -> AsyncIterator[WatchEvent]:
        self._read_committed()
        labels, fields = _parse_selectors(label_selector, field_selector)
        watcher = Watcher(kind_key(rt), namespace if rt.namespaced and namespace else None, labels, fields,
                          self._watch_queue_limit)
        if self._closed:
            return
        # No await from here to hub.add: history read and registration are atomic w.r.t. writes.
        # Writes of this turn are committed (and published to the others) first, so the history
        # read below and the live events that follow never overlap.
        self._flush()
        watcher.preload(self._initial_events(rt, watcher, resource_version))
        self._hub.add(watcher)
        loop = asyncio.get_running_loop()
        last_bookmark = loop.time()
        try:
            while True:
                if watcher.pending:
                    event_type, obj = watcher.next_pending()
                    yield WatchEvent(cast(EventType, event_type), obj)
                    continue
                if watcher.overflowed:
                    raise GoneError("the watcher fell too far behind and its events were dropped; "
                                    "list again and watch from the list's resourceVersion")
                if watcher.closed:
                    return
                timeout = None
                if bookmarks:
                    timeout = self._bookmark_interval - (loop.time() - last_bookmark)
                    if timeout <= 0:
                        last_bookmark = loop.time()
                        yield WatchEvent("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version,
                                                      "metadata": {"resourceVersion": str(self._revision)}})
                        continue
                watcher.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await watcher.wakeup.wait()
        finally:
            self._hub.remove(watcher)

    def _initial_events(self, rt: ResourceType, watcher: Watcher,
                        resource_version: str | None) -> _EventList:
        start = _parse_resource_version(resource_version)
        key = kind_key(rt)
        if start == 0:
            rows = self._conn.execute(
                "SELECT 'ADDED', namespace, body FROM objects WHERE kind = ? ORDER BY namespace, name", (key,))
        else:
            if start < self._compacted_through:
                raise GoneError(f"too old resource version: {start} ({self._compacted_through})")
            rows = self._conn.execute(
                "SELECT type, namespace, body FROM events WHERE kind = ? AND rv > ? ORDER BY rv", (key, start))
        events = []
        for event_type, row_namespace, body in rows:
            obj = _loads(body)
            if watcher.matches(row_namespace, obj):
                events.append((str(event_type), obj))
        return events

    # ---- lifecycle ----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._flush()
        self._closed = True
        self._hub.close_all()
        self._conn.close()

    # ---- the write path ---------------------------------------------------------------------------

    async def _replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        build: Callable[[Obj], Obj],
        *,
        expected_rv: str | None,
        expected_uid: str | None = None,
        dry_run: bool = False,
        admit: bool = True,
    ) -> Obj:
        """Read, build the new state from the current one, admit, and write it: the one path of
        update, update_status, patch and update_scale. Without a resourceVersion precondition a
        write that raced with another (while a validator awaited) is rebuilt and retried."""
        while True:
            current = self._load_or_404(rt, namespace, name)
            current_rv = current["metadata"]["resourceVersion"]
            if expected_rv is not None and str(expected_rv) != current_rv:
                raise conflict(rt, name)
            if expected_uid is not None and expected_uid != current["metadata"]["uid"]:
                raise uid_conflict(rt, name, expected_uid, current["metadata"]["uid"])
            updated = build(current)
            check_new_finalizers(rt, current, updated)
            if admit and (self._validators.get(rt.kind) or self._mutators.get(rt.kind)):
                updated = await self._admit(rt, updated, current)
                latest = self._load(kind_key(rt), namespace, name)
                if latest is None:
                    raise not_found(rt, name)
                if latest["metadata"]["resourceVersion"] != current_rv:
                    if expected_rv is not None:
                        raise conflict(rt, name)
                    continue
            if same_ignoring_version(current, updated):
                return current
            if dry_run:
                return updated
            with self._transaction() as batch:
                meta = updated["metadata"]
                if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                    meta.pop("finalizers", None)
                    self._remove(updated)
                else:
                    self._store(updated, "MODIFIED", previous_refs=_owner_uids(current))
            await self._committed(batch)
            return updated

    def _prepare_create(self, rt: ResourceType, obj: Obj) -> Obj:
        # Shallow copies suffice: only metadata is edited before normalizing, which builds a new
        # object sharing nothing with its input (pydantic's JSON-mode dump).
        candidate = dict(obj)
        meta = candidate.get("metadata")
        meta = candidate["metadata"] = dict(meta) if isinstance(meta, dict) else {}
        if meta.get("resourceVersion"):
            raise BadRequestError("resourceVersion should not be set on objects to be created")
        if rt.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = generated_name(str(meta["generateName"]), self._rng)
        candidate = self._normalized(rt, _with_secret_data(rt, candidate), name_causes(rt, meta.get("name")))
        meta = candidate["metadata"]
        for server_field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(server_field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self._clock())
        meta["generation"] = 1
        if rt.has_status:
            candidate.pop("status", None)
        if kind_key(rt) == _NAMESPACE_KIND:
            candidate["status"] = {"phase": "Active"}
        return candidate

    def _insert_new(self, rt: ResourceType, candidate: Obj) -> None:
        """Inside a transaction: insert, choosing another generated name on a collision."""
        meta = candidate["metadata"]
        namespace = meta.get("namespace") or ""
        self._check_namespace_accepts(rt, candidate)
        for _ in range(_GENERATE_NAME_ATTEMPTS):
            if self._load(kind_key(rt), namespace, meta["name"]) is None:
                self._store(candidate, "ADDED", previous_refs=None)
                return
            if not meta.get("generateName"):
                break
            meta["name"] = generated_name(meta["generateName"], self._rng)
        raise already_exists(rt, meta["name"])

    def _with_status(self, rt: ResourceType, current: Obj, status: Any) -> Obj:
        updated = dict(current)  # normalizing below builds a new object: no deep copy needed
        if status is None:
            updated.pop("status", None)
        else:
            updated["status"] = status
        return self._normalized(rt, updated, [])

    def _normalized(self, rt: ResourceType, obj: Obj, causes: _Causes) -> Obj:
        """Validated canonical form; all problems (name and schema) reported together."""
        name = str((obj.get("metadata") or {}).get("name") or "") if isinstance(obj.get("metadata"), dict) else ""
        try:
            normalized = rt.normalize(obj)
        except InvalidError as exc:
            raise InvalidError.from_causes(rt.kind, name, [*causes, *exc.causes]) from exc
        if causes:
            raise InvalidError.from_causes(rt.kind, name, causes)
        return normalized

    async def _admit(self, rt: ResourceType, new: Obj, old: Obj | None) -> Obj:
        """Mutators, then validators; returns the object to write."""
        mutators = self._mutators.get(rt.kind, ())
        for mutator in mutators:
            outcome = mutator(new, old)
            if inspect.isawaitable(outcome):
                await outcome
        if mutators:
            new = self._normalized(rt, new, [])
        for validator in self._validators.get(rt.kind, ()):
            outcome = validator(new, old)
            if inspect.isawaitable(outcome):
                await outcome
        return new

    def _check_namespace_accepts(self, rt: ResourceType, obj: Obj) -> None:
        if not rt.namespaced:
            return
        namespace = obj["metadata"]["namespace"]
        found = self._load(_NAMESPACE_KIND, "", namespace)
        if found is None:
            raise namespace_not_found(namespace)
        if found["metadata"].get("deletionTimestamp"):
            name = obj["metadata"]["name"]
            raise ForbiddenError(
                f'{rt.group_plural} "{name}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated", kind=rt.plural, name=name)

    # ---- deletion and garbage collection (always inside a transaction) ---------------------------

    def _delete_object(self, obj: Obj, policy: PropagationPolicy) -> Obj | None:
        """Delete now, or mark for deletion when finalizers, foreground dependents or namespace
        content must go first. Returns the object as it remains, or None when it is gone."""
        meta = obj["metadata"]
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            return obj
        if policy == "Orphan":
            for dependent in self._dependents(uid):
                self._drop_owner_ref(dependent, uid)
        is_namespace = self._kind_of(obj) == _NAMESPACE_KIND
        if is_namespace:
            self._delete_namespace_content(meta["name"])
        dependents = self._dependents(uid) if policy == "Foreground" else []
        finalizers = list(meta.get("finalizers") or [])
        if dependents and FOREGROUND_FINALIZER not in finalizers:
            finalizers.append(FOREGROUND_FINALIZER)
        if not finalizers and not (is_namespace and self._namespace_has_content(meta["name"])):
            self._remove(obj)
            return None
        terminating = copy.deepcopy(obj)
        terminating_meta = terminating["metadata"]
        terminating_meta["deletionTimestamp"] = rfc3339(self._clock())
        terminating_meta["deletionGracePeriodSeconds"] = 0
        if finalizers:
            terminating_meta["finalizers"] = finalizers
        if is_namespace:
            terminating["status"] = {**(terminating.get("status") or {}), "phase": "Terminating"}
        self._store(terminating, "MODIFIED", previous_refs=_owner_uids(obj))
        for dependent in dependents:
            fresh = self._load_uid(dependent["metadata"]["uid"])
            if fresh is not None:
                self._delete_object(fresh, "Foreground")
        return self._load_uid(uid)

    def _remove(self, obj: Obj) -> None:
        """Remove the row, record DELETED, then let go of what depended on it."""
        meta = obj["metadata"]
        kind, namespace, name, uid = self._kind_of(obj), meta.get("namespace") or "", meta["name"], meta["uid"]
        rv = self._next_revision()
        meta["resourceVersion"] = str(rv)
        self._conn.execute("DELETE FROM objects WHERE uid = ?", (uid,))
        self._conn.execute("DELETE FROM owner_refs WHERE dependent_uid = ?", (uid,))
        self._record(Change("DELETED", kind, namespace, name, rv, obj, _dumps(obj)))
        self._release_foreground_owners(obj)
        self._collect_dependents(uid)
        if namespace:
            self._finish_namespace_if_empty(namespace)

    def _release_foreground_owners(self, removed: Obj) -> None:
        for ref in removed["metadata"].get("ownerReferences") or []:
            owner = self._load_uid(ref.get("uid", ""))
            if owner is None:
                continue
            owner_meta = owner["metadata"]
            finalizers = owner_meta.get("finalizers") or []
            if (not owner_meta.get("deletionTimestamp") or FOREGROUND_FINALIZER not in finalizers
                    or self._dependents(owner_meta["uid"])):
                continue
            remaining = [f for f in finalizers if f != FOREGROUND_FINALIZER]
            if remaining:
                owner_meta["finalizers"] = remaining
                self._store(owner, "MODIFIED", previous_refs=_owner_uids(owner))
            else:
                owner_meta.pop("finalizers", None)
                self._remove(owner)

    def _collect_dependents(self, owner_uid: str) -> None:
        """Background collection: a dependent goes when none of its other owners still exists."""
        for dependent in self._dependents(owner_uid):
            fresh = self._load_uid(dependent["metadata"]["uid"])
            if fresh is None:
                continue
            others = [uid for uid in _owner_uids(fresh) if uid != owner_uid]
            if any(self._load_uid(uid) is not None for uid in others):
                self._drop_owner_ref(fresh, owner_uid)
            else:
                self._delete_object(fresh, "Background")

    def _drop_owner_ref(self, dependent: Obj, owner_uid: str) -> None:
        updated = copy.deepcopy(dependent)
        refs = [ref for ref in updated["metadata"].get("ownerReferences") or [] if ref.get("uid") != owner_uid]
        if refs:
            updated["metadata"]["ownerReferences"] = refs
        else:
            updated["metadata"].pop("ownerReferences", None)
        self._store(updated, "MODIFIED", previous_refs=_owner_uids(dependent))

    def _delete_namespace_content(self, namespace: str) -> None:
        rows = self._conn.execute(
            "SELECT uid FROM objects WHERE namespace = ? ORDER BY kind, name", (namespace,)).fetchall()
        for (uid,) in rows:
            fresh = self._load_uid(uid)
            if fresh is not None:
                self._delete_object(fresh, "Background")

    def _namespace_has_content(self, namespace: str) -> bool:
        return self._conn.execute("SELECT 1 FROM objects WHERE namespace = ? LIMIT 1", (namespace,)).fetchone() \
            is not None

    def _finish_namespace_if_empty(self, namespace: str) -> None:
        found = self._load(_NAMESPACE_KIND, "", namespace)
        if (found is not None and found["metadata"].get("deletionTimestamp")
                and not found["metadata"].get("finalizers") and not self._namespace_has_content(namespace)):
            self._remove(found)

    # ---- storage primitives ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Batch]:
        """One write, in a savepoint of the turn's transaction (see the module notes on group commit).
        Its changes reach watchers, and its writer should return (``await self._committed(batch)``),
        only after ``_flush`` committed the batch."""
        assert self._changes is None, "transactions do not nest"
        batch = self._open_batch()
        changes: _Changes = []
        revision_before, compacted_before = self._revision, self._compacted_through
        self._changes = changes
        self._conn.execute("SAVEPOINT write")
        try:
            yield batch
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK TO write")
                self._conn.execute("RELEASE write")
            self._revision, self._compacted_through = revision_before, compacted_before
            raise
        else:
            self._conn.execute("RELEASE write")
            batch.changes.extend(changes)
        finally:
            self._changes = None

    def _open_batch(self) -> _Batch:
        if self._batch is None:
            self._conn.execute("BEGIN IMMEDIATE")
            self._batch = _Batch(self._revision, self._compacted_through)
            with contextlib.suppress(RuntimeError):  # no loop (opening the store): the caller flushes
                asyncio.get_running_loop().call_soon(self._flush)
        return self._batch

    def _read_committed(self) -> None:
        """Reads see committed state only, as on Kubernetes: writes still waiting for this turn's
        group commit are committed first (a read in the middle of a write sees that write)."""
        if self._batch is not None and self._changes is None:
            self._flush()

    def _flush(self) -> None:
        """COMMIT the turn's writes, then publish their changes and release their writers."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        try:
            self._compact()
            self._conn.execute("COMMIT")
        except BaseException as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._revision, self._compacted_through = batch.revision_before, batch.compacted_before
            batch.error = exc
            if batch.done is not None and not batch.done.done():
                batch.done.set_exception(exc)
            return
        batch.committed = True
        self._hub.publish(batch.changes)
        if batch.done is not None and not batch.done.done():
            batch.done.set_result(None)

    async def _committed(self, batch: _Batch) -> None:
        """Return once ``batch`` is committed; raise what its COMMIT raised."""
        if not batch.committed and batch.error is None:
            if batch.done is None:
                batch.done = asyncio.get_running_loop().create_future()
            # Shielded: a cancelled writer must not cancel the commit its batch-mates wait for.
            await asyncio.shield(batch.done)
        if batch.error is not None:
            raise batch.error

    def _compact(self) -> None:
        floor = self._revision - self._history_limit
        if floor > self._compacted_through:
            self._conn.execute("DELETE FROM events WHERE rv <= ?", (floor,))
            self._compacted_through = floor

    def _next_revision(self) -> int:
        self._revision += 1
        return self._revision

    def _store(self, obj: Obj, event_type: Literal["ADDED", "MODIFIED"], *,
               previous_refs: _Uids | None) -> None:
        """Insert or update the row with a new revision, sync the owner index, record the event."""
        meta = obj["metadata"]
        kind, namespace, name, uid = self._kind_of(obj), meta.get("namespace") or "", meta["name"], meta["uid"]
        rv = self._next_revision()
        meta["resourceVersion"] = str(rv)
        body = _dumps(obj)
        if event_type == "ADDED":
            self._conn.execute("INSERT INTO objects (kind, namespace, name, uid, rv, body) VALUES (?, ?, ?, ?, ?, ?)",
                               (kind, namespace, name, uid, rv, body))
        else:
            self._conn.execute("UPDATE objects SET rv = ?, body = ? WHERE uid = ?", (rv, body, uid))
        owners = _owner_uids(obj)
        if owners != (previous_refs or []):
            self._conn.execute("DELETE FROM owner_refs WHERE dependent_uid = ?", (uid,))
            self._conn.executemany("INSERT OR IGNORE INTO owner_refs (owner_uid, dependent_uid) VALUES (?, ?)",
                                   [(owner, uid) for owner in owners])
        self._record(Change(event_type, kind, namespace, name, rv, obj, body))

    def _record(self, change: Change) -> None:
        assert self._changes is not None, "writes happen inside a transaction"
        self._conn.execute("INSERT INTO events (rv, type, kind, namespace, name, body) VALUES (?, ?, ?, ?, ?, ?)",
                           (change.rv, change.type, change.kind, change.namespace, change.name, change.body))
        self._changes.append(change)

    def _ensure_default_namespace(self) -> None:
        if self._load(_NAMESPACE_KIND, "", "default") is not None:
            return
        namespace_type = self.registry.for_object({"apiVersion": "v1", "kind": "Namespace"})
        candidate = self._prepare_create(namespace_type, {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        with self._transaction():
            self._insert_new(namespace_type, candidate)
        self._flush()

    def _kind_of(self, obj: Obj) -> str:
        return kind_key(self.registry.for_object(obj))

    def _namespace_of(self, rt: ResourceType, namespace: str | None) -> str:
        if not rt.namespaced:
            return ""
        return namespace or "default"

    def _list_filter(self, rt: ResourceType, namespace: str | None) -> tuple[str, _Params]:
        if rt.namespaced and namespace:
            return "kind = ? AND namespace = ?", [kind_key(rt), namespace]
        return "kind = ?", [kind_key(rt)]

    def _load(self, kind: str, namespace: str, name: str) -> Obj | None:
        row = self._conn.execute("SELECT body FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                                 (kind, namespace, name)).fetchone()
        return _loads(row[0]) if row else None

    def _load_or_404(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        found = self._load(kind_key(rt), namespace, name)
        if found is None:
            raise not_found(rt, name)
        return found

    def _load_uid(self, uid: str) -> Obj | None:
        row = self._conn.execute("SELECT body FROM objects WHERE uid = ?", (uid,)).fetchone()
        return _loads(row[0]) if row else None

    def _dependents(self, owner_uid: str) -> _Objs:
        rows = self._conn.execute(
            "SELECT o.body FROM owner_refs r JOIN objects o ON o.uid = r.dependent_uid WHERE r.owner_uid = ? "
            "ORDER BY o.namespace, o.name", (owner_uid,)).fetchall()
        return [_loads(body) for (body,) in rows]

    def _scalar(self, sql: str, params: _Params | tuple[Any, ...] = ()) -> int:
        row = self._conn.execute(sql, params).fetchone()
        return int(row[0] or 0) if row else 0


# ---- helpers ------------------------------------------------------------------------------------------

def _with_secret_data(rt: ResourceType, obj: Obj) -> Obj:
    if rt.group or rt.kind != "Secret" or "stringData" not in obj:
        return obj
    result = copy.deepcopy(obj)
    merge_string_data(result)
    return result


def _parse_selectors(label_selector: str, field_selector: str) -> tuple[LabelSelector, FieldSelector]:
    try:
        return LabelSelector.parse(label_selector), FieldSelector.parse(field_selector)
    except SelectorError as exc:
        raise BadRequestError(f"unable to parse selector: {exc}") from exc


def _parse_resource_version(value: str | None) -> int:
    if value is None or value == "":
        return 0
    try:
        parsed = int(value)
    except ValueError:
        raise bad_resource_version(value) from None
    if parsed < 0:
        raise bad_resource_version(value)
    return parsed


def _encode_continue(after: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(_dumps({"ns": after[0], "name": after[1]}).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(decoded["ns"]), str(decoded["name"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadRequestError(f'continue key is not valid: "{token}"') from None
