"""Kueue's baseline scheduling-performance scenario through Capstan's embedded control plane.

Scenario (Kueue ``test/performance/scheduler/configs/baseline``): 5 cohorts x 6 ClusterQueues, each
nominalQuota 20 cpu, borrowingLimit 100, ``reclaimWithinCohort: Any``, ``withinClusterQueue:
LowerPriority``. Per ClusterQueue:

* 350 small  (1 cpu,  200 ms, priority 50,  one every 100 ms)
* 100 medium (5 cpu,  500 ms, priority 100, one every 500 ms)
*  50 large  (20 cpu, 1000 ms, priority 200, one every 1200 ms)

= 15,000 workloads. Each is a batch/v1 Job (queue-name label) going through the real path: the
Job integration's Workload, the admission loop, unsuspension, the embedded Job controller's pod,
the scheduler's binding on one 600-cpu simulated node, and a simulated kubelet that marks the pod
Succeeded after the runtime (no processes). Jobs have ``ttlSecondsAfterFinished: 0``.

Prints a progress line every few seconds, then wall time, usage (cpu-seconds reserved / (total
nominal quota x wall)), the mean time to admission (job creation -> first QuotaReserved) per class,
the process's CPU time, and how close the wall time came to the scenario's ideal: the work divided
by the nominal quota (39,600 cpu-seconds / 600 cpu = 66 s for the full scenario). Kueue's published
baseline: wall 351 s, usage 55.9%, TTA large 16.5 s, medium 76.8 s, small 215.5 s.

    python bench/bench_kueue_baseline.py              # the full scenario
    python bench/bench_kueue_baseline.py --scale 0.1  # 10% of the workloads per class (same rates)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capstan.api.quantity import resource_amount
from capstan.api.registry import default_registry
from capstan.controllers.batch import AdmissionController, AdmissionOptions, install_admission_hooks
from capstan.controllers.batch.common import holds_quota, is_evicted, is_finished
from capstan.controllers.batch.workload_job import JobIntegration
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.job import JobController
from capstan.controllers.node import NodeRegistrar
from capstan.controllers.runtime import Manager
from capstan.controllers.scheduler import Scheduler
from capstan.core.scheduling.resources import pod_is_terminal
from capstan.store.base import Obj, Store
from capstan.store.sqlite import SqliteStore

KUEUE = "kueue.x-k8s.io/v1beta1"
NODE = "sim-node"
RUNTIME_ANNOTATION = "capstan.io/sim-runtime-ms"
COHORTS, QUEUES_PER_COHORT, NOMINAL, BORROWING_LIMIT = 5, 6, 20, 100


@dataclass(frozen=True)
class WorkloadClass:
    name: str
    count: int
    cpu: int
    runtime_ms: int
    priority: int
    interval_ms: int


CLASSES = (WorkloadClass("small", 350, 1, 200, 50, 100), WorkloadClass("medium", 100, 5, 500, 100, 500),
           WorkloadClass("large", 50, 20, 1000, 200, 1200))


@dataclass
class Tracker:
    """Follows Workloads: first admission per job, finish, and reserved cpu over time."""

    created: dict[str, float] = field(default_factory=dict)  # job name -> creation time
    klass: dict[str, str] = field(default_factory=dict)
    admitted: dict[str, float] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    holding: dict[str, tuple[float, int]] = field(default_factory=dict)  # workload key -> (since, cpu)
    cpu_seconds: float = 0.0
    held: dict[str, list[float]] = field(default_factory=dict)  # class -> seconds each hold lasted
    evicted_holds: set[str] = field(default_factory=set)  # holds that saw an eviction (not counted in held)

    def on_workload(self, change: str, workload: Obj, old: Obj | None) -> None:
        now = time.monotonic()
        meta = workload["metadata"]
        key = f"{meta.get('namespace')}/{meta['name']}"
        owner = next((r["name"] for r in meta.get("ownerReferences") or [] if r.get("kind") == "Job"), None)
        job = f"{meta.get('namespace')}/{owner}" if owner else None
        holds = change != "DELETED" and holds_quota(workload) and not is_finished(workload)
        if holds and is_evicted(workload):
            self.evicted_holds.add(key)
        if holds and key not in self.holding:
            cpu = sum(resource_amount("cpu", a.get("resourceUsage", {}).get("cpu", "0"))
                      for a in workload["status"]["admission"]["podSetAssignments"])
            self.holding[key] = (now, cpu)
            if job is not None and job not in self.admitted and not is_evicted(workload):
                self.admitted[job] = now
        elif not holds and key in self.holding:
            since, cpu = self.holding.pop(key)
            self.cpu_seconds += cpu * (now - since)
            if job is not None and job in self.klass and is_finished(workload) and key not in self.evicted_holds:
                self.held.setdefault(self.klass[job], []).append(now - since)
            self.evicted_holds.discard(key)
        if job is not None and (change == "DELETED" or is_finished(workload)):
            self.finished.add(job)


class SimKubelet:
    """Marks bound pods Succeeded after their runtime annotation; forgets pods deleted meanwhile."""

    def __init__(self, store: Store, informers: InformerFactory) -> None:
        self.store = store
        self.pods_rt = store.registry.lookup("pods")
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.pending: asyncio.Queue[Obj] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        informers.informer(self.pods_rt).add_handler(self._on_pod)

    def _on_pod(self, change: str, pod: Obj, old: Obj | None) -> None:
        uid = pod["metadata"]["uid"]
        if change == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            timer = self.timers.pop(uid, None)
            if timer is not None:
                timer.cancel()
            if change != "DELETED" and not pod_is_terminal(pod):
                self.pending.put_nowait(pod)  # being deleted: let it go (a kubelet would kill it)
            return
        if (pod.get("spec") or {}).get("nodeName") != NODE or pod_is_terminal(pod) or uid in self.timers:
            return
        runtime = int(((pod["metadata"].get("annotations") or {}).get(RUNTIME_ANNOTATION)) or 0) / 1000
        loop = asyncio.get_running_loop()
        self.timers[uid] = loop.call_later(runtime, self.pending.put_nowait, pod)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            getter = asyncio.ensure_future(self.pending.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                return
            pod = getter.result()
            self.timers.pop(pod["metadata"]["uid"], None)
            task = asyncio.create_task(self._finish(pod))  # pods are independent, as a kubelet's workers are
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _finish(self, pod: Obj) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(Exception):
            if meta.get("deletionTimestamp"):
                await self.store.delete(self.pods_rt, meta["name"], meta["namespace"], uid=meta["uid"])
            else:
                await self.store.patch(self.pods_rt, meta["name"], meta["namespace"],
                                       {"status": {"phase": "Succeeded"}}, subresource="status")


def queue_objects() -> list[Obj]:
    objects: list[Obj] = [{"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": "default"}}]
    for klass in CLASSES:
        objects.append({"apiVersion": KUEUE, "kind": "WorkloadPriorityClass", "metadata": {"name": klass.name},
                        "value": klass.priority})
    for c in range(COHORTS):
        for q in range(QUEUES_PER_COHORT):
            name = f"cq-{c}-{q}"
            objects.append({"apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": name}, "spec": {
                "cohort": f"cohort-{c}",
                "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority"},
                "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [{"name": "default", "resources": [
                    {"name": "cpu", "nominalQuota": str(NOMINAL), "borrowingLimit": str(BORROWING_LIMIT)}]}]}]}})
            objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            objects.append({"apiVersion": KUEUE, "kind": "LocalQueue", "metadata": {"name": "lq", "namespace": name},
                            "spec": {"clusterQueue": name}})
    return objects


def job_manifest(namespace: str, name: str, klass: WorkloadClass) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kueue.x-k8s.io/queue-name": "lq", "kueue.x-k8s.io/priority-class": klass.name}},
            "spec": {"ttlSecondsAfterFinished": 0, "template": {
                "metadata": {"annotations": {RUNTIME_ANNOTATION: str(klass.runtime_ms)}},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": "sim", "resources": {"requests": {"cpu": str(klass.cpu)}}}]}}}}


async def submit(store: Store, tracker: Tracker, klass: WorkloadClass, count: int, queues: list[str]) -> None:
    start = time.monotonic()
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i * klass.interval_ms / 1000 - time.monotonic()))
        for namespace in queues:
            name = f"{klass.name}-{i}"
            tracker.created[f"{namespace}/{name}"] = time.monotonic()
            tracker.klass[f"{namespace}/{name}"] = klass.name
            await store.create(job_manifest(namespace, name, klass))


async def run(scale: float, db: Path, progress: bool) -> dict[str, Any]:
    store = await SqliteStore.open(db, default_registry(), history_limit=50_000)
    install_admission_hooks(store)
    queues = [f"cq-{c}-{q}" for c in range(COHORTS) for q in range(QUEUES_PER_COHORT)]
    capacity = COHORTS * QUEUES_PER_COHORT * NOMINAL
    await NodeRegistrar(store, node_name=NODE, cpu=str(capacity), memory="4Ti", max_pods=100_000).register()
    for obj in queue_objects():
        await store.create(obj)
    informers = InformerFactory(store)
    recorder = EventRecorder(store, "bench")
    tracker = Tracker()
    admission = AdmissionController(informers, store, recorder, options=AdmissionOptions(debounce=0.01))
    informers.informer(store.registry.lookup("workloads.kueue.x-k8s.io")).add_handler(
        lambda change, obj, old: tracker.on_workload(change, obj, old))
    manager = Manager(informers)
    manager.add(JobController(informers, store, recorder, workers=4))
    manager.add(Scheduler(informers, store, recorder, node_name=NODE))
    manager.add(JobIntegration(informers, store, recorder, requeue_base=0.1, requeue_max=2.0, workers=4))
    manager.add(admission)
    manager.add(SimKubelet(store, informers))
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    counts = {k.name: max(1, round(k.count * scale)) for k in CLASSES}
    total = sum(counts.values()) * len(queues)
    work = sum(counts[k.name] * k.cpu * k.runtime_ms / 1000 for k in CLASSES) * len(queues)  # cpu-seconds
    started = time.monotonic()
    cpu_started = time.process_time()
    submitters = [asyncio.create_task(submit(store, tracker, k, counts[k.name], queues)) for k in CLASSES]
    last_print = started
    last_progress, seen = started, -1
    while len(tracker.finished) < total:
        await asyncio.sleep(0.2)
        if len(tracker.finished) != seen:
            seen, last_progress = len(tracker.finished), time.monotonic()
        elif time.monotonic() - last_progress > 30:
            _report_stall(admission, informers, store)
            break
        if progress and time.monotonic() - last_print > 5:
            last_print = time.monotonic()
            holding = sum(cpu for _, cpu in tracker.holding.values()) // 1000
            print(f"  t={last_print - started:5.1f}s created={len(tracker.created)} admitted={len(tracker.admitted)}"
                  f" finished={len(tracker.finished)} holding={holding}/{capacity} cpu cycles={admission.cycles}"
                  f" process cpu={time.process_time() - cpu_started:.1f}s", flush=True)
    wall = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    await asyncio.gather(*submitters)
    for since, cpu in tracker.holding.values():
        tracker.cpu_seconds += cpu * (time.monotonic() - since)
    stop.set()
    await task
    await store.close()
    tta: dict[str, list[float]] = {}
    for key, created in tracker.created.items():
        if key in tracker.admitted:
            tta.setdefault(tracker.klass[key], []).append(tracker.admitted[key] - created)
    return {"wall": wall, "usage": tracker.cpu_seconds / 1000 / (capacity * wall), "tta": tta, "total": total,
            "cycles": admission.cycles, "ideal": work / capacity, "cpu": cpu, "held": tracker.held}


def _report_stall(admission: AdmissionController, informers: InformerFactory, store: Store) -> None:
    print("no progress for 30 s; waiting workloads:")
    result = admission.last_result
    for key, wait in sorted((result.waiting if result else {}).items())[:20]:
        print(f"  {key}: {wait.describe()}")
    workloads = informers.informer(store.registry.lookup("workloads.kueue.x-k8s.io")).list()
    jobs = informers.informer(store.registry.lookup("jobs"))
    pods = informers.informer(store.registry.lookup("pods"))
    for workload in workloads[:12]:
        print("  ", workload["metadata"]["namespace"], workload["metadata"]["name"],
              [(c["type"], c["status"], c.get("reason")) for c in workload.get("status", {}).get("conditions", [])])
        owner = (workload["metadata"].get("ownerReferences") or [{}])[0].get("name")
        job = jobs.get(owner, workload["metadata"]["namespace"]) if owner else None
        if job is not None:
            print("     job suspend:", job["spec"].get("suspend"), job.get("status"))
            mine = [p for p in pods.list(job["metadata"]["namespace"])
                    if p["metadata"].get("labels", {}).get("job-name") == owner]
            print("     pods:", [(p["metadata"]["name"], p.get("status", {}).get("phase")) for p in mine])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each class's workload count")
    parser.add_argument("--quiet", action="store_true", help="no progress lines (every 5 s otherwise)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.scale, Path(tmp) / "state.db", not args.quiet))
    print(f"workloads: {result['total']}  cycles: {result['cycles']}")
    print(f"wall time: {result['wall']:.1f} s (Kueue: 351 s); ideal {result['ideal']:.1f} s (work / nominal quota): "
          f"{result['ideal'] / result['wall'] * 100:.0f}% of ideal")
    print(f"process CPU time: {result['cpu']:.1f} s ({result['cpu'] / result['wall'] * 100:.0f}% of wall)")
    print(f"usage:     {result['usage'] * 100:.1f}% (Kueue: 55.9%)")
    published = {"large": 16.5, "medium": 76.8, "small": 215.5}
    for name, values in sorted(result["tta"].items()):
        print(f"mean time to admission, {name:<6}: {statistics.fmean(values):6.1f} s (Kueue: {published[name]} s)")
    runtimes = {k.name: k.runtime_ms / 1000 for k in CLASSES}
    for name, values in sorted(result["held"].items()):  # the pipeline's cost in quota
        print(f"quota held beyond the runtime, {name:<6}: mean {statistics.fmean(values) - runtimes[name]:5.2f} s "
              f"(admission -> pod running, and pod done -> Workload finished)")


if __name__ == "__main__":
    main()
