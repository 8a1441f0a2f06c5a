"""Benchmark of the embedded SQLite store. Prints figures; not a test.

    python bench/bench_store.py [--objects 10000] [--samples 2000] [--dir DIR]

Measures, on a file-backed store: creates/s and updates/s for N ConfigMaps (one transaction
each, synchronous=NORMAL), creates/s with synchronous=FULL, the time to list all N, and watch
delivery latency (from the write returning to the watcher holding the event) while N objects
exist, both one write at a time and under a continuous stream of writes.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Literal

from capstan.api.registry import default_registry
from capstan.store.base import Obj
from capstan.store.sqlite import SqliteStore

REGISTRY = default_registry()
CONFIGMAPS = REGISTRY.lookup("configmaps")


def configmap(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench", "shard": name[-1]}},
            "data": {"config.yaml": "key: value\n" * 10, "counter": "0"}}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report_latency(label: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"  {label:<38} p50 {percentile(ms, 0.50):6.3f} ms   p95 {percentile(ms, 0.95):6.3f} ms   "
          f"p99 {percentile(ms, 0.99):6.3f} ms   max {max(ms):6.3f} ms   (n={len(ms)})")


async def timed_creates(store: SqliteStore, count: int, prefix: str) -> float:
    started = time.perf_counter()
    for i in range(count):
        await store.create(configmap(f"{prefix}-{i:05d}"))
    return count / (time.perf_counter() - started)


async def timed_updates(store: SqliteStore, count: int, prefix: str) -> float:
    objects = (await store.list(CONFIGMAPS, "default", label_selector="app=bench")).items[:count]
    started = time.perf_counter()
    for obj in objects:
        obj["data"]["counter"] = "1"
        await store.update(obj)
    return len(objects) / (time.perf_counter() - started)


async def open_store(path: Path, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> SqliteStore:
    return await SqliteStore.open(path, REGISTRY, synchronous=synchronous)


async def watch_latency(store: SqliteStore, objects: int, samples: int, *, streaming: bool) -> list[float]:
    """Each write's return time vs the moment the watcher task holds the event."""
    returned: dict[str, float] = {}
    latencies: list[float] = []
    got_one = asyncio.Event()
    start = (await store.list(CONFIGMAPS, "default", limit=1)).resource_version
    events = store.watch(CONFIGMAPS, "default", resource_version=start, bookmarks=False)

    async def watcher() -> None:
        async for event in events:
            received = time.perf_counter()
            version = event.object["metadata"]["resourceVersion"]
            latencies.append(received - returned.pop(version))
            got_one.set()
            if len(latencies) >= samples:
                return

    task = asyncio.create_task(watcher())
    await asyncio.sleep(0.05)
    for i in range(samples):
        got_one.clear()
        name = f"bench-{i % objects:05d}"
        written = await store.patch(CONFIGMAPS, name, "default", {"data": {"counter": f"{streaming}-{i}"}})
        returned[written["metadata"]["resourceVersion"]] = time.perf_counter()
        if streaming:
            await asyncio.sleep(0)  # a writer that yields between writes, as a controller does
        else:
            await got_one.wait()
    await asyncio.wait_for(task, 60)
    await events.aclose()  # type: ignore[attr-defined]
    return latencies


async def main(objects: int, samples: int, directory: Path) -> None:
    print(f"capstan store benchmark: {objects} ConfigMaps, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, {platform.machine()} {platform.system()}")
    print(f"  data directory: {directory}")

    store = await open_store(directory / "state.db")
    creates = await timed_creates(store, objects, "bench")
    print(f"  creates (synchronous=NORMAL)          {creates:10.0f} /s")
    updates = await timed_updates(store, objects, "bench")
    print(f"  updates (synchronous=NORMAL)          {updates:10.0f} /s")

    list_times = []
    for _ in range(5):
        started = time.perf_counter()
        listed = await store.list(CONFIGMAPS, "default")
        list_times.append(time.perf_counter() - started)
    assert len(listed.items) >= objects
    print(f"  list {len(listed.items)} objects                   {statistics.median(list_times) * 1000:10.1f} ms "
          f"(median of 5; min {min(list_times) * 1000:.1f} ms)")
    started = time.perf_counter()
    page = await store.list(CONFIGMAPS, "default", limit=500)
    print(f"  list first page of 500                {(time.perf_counter() - started) * 1000:10.1f} ms")

    report_latency("watch latency, one write at a time", await watch_latency(store, objects, samples, streaming=False))
    report_latency("watch latency, continuous writes", await watch_latency(store, objects, samples, streaming=True))
    assert page.items
    await store.close()

    full = await open_store(directory / "state-full.db", "FULL")
    full_count = max(100, objects // 10)
    full_creates = await timed_creates(full, full_count, "full")
    print(f"  creates (synchronous=FULL, {full_count} objs)   {full_creates:10.0f} /s")
    await full.close()
    size = database_size(directory)
    print(f"  database + WAL size                   {size / 2**20:10.1f} MiB")


def database_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("state.db*"))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database (default: a temp dir)")
    args = parser.parse_args()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(args.objects, args.samples, args.dir))
        return
    with tempfile.TemporaryDirectory(prefix="capstan-bench-") as tmp:
        asyncio.run(main(args.objects, args.samples, Path(tmp)))


if __name__ == "__main__":
    cli()
