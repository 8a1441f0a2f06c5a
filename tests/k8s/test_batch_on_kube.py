"""Kueue-style batch admission on a real control plane.

``capstan operator`` runs as a process with its admission webhook (registered with the API server at
https://127.0.0.1:PORT). 50 simulated Nodes (a private kwok, tests/k8s/batch_kit.py) carry a label the
ResourceFlavor selects and kwok's taint the flavor tolerates. Two ClusterQueues have far less quota than
the 500 queued one-pod Jobs ask for. Each Job is created suspended by the webhook, admitted by the
operator (unsuspended with the flavor's nodeSelector and toleration), its pod made by
kube-controller-manager, bound by kube-scheduler, run by kwok for a moment, and completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from capstan.api.registry import default_registry
from capstan.controllers.batch.common import epoch
from capstan.server.operator import crd_types
from capstan.store.base import Obj
from capstan.store.kube import KubeStore, install_crds
from tests.k8s.batch_kit import (
    KWOK_TOLERATION,
    OperatorProcess,
    PrivateKwok,
    admissions,
    cluster_queue,
    create_all,
    delete_namespace,
    flavor,
    kwok_node,
    local_queue,
    peak_usage,
    poll,
    queued_job,
)
from tests.k8s.cluster import KubeCluster
from tests.k8s.webhook_kit import SCOPE_LABEL, loopback_cert, registered

NODES = 50
JOBS = 500
JOB_CPU_MILLI = 100
QUOTAS_MILLI = {"a": 4000, "b": 2500}  # 40 and 25 Jobs at once, of 250 each


@dataclass
class Batch:
    store: KubeStore
    scope: str
    namespace: str
    node_label: dict[str, str]
    nodes: set[str]
    operator: OperatorProcess
    cluster_queues: dict[str, str] = field(default_factory=dict)  # queue letter -> ClusterQueue name

    @property
    def workloads_rt(self):  # type: ignore[no-untyped-def]
        return self.store.registry.lookup("workloads.kueue.x-k8s.io")

    async def workloads(self) -> list[Obj]:
        return (await self.store.list(self.workloads_rt, self.namespace)).items

    async def jobs(self) -> list[Obj]:
        return (await self.store.list(self.store.registry.lookup("jobs"), self.namespace)).items

    async def pods(self) -> list[Obj]:
        return (await self.store.list(self.store.registry.lookup("pods"), self.namespace)).items


@pytest.fixture
async def batch(kube_cluster: KubeCluster, tmp_path: Path) -> AsyncIterator[Batch]:
    if not kube_cluster.has_kwok:
        pytest.skip("kwok was not built: nothing would run the Pods")
    store = await KubeStore.connect(default_registry(), kubeconfig=kube_cluster.kubeconfig)
    scope = uuid.uuid4().hex[:8]
    namespace = f"batch-{scope}"
    node_label = {"capstan-batch": scope}
    kwok = PrivateKwok.start(kube_cluster, f"capstan-batch-{scope}", tmp_path)
    cluster_scoped: list[str] = []
    try:
        await install_crds(store, crd_types())
        await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        nodes = [kwok_node(f"batch-{scope}-{i:03d}", kwok.annotation, node_label) for i in range(NODES)]
        await create_all(store, nodes)
        cert = loopback_cert(tmp_path / "certs")
        operator = OperatorProcess.start(kube_cluster, namespace, tmp_path / "certs", tmp_path)
        try:
            async with registered(store, operator.webhook_url, cert.ca_pem, f"capstan-batch-{scope}", scope):
                flavor_name = f"kwok-{scope}"
                await store.create(flavor(flavor_name, node_label))
                cluster_scoped.append(f"/apis/kueue.x-k8s.io/v1beta1/resourceflavors/{flavor_name}")
                batch = Batch(store, scope, namespace, node_label, {n["metadata"]["name"] for n in nodes}, operator)
                for letter, quota in QUOTAS_MILLI.items():
                    cq = f"cq-{letter}-{scope}"
                    await store.create(cluster_queue(cq, flavor_name, f"{quota}m", {SCOPE_LABEL: scope}))
                    cluster_scoped.append(f"/apis/kueue.x-k8s.io/v1beta1/clusterqueues/{cq}")
                    await store.create(local_queue(f"lq-{letter}", namespace, cq))
                    batch.cluster_queues[letter] = cq
                yield batch
        finally:
            operator.stop()
    finally:
        with contextlib.suppress(Exception):
            await delete_namespace(store, namespace)
        for path in cluster_scoped:
            with contextlib.suppress(Exception):
                await store.request("DELETE", path)
        with contextlib.suppress(Exception):
            await store.request("DELETE", "/api/v1/nodes", params={"labelSelector": f"capstan-batch={scope}"})
        kwok.stop()
        await store.close()


async def sample_usage(batch: Batch, peaks: dict[str, int], stop: asyncio.Event) -> None:
    """Every second: how many admitted, unfinished Workloads each ClusterQueue holds right now."""
    while not stop.is_set():
        held: dict[str, int] = {}
        for w in await batch.workloads():
            status = w.get("status") or {}
            cq = (status.get("admission") or {}).get("clusterQueue")
            finished = any(c.get("type") == "Finished" and c.get("status") == "True"
                           for c in status.get("conditions") or [])
            if cq and not finished:
                held[cq] = held.get(cq, 0) + 1
        for cq, count in held.items():
            peaks[cq] = max(peaks.get(cq, 0), count)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def complete(job: Obj) -> bool:
    return any(c.get("type") == "Complete" and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


# About 3 minutes on an idle 2-core machine, mostly kube-controller-manager at its default 20 requests/s.
@pytest.mark.timeout(480, func_only=True)
async def test_500_queued_jobs_are_admitted_within_quota_and_complete(batch: Batch) -> None:
    labels = {SCOPE_LABEL: batch.scope}
    jobs = [queued_job(f"job-{i:03d}", batch.namespace, f"lq-{'ab'[i % 2]}", labels=labels,
                       cpu=f"{JOB_CPU_MILLI}m", run_for="2s") for i in range(JOBS)]
    sampled: dict[str, int] = {}
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_usage(batch, sampled, stop_sampling))
    try:
        await create_all(batch.store, jobs)
        # Every Job came back from the API server suspended (the mutating webhook), none ran yet unadmitted.
        done = await poll(batch.jobs, lambda found: sum(map(complete, found)) == JOBS,
                          f"{JOBS} Jobs to complete", within=400, interval=2.0)
    finally:
        stop_sampling.set()
        await sampler
    assert len(done) == JOBS

    limits = {cq: QUOTAS_MILLI[letter] // JOB_CPU_MILLI for letter, cq in batch.cluster_queues.items()}
    # Sampled live: at no time did a ClusterQueue hold more than its quota.
    assert all(sampled.get(cq, 0) <= limit for cq, limit in limits.items()), (sampled, limits)

    # The same from the Workloads' condition times: every Workload admitted once and finished.
    workloads = await batch.workloads()
    history = admissions(workloads)
    assert len(history) == JOBS
    assert all(a.finished_at is not None for a in history)
    assert {a.cluster_queue for a in history} == set(limits)
    peaks = peak_usage(history)
    assert all(2 <= peaks[cq] <= limit for cq, limit in limits.items()), (peaks, limits)

    # kube-scheduler bound every pod to one of our kwok Nodes, with the flavor's nodeSelector and toleration.
    pods = await batch.pods()
    assert len(pods) == JOBS
    assert {p["spec"].get("nodeName") for p in pods} <= batch.nodes
    assert all(p["spec"].get("nodeSelector") == batch.node_label for p in pods)
    assert all(KWOK_TOLERATION in (p["spec"].get("tolerations") or []) for p in pods)
    assert all(p["status"]["phase"] == "Succeeded" for p in pods)

    # No Job ran a pod before its Workload was admitted (both times in whole seconds).
    admitted_at = {a.job: a.admitted_at for a in history}
    early = [(p["metadata"]["name"], p["metadata"]["creationTimestamp"]) for p in pods
             if epoch(p["metadata"]["creationTimestamp"]) < math.floor(admitted_at[_job_of(p)])]
    assert early == []


def _job_of(pod: Obj) -> str:
    return next(ref["name"] for ref in pod["metadata"]["ownerReferences"] if ref["kind"] == "Job")
