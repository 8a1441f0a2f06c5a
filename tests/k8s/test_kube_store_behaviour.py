"""KubeStore behaviour that only a real API server shows: watch streams the server ends, 410 on compacted
versions, an Informer relisting after a 410, CRDs, and how Kubernetes'
validation messages differ from the embedded store's for the same bad Deployment.

Runs against the contract cluster of tests/k8s/store_cluster.py (ConfigMap watches served from etcd, so a test
can compact history and get a real 410)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from capstan.api.errors import ApiError, BadRequestError, GoneError, InvalidError, NotFoundError
from capstan.api.keda import KEDA_TYPES
from capstan.api.registry import Registry, default_registry
from capstan.controllers.informer import Informer
from capstan.store.base import ListResult, Obj, WatchEvent
from capstan.store.kube import KubeStore, install_crds
from capstan.store.sqlite import SqliteStore
from tests.k8s.store_cluster import MISSING_BINARIES, StoreCluster, binaries_available, store_cluster

REGISTRY = default_registry()
CONFIGMAPS = REGISTRY.lookup("configmaps")
PODS = REGISTRY.lookup("pods")
NAMESPACES = REGISTRY.lookup("namespaces")
SCALED_OBJECT_TYPE = next(rt for rt in KEDA_TYPES if rt.kind == "ScaledObject")
EVENT_SECONDS = 20.0


@pytest.fixture(scope="module")
def cluster() -> StoreCluster:
    if not binaries_available():
        pytest.skip(MISSING_BINARIES)
    return store_cluster()


async def connect(cluster: StoreCluster, registry: Registry = REGISTRY, **kwargs: Any) -> KubeStore:
    return await KubeStore.connect(registry, kubeconfig=cluster.kubeconfig, **kwargs)


@pytest.fixture
async def store(cluster: StoreCluster) -> AsyncIterator[KubeStore]:
    opened = await connect(cluster)
    yield opened
    await opened.close()


@pytest.fixture
async def ns(store: KubeStore) -> AsyncIterator[str]:
    name = f"kube-store-{uuid.uuid4().hex[:8]}"
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    await store.delete(NAMESPACES, name)


def configmap(name: str, namespace: str, **data: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data}


async def next_event(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    while True:
        event = await asyncio.wait_for(anext(events), EVENT_SECONDS)
        if event.type != "BOOKMARK":
            return event


async def poll(check: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ---- watch streams -------------------------------------------------------------------------------


async def test_a_watch_outlives_the_servers_stream_timeout(cluster: StoreCluster, ns: str) -> None:
    """The server ends each stream after timeoutSeconds (1 s here); the watch reopens from the last version,
    so nothing is lost or replayed across three reconnects."""
    short = await connect(cluster, watch_timeout_seconds=1)
    try:
        start = (await short.list(CONFIGMAPS, ns)).resource_version
        events = short.watch(CONFIGMAPS, ns, resource_version=start)
        received = []
        for name in ("before", "after-one-timeout", "after-two-timeouts"):
            await short.create(configmap(name, ns))
            received.append(await next_event(events))
            await asyncio.sleep(1.5)  # outlast the stream's timeoutSeconds
        await short.patch(CONFIGMAPS, "before", ns, {"data": {"k": "v"}})
        received.append(await next_event(events))
        await events.aclose()  # type: ignore[attr-defined]
    finally:
        await short.close()
    assert [(e.type, e.object["metadata"]["name"]) for e in received] == [
        ("ADDED", "before"), ("ADDED", "after-one-timeout"), ("ADDED", "after-two-timeouts"),
        ("MODIFIED", "before")]


async def test_a_compacted_version_is_gone_from_etcd(cluster: StoreCluster, store: KubeStore,
                                                     ns: str) -> None:
    first = await store.create(configmap("churn", ns, n="0"))
    latest = first
    for n in range(1, 4):
        latest = await store.patch(CONFIGMAPS, "churn", ns, {"data": {"n": str(n)}})
    await asyncio.to_thread(cluster.compact, int(latest["metadata"]["resourceVersion"]))
    events = store.watch(CONFIGMAPS, ns, resource_version=first["metadata"]["resourceVersion"])
    with pytest.raises(GoneError) as caught:
        await anext(events)
    assert (caught.value.code, caught.value.reason) == (410, "Expired")
    assert str(caught.value) == "The resourceVersion for the provided watch is too old."


class CountingStore(KubeStore):
    lists = 0

    async def list(self, *args: Any, **kwargs: Any) -> ListResult:
        self.lists += 1
        return await super().list(*args, **kwargs)


async def test_an_informer_relists_after_a_410_on_reconnect(
    cluster: StoreCluster, store: KubeStore, ns: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """The informer's watch sees nothing in its namespace while writes elsewhere move etcd on and history is
    compacted; when the server ends the stream, reopening from the informer's last version gets a 410 and
    the informer lists again, then follows live changes."""
    caplog.set_level(logging.INFO, logger="capstan.controllers.informer")
    other = f"{ns}-other"
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    watched = await CountingStore.connect(REGISTRY, kubeconfig=cluster.kubeconfig, watch_timeout_seconds=2)
    informer = Informer(watched, CONFIGMAPS, namespace=ns)
    stop = asyncio.Event()
    running = asyncio.create_task(informer.run(stop))
    try:
        await store.create(configmap("seen", ns))
        await asyncio.wait_for(informer.wait_synced(), EVENT_SECONDS)
        await poll(lambda: informer.get("seen", ns) is not None, "the informer to see 'seen'")
        for i in range(5):
            newest = await store.create(configmap(f"elsewhere-{i}", other))
        await asyncio.to_thread(cluster.compact, int(newest["metadata"]["resourceVersion"]))
        await poll(lambda: watched.lists >= 2, "a relist after the 410")
        assert "configmaps watch expired; relisting" in caplog.text
        await store.create(configmap("after-relist", ns))
        await poll(lambda: informer.get("after-relist", ns) is not None, "the informer to follow live again")
        assert sorted(obj["metadata"]["name"] for obj in informer.list()) == ["after-relist", "seen"]
    finally:
        stop.set()
        await asyncio.wait_for(running, EVENT_SECONDS)
        await watched.close()
        await store.delete(NAMESPACES, other)


async def test_close_ends_a_watch_that_is_waiting_for_events(cluster: StoreCluster, ns: str) -> None:
    closing = await connect(cluster)
    events = closing.watch(CONFIGMAPS, ns)
    reader = asyncio.ensure_future(next_event(events))  # past the "initial-events-end" BOOKMARK
    await asyncio.sleep(0.2)
    await closing.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(reader, EVENT_SECONDS)


# ---- deletion answers ----------------------------------------------------------------------------


async def test_delete_of_a_pod_answers_none_although_the_server_returns_the_pod(store: KubeStore,
                                                                                ns: str) -> None:
    """An unscheduled Pod is deleted at once, but the API answers with the Pod carrying a
    deletionTimestamp."""
    await store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
                        "spec": {"containers": [{"name": "main", "image": "busybox"}]}})
    assert await store.delete(PODS, "p", ns) is None
    with pytest.raises(NotFoundError):
        await store.get(PODS, "p", ns)


# ---- validation messages -------------------------------------------------------------------------


def bad_deployment(namespace: str) -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "other"}},
                              "spec": {"containers": [{"name": "Main_1", "image": ""}],
                                       "restartPolicy": "Never"}}}}


KUBE_CAUSES = [
    ("spec.replicas", "FieldValueInvalid", "Invalid value: -1: must be greater than or equal to 0"),
    ("spec.template.metadata.labels", "FieldValueInvalid",
     'Invalid value: {"app":"other"}: `selector` does not match template `labels`'),
    ("spec.template.spec.containers[0].name", "FieldValueInvalid", None),
    ("spec.template.spec.containers[0].image", "FieldValueRequired", "Required value"),
    ("spec.template.spec.restartPolicy", "FieldValueNotSupported",
     'Unsupported value: "Never": supported values: "Always"'),
]


async def test_invalid_deployment_messages_compared_with_the_embedded_store(store: KubeStore,
                                                                           ns: str) -> None:
    """Kubernetes reports every problem of the object at once; the embedded store's schema check stops at the
    first layer that fails (here the replica count) and does not check the rest. Both use the same field
    paths for what they report. (docs/kubernetes-store.md lists the differences.)"""
    with pytest.raises(InvalidError) as on_kube:
        await store.create(bad_deployment(ns))
    kube = on_kube.value
    assert [(c.field, c.reason) for c in kube.causes] == [(f, r) for f, r, _ in KUBE_CAUSES]
    for cause, (_, _, message) in zip(kube.causes, KUBE_CAUSES, strict=True):
        if message is not None:
            assert cause.message == message
    assert str(kube).startswith('Deployment.apps "bad" is invalid: [spec.replicas: Invalid value: -1: ')
    assert (kube.kind, kube.name) == ("Deployment", "bad")

    embedded = await SqliteStore.open(":memory:", REGISTRY)
    try:
        await embedded.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        with pytest.raises(InvalidError) as on_sqlite:
            await embedded.create(bad_deployment(ns))
        mine = on_sqlite.value
        # The same words as the API server's first cause (its Go validation of built-in kinds).
        assert str(mine) == ('Deployment "bad" is invalid: spec.replicas: '
                             "Invalid value: -1: must be greater than or equal to 0")
        assert [(c.field, c.reason, c.message) for c in mine.causes] == KUBE_CAUSES[:1]
        assert [c.field for c in mine.causes] == ["spec.replicas"]
        assert {c.field for c in mine.causes} <= {c.field for c in kube.causes}
        # What only Kubernetes rejects: the embedded store accepts each of these problems on its own.
        for problem in ("labels", "name", "image", "restartPolicy"):
            candidate = fixed_but(problem, ns)
            created = await embedded.create(candidate)
            await embedded.delete(REGISTRY.lookup("deployments"), created["metadata"]["name"], ns)
            with pytest.raises(InvalidError):
                await store.create(candidate)
    finally:
        await embedded.close()


def fixed_but(problem: str, namespace: str) -> Obj:
    """The bad Deployment with every problem fixed except ``problem``."""
    obj = copy.deepcopy(bad_deployment(namespace))
    spec = obj["spec"]
    pod_spec = spec["template"]["spec"]
    spec["replicas"] = 1
    if problem != "labels":
        spec["template"]["metadata"]["labels"] = {"app": "web"}
    if problem != "name":
        pod_spec["containers"][0]["name"] = "main"
    if problem != "image":
        pod_spec["containers"][0]["image"] = "nginx"
    if problem != "restartPolicy":
        del pod_spec["restartPolicy"]
    return obj


async def test_a_wrong_json_type_is_a_bad_request_on_kubernetes(store: KubeStore, ns: str) -> None:
    obj = bad_deployment(ns)
    obj["spec"]["replicas"] = "three"
    with pytest.raises(BadRequestError) as caught:
        await store.create(obj)
    assert str(caught.value) == (
        'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string into Go '
        "struct field DeploymentSpec.spec.replicas of type int32")


# ---- CRDs ----------------------------------------------------------------------------------------


async def test_install_crds_then_use_the_kind_like_a_builtin(cluster: StoreCluster, ns: str) -> None:
    registry = Registry([*REGISTRY, SCALED_OBJECT_TYPE])
    crd_store = await connect(cluster, registry)
    try:
        await install_crds(crd_store, [SCALED_OBJECT_TYPE])
        await install_crds(crd_store, [SCALED_OBJECT_TYPE])  # idempotent: an update of the same CRD
        scaled = {
            "apiVersion": SCALED_OBJECT_TYPE.api_version, "kind": SCALED_OBJECT_TYPE.kind,
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"scaleTargetRef": {"name": "web"},
                     "triggers": [{"type": "cpu", "metadata": {"value": "50"}}]},
        }
        created = await crd_store.create(scaled)
        assert created["metadata"]["generation"] == 1
        listed = await crd_store.list(SCALED_OBJECT_TYPE, ns)
        assert [item["metadata"]["name"] for item in listed.items] == ["web"]
        assert listed.items[0]["kind"] == "ScaledObject"
        status = await crd_store.patch(SCALED_OBJECT_TYPE, "web", ns,
                                       {"status": {"externalMetricNames": ["x"]}}, subresource="status")
        assert status["status"] == {"externalMetricNames": ["x"]}
        assert status["metadata"]["generation"] == 1
        assert await crd_store.delete(SCALED_OBJECT_TYPE, "web", ns) is None
    except ApiError as exc:  # pragma: no cover - a readable failure for a schema the server refuses
        raise AssertionError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        await crd_store.close()


async def test_a_new_kind_can_be_listed_the_moment_install_crds_returns(cluster: StoreCluster) -> None:
    # Right after a CRD is Established the API server may still answer 429 "storage is (re)initializing";
    # install_crds waits that out, so an operator's informers can list at once (each group here is fresh).
    fresh = [dataclasses.replace(SCALED_OBJECT_TYPE, group=f"t{uuid.uuid4().hex[:8]}.capstan.io") for _ in range(3)]
    crd_store = await connect(cluster, Registry([*REGISTRY, *fresh]))
    try:
        await install_crds(crd_store, fresh)
        for rt in fresh:
            assert (await crd_store.list(rt)).items == []
    finally:
        for rt in fresh:
            await crd_store.request("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                              f"{rt.plural}.{rt.group}")
        await crd_store.close()
