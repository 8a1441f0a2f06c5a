"""Benchmark: Kueue-style admission by ``capstan operator`` on a real control plane. Prints figures; not a test.

    python bench/bench_kube_admission.py [--nodes 1000] [--jobs 10000] [--queues 4] [--quota-cpu 300]
                                         [--run-for 1s] [--state-dir DIR]

Starts a private control plane (tests/k8s/cluster.py; or reuses ``--state-dir`` / $CAPSTAN_KUBE_STATE), a
private kwok for ``--nodes`` simulated Nodes, ``capstan operator`` as a process with its admission webhook
registered with the API server, one ResourceFlavor and ``--queues`` ClusterQueues (``--quota-cpu`` each)
with a LocalQueue each. Then it creates ``--jobs`` queued one-pod Jobs (100m cpu each, spread over the
queues) as fast as 32 requests in flight allow, and waits until every Workload is admitted.

Figures: Job creation rate (through the mutating webhook), time from the first Job created to every
Workload admitted, and admissions per second from the Workloads' Admitted condition times (whole seconds,
as Kueue writes them): overall, and the best 10-second window. With the default quota every Job fits at
once, so the figure is the admission loop's throughput, not the Jobs' run time; a smaller ``--quota-cpu``
makes admissions wait for completions (then kube-controller-manager's pod creation rate, 20 requests/s by
default, bounds everything).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.k8s.batch_kit import (  # noqa: E402
    OperatorProcess,
    PrivateKwok,
    admissions,
    cluster_queue,
    create_all,
    flavor,
    kwok_node,
    local_queue,
    queued_job,
)
from tests.k8s.cluster import KubeCluster, build_binaries, default_state_dir, start_cluster, stop_cluster  # noqa: E402
from tests.k8s.webhook_kit import SCOPE_LABEL, loopback_cert, registered  # noqa: E402

from capstan.api.registry import default_registry  # noqa: E402
from capstan.server.operator import crd_types  # noqa: E402
from capstan.store.base import Obj  # noqa: E402
from capstan.store.kube import KubeStore, install_crds  # noqa: E402


def admitted_so_far(metrics_url: str) -> int:
    """The operator's kueue_admitted_workloads counters, summed (cheap to read, unlike 10,000 Workloads)."""
    text = httpx.get(f"{metrics_url}/metrics", timeout=10).text
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("kueue_admitted_workloads_total{")))


async def sample(metrics_url: str, jobs: int, started: float, trajectory: list[tuple[float, int]]) -> None:
    """Every second, until all are admitted: (seconds since the first create, Workloads admitted so far)."""
    while True:
        admitted = await asyncio.to_thread(admitted_so_far, metrics_url)
        trajectory.append((time.monotonic() - started, admitted))
        if admitted >= jobs:
            return
        if len(trajectory) % 15 == 0:
            print(f"    t={trajectory[-1][0]:6.1f} s  admitted {admitted}", flush=True)
        await asyncio.sleep(1.0)


def report(trajectory: list[tuple[float, int]], jobs: int) -> None:
    """Admissions per second from the operator's counter, sampled each second since the first create."""
    first = next((t for t, n in trajectory if n > 0), trajectory[-1][0])
    last = trajectory[-1][0]
    print(f"  every Workload admitted {last:.1f} s after the first Job was created; first admission seen "
          f"at {first:.1f} s")
    print(f"  admissions/s from the first admission to the last: {jobs / max(1.0, last - first):.1f}")
    best = 0.0
    for i, (t, n) in enumerate(trajectory):
        later = [(t2, n2) for t2, n2 in trajectory[i:] if t2 - t >= 10.0]
        if later:
            best = max(best, (later[0][1] - n) / (later[0][0] - t))
    print(f"  admissions/s, best 10-second window: {best:.1f}")


async def list_all(store: KubeStore, plural: str, namespace: str) -> list[Obj]:
    rt = store.registry.lookup(plural)
    items: list[Obj] = []
    token: str | None = None
    while True:
        page = await store.list(rt, namespace, limit=1000, continue_token=token)
        items.extend(page.items)
        token = page.continue_token
        if not token:
            return items


