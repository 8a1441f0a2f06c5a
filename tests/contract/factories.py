"""Store factories for the contract suite.

Every entry of ``STORE_FACTORIES`` opens a store and a fresh namespace for one test. A store
backed by a real Kubernetes API server ("kube") runs the same tests; it is skipped with a reason when the
Kubernetes binaries are not built (hack/kube-build). Features a
backend cannot offer (reopening the same data, forcing compaction, fast bookmarks, a tiny watch
queue) are listed in ``unsupported`` with the reason, and the tests that need them are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from capstan.api.errors import ApiError
from capstan.api.registry import default_registry
from capstan.store.base import Store
from capstan.store.kube import KubeStore
from capstan.store.sqlite import SqliteStore
from tests.k8s.store_cluster import MISSING_BINARIES, binaries_available, store_cluster

# Features a test can require with @pytest.mark.store_feature(name).
FEATURES = ("reopen", "compaction", "bookmark_interval", "watch_queue_limit")


@dataclass(frozen=True)
class StoreOptions:
    """Knobs a test may ask for; a factory that cannot honour one lists it as unsupported."""

    history_limit: int | None = None  # keep only this many events ("compaction")
    bookmark_interval: float | None = None  # seconds between BOOKMARK events ("bookmark_interval")
    watch_queue_limit: int | None = None  # events a watcher may lag before 410 ("watch_queue_limit")


@dataclass
class StoreSession:
    """What a factory yields: the store and a namespace that exists only for this test.

    Unpacks as ``(store, namespace)``. ``reopen()`` closes the store and opens the same data
    again (factories supporting "reopen")."""

    store: Store
    namespace: str
    reopener: Callable[[], AbstractAsyncContextManager[Store]] | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    def __iter__(self) -> Iterator[object]:
        return iter((self.store, self.namespace))

    async def reopen(self) -> Store:
        assert self.reopener is not None, "this factory cannot reopen a store"
        await self.store.close()
        self.store = await self._stack.enter_async_context(self.reopener())
        return self.store


@dataclass(frozen=True)
class StoreFactory:
    open: Callable[[StoreOptions], AbstractAsyncContextManager[StoreSession]]
    unsupported: Mapping[str, str] = field(default_factory=dict)


def _fresh_namespace_name() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"


async def _create_namespace(store: Store, name: str) -> None:
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


@contextlib.asynccontextmanager
async def _sqlite(options: StoreOptions) -> AsyncIterator[StoreSession]:
    with tempfile.TemporaryDirectory(prefix="capstan-contract-") as tmp:
        path = Path(tmp) / "state.db"
        registry = default_registry()

        @contextlib.asynccontextmanager
        async def opened() -> AsyncIterator[Store]:
            store = await SqliteStore.open(
                path, registry,
                history_limit=options.history_limit or 100_000,
                bookmark_interval=options.bookmark_interval or 5.0,
                watch_queue_limit=options.watch_queue_limit or 10_000,
            )
            try:
                yield store
            finally:
                await store.close()

        async with contextlib.AsyncExitStack() as stack:
            store = await stack.enter_async_context(opened())
            namespace = _fresh_namespace_name()
            await _create_namespace(store, namespace)
            session = StoreSession(store, namespace, reopener=opened)
            async with session._stack:
                yield session


class _CompactingKubeStore(KubeStore):
    """Keeps only the newest ``history_limit`` revisions of etcd's history, as the embedded store's
    ``history_limit`` does, by compacting etcd after every write; watching from an older version then gets a
    real 410 from the API server (the contract cluster serves ConfigMap watches straight from etcd)."""

    history_limit = 0
    compact: Callable[[int], None] = staticmethod(lambda revision: None)

    async def _request(self, method: str, path: str, **kwargs: object) -> dict:  # type: ignore[override,type-arg]
        body = await super()._request(method, path, **kwargs)  # type: ignore[arg-type]
        version = (body.get("metadata") or {}).get("resourceVersion") if method != "GET" else None
        if version and int(version) > self.history_limit:
            await asyncio.to_thread(self.compact, int(version) - self.history_limit)
        return body


@contextlib.asynccontextmanager
async def _kube(options: StoreOptions) -> AsyncIterator[StoreSession]:
    """A real kube-apiserver (tests/k8s/store_cluster.py), one namespace per test, deleted afterwards."""
    if not binaries_available():
        pytest.skip(MISSING_BINARIES)
    cluster = await asyncio.to_thread(store_cluster)
    registry = default_registry()

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[Store]:
        store_class = _CompactingKubeStore if options.history_limit else KubeStore
        store = await store_class.connect(registry, kubeconfig=cluster.kubeconfig)
        if isinstance(store, _CompactingKubeStore):
            store.history_limit = options.history_limit or 0
            store.compact = cluster.compact  # type: ignore[method-assign]
        try:
            yield store
        finally:
            await store.close()

    async with contextlib.AsyncExitStack() as stack:
        admin = await stack.enter_async_context(opened())  # outlives the test's store, which a test may close
        namespace = _fresh_namespace_name()
        await _create_namespace(admin, namespace)
        try:
            store = await stack.enter_async_context(opened())
            session = StoreSession(store, namespace, reopener=opened)
            async with session._stack:
                yield session
        finally:
            with contextlib.suppress(ApiError):  # the namespace controller removes the content afterwards
                await admin.delete(NAMESPACES_TYPE, namespace)


NAMESPACES_TYPE = default_registry().lookup("namespaces")

STORE_FACTORIES: dict[str, StoreFactory] = {
    "sqlite": StoreFactory(open=_sqlite),
    "kube": StoreFactory(open=_kube, unsupported={
        "bookmark_interval": "the API server sends BOOKMARKs about once a minute; the interval is not a knob",
        "watch_queue_limit": "the API server's per-watcher buffer is internal; a slow watcher is "
                             "disconnected, not expired",
    }),
}
