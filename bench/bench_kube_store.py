"""Benchmark of KubeStore against a real kube-apiserver. Prints figures; not a test.

    python bench/bench_kube_store.py [--objects 1000] [--samples 200] [--concurrency 1,8] [--kubeconfig FILE]

Without --kubeconfig it starts the contract cluster of tests/k8s/store_cluster.py (etcd with
--unsafe-no-fsync, kube-apiserver, a kube-controller-manager running only the GC and namespace controllers)
from the binaries of hack/kube-build. In a fresh namespace it measures creates/s, updates/s and gets/s of
ConfigMaps, one request at a time and with several in flight; the time to list all of them at once and in
pages of 500; and watch delivery latency (from the write returning to the watcher holding the event), for
ConfigMaps (watched straight from etcd in the contract cluster) and Secrets (through the watch cache).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from capstan.api.registry import ResourceType, default_registry
from capstan.store.base import Obj
from capstan.store.kube import KubeStore

REGISTRY = default_registry()
CONFIGMAPS = REGISTRY.lookup("configmaps")
SECRETS = REGISTRY.lookup("secrets")
NAMESPACES = REGISTRY.lookup("namespaces")
REPO_ROOT = Path(__file__).resolve().parents[1]


def configmap(name: str, namespace: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench", "shard": name[-1]}},
            "data": {"config.yaml": "key: value\n" * 10, "counter": "0"}}


def secret(name: str, namespace: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "stringData": {"password": "s3cret"}}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report_latency(label: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"  {label:<56} p50 {percentile(ms, 0.50):6.2f} ms   p95 {percentile(ms, 0.95):6.2f} ms   "
          f"max {max(ms):6.2f} ms   (n={len(ms)})")


async def rate(count: int, concurrency: int, op: Callable[[int], Awaitable[object]]) -> float:
    """Operations per second for ``count`` calls of ``op(i)``, ``concurrency`` of them in flight."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await op(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def watch_latency(store: KubeStore, rt: ResourceType, namespace: str,
                        samples: int) -> tuple[list[float], list[float]]:
    """Per write: (event time - write returned, event time - write sent). The event often arrives on the
    watch connection before the write's own answer has been read, so the first is often about zero."""
    start = (await store.list(rt, namespace, limit=1)).resource_version
    events = store.watch(rt, namespace, resource_version=start)
    after_return, after_send = [], []
    try:
        for i in range(samples):
            name = f"watched-{i:05d}"
            body = secret(name, namespace) if rt is SECRETS else configmap(name, namespace)
            reading = asyncio.ensure_future(_until_named(events, name))
            sent = time.perf_counter()
            await store.create(body)
            written = time.perf_counter()
            await reading
            after_return.append(time.perf_counter() - written)
            after_send.append(time.perf_counter() - sent)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return after_return, after_send


async def _until_named(events: object, name: str) -> None:
    async for event in events:  # type: ignore[attr-defined]
        if event.type == "ADDED" and event.object["metadata"]["name"] == name:
            return


async def measure_writes_and_reads(store: KubeStore, namespace: str, names: list[str], parallel: int) -> None:
    async def create(i: int) -> None:
        await store.create(configmap(names[i], namespace))

    async def update(i: int) -> None:
        await store.patch(CONFIGMAPS, names[i], namespace, {"data": {"counter": "1"}})

    async def get(i: int) -> None:
        await store.get(CONFIGMAPS, names[i], namespace)

    for what, op in (("creates", create), ("updates (merge patch)", update), ("gets", get)):
        print(f"  {what + f', {parallel} in flight':<56}{await rate(len(names), parallel, op):8.0f} /s")


async def main(objects: int, samples: int, concurrency: list[int], kubeconfig: Path | None) -> None:
    if kubeconfig is None:
        sys.path.insert(0, str(REPO_ROOT))  # for tests.k8s
        from tests.k8s.store_cluster import store_cluster

        kubeconfig = (await asyncio.to_thread(store_cluster)).kubeconfig
    store = await KubeStore.connect(REGISTRY, kubeconfig=kubeconfig)
    version = await store.request("GET", "/version")
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    print(f"capstan KubeStore benchmark: {objects} ConfigMaps, kube-apiserver {version.get('gitVersion')}, "
          f"Python {platform.python_version()}, {platform.machine()}")
    try:
        for parallel in concurrency:
            names = [f"c{parallel}-{i:05d}" for i in range(objects)]
            await measure_writes_and_reads(store, namespace, names, parallel)
            if parallel != concurrency[-1]:
                for name in names:
                    await store.delete(CONFIGMAPS, name, namespace)

        list_times = []
        for _ in range(5):
            started = time.perf_counter()
            listed = await store.list(CONFIGMAPS, namespace)
            list_times.append(time.perf_counter() - started)
        label = f"list {len(listed.items)} ConfigMaps at once (median of 5)"
        print(f"  {label:<56}{statistics.median(list_times) * 1000:8.1f} ms")
        started = time.perf_counter()
        pages, token = 0, None
        while True:
            page = await store.list(CONFIGMAPS, namespace, limit=500, continue_token=token)
            pages += 1
            token = page.continue_token
            if not token:
                break
        label = f"list them in pages of 500 ({pages} pages)"
        print(f"  {label:<56}{(time.perf_counter() - started) * 1000:8.1f} ms")
        for rt, how in ((CONFIGMAPS, "etcd watch"), (SECRETS, "watch cache")):
            after_return, after_send = await watch_latency(store, rt, namespace, samples)
            report_latency(f"watch, {rt.plural} ({how}), after write returned", after_return)
            report_latency(f"watch, {rt.plural} ({how}), after write sent", after_send)
    finally:
        await store.delete(NAMESPACES, namespace)
        await store.close()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--concurrency", default="1,8", help="comma-separated requests in flight")
    parser.add_argument("--kubeconfig", type=Path, default=None)
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    asyncio.run(main(args.objects, args.samples, concurrency, args.kubeconfig))


if __name__ == "__main__":
    cli()
