"""How fast the node agent starts pods: N pods running `sleep`, created at once, scheduled and
started on the local node (SQLite store, scheduler, node agent, one shim per container).

    python bench/bench_agent.py [--pods 100] [--workers 4]

Prints pods started per second (creation of the first pod to the last one Running).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from capstan.api.registry import default_registry
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.node import NodeRegistrar
from capstan.controllers.nodeagent import NodeAgent
from capstan.controllers.runtime import Manager
from capstan.controllers.scheduler import Scheduler
from capstan.runtime.process import ProcessRuntime
from capstan.store.sqlite import SqliteStore

NODE = "bench"


async def bench(pods: int, workers: int, data_dir: Path) -> None:
    store = await SqliteStore.open(data_dir / "state.db", default_registry())
    await NodeRegistrar(store, node_name=NODE, cpu="1000", memory="1Ti").register()
    runtime = ProcessRuntime(data_dir / "runtime", data_dir / "pods")
    informers = InformerFactory(store)
    recorder = EventRecorder(store, "capstan-node", host=NODE)
    manager = Manager(informers)
    manager.add(Scheduler(informers, store, recorder, node_name=NODE))
    manager.add(NodeAgent(informers, store, recorder, runtime, node_name=NODE, workers=workers,
                          keep_workloads=False))
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    pods_rt = store.registry.lookup("pods")
    await asyncio.sleep(0.2)  # informers synced
    began = time.perf_counter()
    for i in range(pods):
        await store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"sleep-{i:04d}"},
                            "spec": {"terminationGracePeriodSeconds": 1,
                                     "containers": [{"name": "main", "command": ["sleep", "600"]}]}})
    created = time.perf_counter()
    while True:
        items = (await store.list(pods_rt, "default")).items
        running = sum(1 for p in items if (p.get("status") or {}).get("phase") == "Running")
        if running == pods:
            break
        await asyncio.sleep(0.05)
    finished = time.perf_counter()
    elapsed = finished - began
    print(f"pods: {pods}, agent workers: {workers}")
    print(f"created in {created - began:.2f}s; all Running after {elapsed:.2f}s")
    print(f"pods started per second: {pods / elapsed:.1f}")
    stop.set()
    await asyncio.wait_for(task, timeout=120)
    runtime.kill_orphans(keep=set())
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="capstan-bench-agent-"))
    try:
        asyncio.run(bench(args.pods, args.workers, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