async def run(cluster: KubeCluster, workdir: Path, nodes: int, jobs: int, queues: int, quota_cpu: int,
              run_for: str) -> None:
    store = await KubeStore.connect(default_registry(), kubeconfig=cluster.kubeconfig)
    scope = uuid.uuid4().hex[:8]
    namespace = f"bench-{scope}"
    label = {"capstan-bench": scope}
    kwok = PrivateKwok.start(cluster, f"capstan-bench-{scope}", workdir)
    operator: OperatorProcess | None = None
    try:
        await install_crds(store, crd_types())
        await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        t0 = time.monotonic()
        await create_all(store, [kwok_node(f"bench-{scope}-{i:04d}", kwok.annotation, label) for i in range(nodes)],
                         concurrency=32)
        print(f"  {nodes} kwok Nodes created in {time.monotonic() - t0:.1f} s")
        cert = loopback_cert(workdir / "certs")
        operator = OperatorProcess.start(cluster, namespace, workdir / "certs", workdir)
        async with registered(store, operator.webhook_url, cert.ca_pem, f"capstan-bench-{scope}", scope):
            await store.create(flavor(f"kwok-{scope}", label))
            cqs = [f"cq-{q}-{scope}" for q in range(queues)]
            for q, cq in enumerate(cqs):
                await store.create(cluster_queue(cq, f"kwok-{scope}", str(quota_cpu)))
                await store.create(local_queue(f"lq-{q}", namespace, cq))
            await asyncio.sleep(2)  # the operator's informers see the queues
            to_create = [queued_job(f"job-{i:05d}", namespace, f"lq-{i % queues}", labels={SCOPE_LABEL: scope},
                                    run_for=run_for) for i in range(jobs)]
            trajectory: list[tuple[float, int]] = []
            started = time.monotonic()
            sampler = asyncio.create_task(sample(operator.metrics_url, jobs, started, trajectory))
            await create_all(store, to_create, concurrency=32)
            created = time.monotonic() - started
            print(f"  {jobs} queued Jobs created in {created:.1f} s: {jobs / created:.0f} Jobs/s "
                  "(each through the mutating and validating webhooks)", flush=True)
            await asyncio.wait_for(sampler, 3600)
            report(trajectory, jobs)
            workloads = await list_all(store, "workloads.kueue.x-k8s.io", namespace)
            history = admissions(workloads)
            per_second = Counter(int(a.admitted_at) for a in history)
            print(f"  Workloads: {len(workloads)}, admitted: {len(history)}; Admitted condition times span "
                  f"{max(per_second) - min(per_second) + 1} s (a cycle stamps all its admissions with its start "
                  f"time, so these group by cycle: {len(per_second)} distinct seconds, at most "
                  f"{max(per_second.values())} in one)")
    finally:
        if operator is not None:
            operator.stop()
        with contextlib.suppress(Exception):
            await store.request("DELETE", f"/api/v1/namespaces/{namespace}")
        for path in [f"/apis/kueue.x-k8s.io/v1beta1/resourceflavors/kwok-{scope}"] + [
                f"/apis/kueue.x-k8s.io/v1beta1/clusterqueues/cq-{q}-{scope}" for q in range(queues)]:
            with contextlib.suppress(Exception):
                await store.request("DELETE", path)
        with contextlib.suppress(Exception):
            await store.request("DELETE", "/api/v1/nodes", params={"labelSelector": f"capstan-bench={scope}"})
        kwok.stop()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--quota-cpu", type=int, default=300, help="cpu quota of each ClusterQueue")
    parser.add_argument("--run-for", default="1s", help="how long kwok runs each pod")
    parser.add_argument("--state-dir", type=Path, default=None, help="reuse (and keep) this cluster")
    args = parser.parse_args()
    print(f"bench_kube_admission: {args.nodes} nodes, {args.jobs} Jobs, {args.queues} ClusterQueues of "
          f"{args.quota_cpu} cpu; Python {platform.python_version()} on {platform.machine()}")
    build_binaries()
    shared = args.state_dir or default_state_dir()
    with tempfile.TemporaryDirectory(prefix="bench-kube-admission-") as tmp:
        state = shared or Path(tmp) / "state"
        cluster = start_cluster(state)
        try:
            asyncio.run(run(cluster, Path(tmp), args.nodes, args.jobs, args.queues, args.quota_cpu, args.run_for))
        finally:
            if shared is None:
                stop_cluster(state)


if __name__ == "__main__":
    main()
