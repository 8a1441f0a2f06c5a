"""The batch controllers (Job and pod-group integrations, admission loop) on a real SqliteStore with
the real Job controller and scheduler, and a simulated kubelet that runs bound pods and finishes
them when a test says so."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.integration.workloads_kit import Kubelet, condition, eventually, open_store, phase_of

from capstan.api.errors import InvalidError, NotFoundError
from capstan.controllers.batch import AdmissionController, AdmissionOptions, install_admission_hooks
from capstan.controllers.batch.common import ADMISSION_ATTEMPT
from capstan.controllers.batch.workload_job import JobIntegration
from capstan.controllers.batch.workload_pods import PodGroupIntegration
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.job import JobController
from capstan.controllers.node import NodeRegistrar
from capstan.controllers.runtime import Manager
from capstan.controllers.scheduler import Scheduler
from capstan.store.base import Obj, Store

KUEUE = "kueue.x-k8s.io/v1beta1"
NODE = "n1"


class Batch:
    """A store with the embedded batch stack running and a kubelet that starts bound pods."""

    def __init__(self, store: Store, admission: AdmissionController) -> None:
        self.store = store
        self.admission = admission
        self.kubelet = Kubelet(store)
        reg = store.registry
        self.jobs_rt = reg.lookup("jobs")
        self.workloads_rt = reg.lookup("workloads.kueue.x-k8s.io")
        self.pods_rt = reg.lookup("pods")

    async def job(self, name: str) -> Obj:
        return await self.store.get(self.jobs_rt, name, "default")

    async def workload_of(self, job_name: str) -> Obj | None:
        for workload in (await self.store.list(self.workloads_rt, "default")).items:
            refs = workload["metadata"].get("ownerReferences") or []
            if any(r["name"] == job_name for r in refs):
                return workload
        return None

    async def pods_of(self, job_name: str) -> list[Obj]:
        return await self.kubelet.pods(selector=f"batch.kubernetes.io/job-name={job_name}")

    async def finish_job(self, name: str) -> None:
        async def done() -> bool:
            for pod in await self.pods_of(name):
                if phase_of(pod) == "Running":
                    await self.kubelet.finish(pod)
            found = condition(await self.job(name), "Complete")
            return bool(found and found["status"] == "True")
        await eventually(done, what=f"Job {name} complete")


async def _kubelet_loop(store: Store, stop: asyncio.Event) -> None:
    kubelet = Kubelet(store)
    while not stop.is_set():
        for pod in await kubelet.pods():
            if (pod.get("spec") or {}).get("nodeName") == NODE and phase_of(pod) == "Pending" \
                    and not pod["metadata"].get("deletionTimestamp"):
                await kubelet.run(pod)
            elif pod["metadata"].get("deletionTimestamp") and phase_of(pod) != "Failed":
                with contextlib.suppress(Exception):
                    await store.delete(kubelet.pods_rt, pod["metadata"]["name"], "default")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def batch(tmp_path: Path, *, cpu: str = "8") -> AsyncIterator[Batch]:
    store = await open_store(tmp_path)
    install_admission_hooks(store)
    registrar = NodeRegistrar(store, node_name=NODE, cpu=cpu, memory="16Gi")
    await registrar.register()
    informers = InformerFactory(store)
    recorder = EventRecorder(store, "test")
    admission = AdmissionController(informers, store, recorder, options=AdmissionOptions(position_refresh=0.5))
    manager = Manager(informers)
    manager.add(JobController(informers, store, recorder))
    manager.add(Scheduler(informers, store, recorder, node_name=NODE))
    manager.add(JobIntegration(informers, store, recorder, requeue_base=0.2, requeue_max=1.0))
    manager.add(PodGroupIntegration(informers, store, recorder))
    manager.add(admission)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    kubelet = asyncio.create_task(_kubelet_loop(store, stop))
    try:
        yield Batch(store, admission)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, kubelet), timeout=60)
        await store.close()


# ---- manifests ----------------------------------------------------------------------------------

def flavor(name: str = "default", **labels: str) -> Obj:
    return {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": name},
            "spec": {"nodeLabels": labels} if labels else {}}


def cluster_queue(name: str, cpu: str, *, cohort: str | None = None, flavor_name: str = "default",
                  borrowing_limit: str | None = None, **preemption: str) -> Obj:
    quota: dict[str, Any] = {"name": "cpu", "nominalQuota": cpu}
    if borrowing_limit is not None:
        quota["borrowingLimit"] = borrowing_limit
    spec: dict[str, Any] = {"resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
        {"name": flavor_name, "resources": [quota]}]}]}
    if cohort:
        spec["cohort"] = cohort
    if preemption:
        spec["preemption"] = preemption
    return {"apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": name}, "spec": spec}


def local_queue(name: str, cq: str) -> Obj:
    return {"apiVersion": KUEUE, "kind": "LocalQueue", "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterQueue": cq}}


def priority_class(name: str, value: int) -> Obj:
    return {"apiVersion": KUEUE, "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value}


def job(name: str, queue: str | None, cpu: str = "1", *, parallelism: int = 1, priority: str | None = None,
        depends_on: str | None = None) -> Obj:
    labels = {"kueue.x-k8s.io/queue-name": queue} if queue else {}
    if priority:
        labels["kueue.x-k8s.io/priority-class"] = priority
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": labels}
    if depends_on:
        meta["annotations"] = {"capstan.io/depends-on": depends_on}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"parallelism": parallelism, "completions": parallelism, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "command": ["true"], "resources": {"requests": {"cpu": cpu}}}]}}}}


async def setup(store: Store, *objects: Obj) -> None:
    for obj in objects:
        await store.create(obj)


def reserved(workload: Obj | None) -> dict[str, Any] | None:
    return condition(workload, "QuotaReserved") if workload else None


async def admitted(b: Batch, name: str) -> bool:
    found = reserved(await b.workload_of(name))
    return bool(found and found["status"] == "True")


async def running_jobs(b: Batch, *names: str) -> dict[str, bool]:
    return {n: not (await b.job(n))["spec"].get("suspend") for n in names}


# ---- tests --------------------------------------------------------------------------------------

async def test_jobs_wait_within_quota_and_are_admitted_by_priority_then_fifo(tmp_path: Path) -> None:
    async with batch(tmp_path) as b:
        await setup(b.store, flavor(), cluster_queue("cq", "2"), local_queue("lq", "cq"),
                     priority_class("high", 100))
        for name in ("a", "b"):
            await b.store.create(job(name, "lq"))
        await eventually(lambda: admitted(b, "b"), what="b admitted")
        await b.store.create(job("c", "lq"))
        await b.store.create(job("urgent", "lq", priority="high"))
        created = await b.job("c")
        assert created["spec"]["suspend"] is True  # the mutating hook: never a pod before admission

        async def two_running() -> bool:
            return list((await running_jobs(b, "a", "b", "c", "urgent")).values()) == [True, True, False, False]
        await eventually(two_running, what="a and b running, the rest waiting")
        assert await b.pods_of("c") == [] and await b.pods_of("urgent") == []

        async def waiting_reason() -> dict[str, Any] | None:
            found = reserved(await b.workload_of("c"))
            return found if found and found.get("reason") == "InsufficientQuota" else None
        wait = await eventually(waiting_reason, what="c's wait reason")
        assert wait["status"] == "False"
        assert 'position 2 in ClusterQueue "cq"' in wait["message"]
        assert "1 higher-priority workload(s) ahead" in wait["message"]
        assert 'cpu in flavor "default": requested 1, available 0, short by 1' in wait["message"]
        attempt = json.loads((await b.workload_of("c"))["metadata"]["annotations"][ADMISSION_ATTEMPT])
        assert attempt["reason"] == "InsufficientQuota" and attempt["shortages"][0]["resource"] == "cpu"

        await b.finish_job("a")

        async def urgent_next() -> bool:
            return list((await running_jobs(b, "c", "urgent")).values()) == [False, True]
        await eventually(urgent_next, what="the high-priority job admitted before the older one")
        workload = await b.workload_of("urgent")
        assert workload is not None
        assert workload["status"]["admission"]["clusterQueue"] == "cq"
        assert workload["status"]["admission"]["podSetAssignments"][0]["flavors"] == {"cpu": "default"}
        assert condition(workload, "Admitted")["status"] == "True"
        finished = await b.workload_of("a")
        assert condition(finished, "Finished")["status"] == "True"

        cq = await b.store.get(b.store.registry.lookup("clusterqueues.kueue.x-k8s.io"), "cq")

        async def cq_status() -> Obj | None:
            found = await b.store.get(b.store.registry.lookup("clusterqueues.kueue.x-k8s.io"), "cq")
            status = found.get("status") or {}
            return found if status.get("reservingWorkloads") == 2 and status.get("pendingWorkloads") == 1 else None
        cq = await eventually(cq_status, what="ClusterQueue status")
        usage = cq["status"]["flavorsReservation"][0]
        assert usage == {"name": "default", "resources": [{"name": "cpu", "total": "2", "borrowed": "0"}]}
        assert condition(cq, "Active")["reason"] == "Ready"


async def test_borrowing_then_reclaim_suspends_borrowers_and_restores_their_template(tmp_path: Path) -> None:
    async with batch(tmp_path) as b:
        await setup(b.store, flavor("default", **{"kubernetes.io/hostname": NODE}),
                    cluster_queue("team-a", "2", cohort="org"),
                    cluster_queue("team-b", "2", cohort="org", reclaimWithinCohort="Any"),
                    local_queue("a", "team-a"), local_queue("b", "team-b"))
        for name in ("a1", "a2", "a3", "a4"):
            await b.store.create(job(name, "a"))

        async def all_a_running() -> bool:
            return all((await running_jobs(b, "a1", "a2", "a3", "a4")).values())
        await eventually(all_a_running, what="team-a borrowing team-b's idle quota")
        started = await b.job("a4")
        assert started["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": NODE}
        assert "capstan.io/original-scheduling" in started["metadata"]["annotations"]

        await b.store.create(job("b1", "b", cpu="2"))

        async def reclaimed() -> dict[str, bool] | None:
            state = await running_jobs(b, "a1", "a2", "a3", "a4", "b1")
            return state if state["b1"] and sum(state.values()) == 3 else None
        state = await eventually(reclaimed, what="team-b reclaiming its quota")
        victims = [n for n in ("a1", "a2", "a3", "a4") if not state[n]]
        assert len(victims) == 2
        for victim in victims:
            suspended = await b.job(victim)
            assert "nodeSelector" not in suspended["spec"]["template"]["spec"]  # original template back
            assert "capstan.io/original-scheduling" not in (suspended["metadata"].get("annotations") or {})
            workload = await b.workload_of(victim)
            evicted = condition(workload, "Evicted")
            assert evicted["status"] == "True" and evicted["reason"] == "Preempted"
            assert "preempted to make room for default/job-b1-" in evicted["message"]
            assert condition(workload, "Preempted")["reason"] == "InCohortReclamation"

            async def requeued(v: str = victim) -> Obj | None:
                found = await b.workload_of(v)
                requeue = condition(found, "Requeued") if found else None
                return found if requeue and requeue["status"] == "True" else None
            again = await eventually(requeued, what=f"{victim} requeued")
            assert again["status"].get("admission") is None
            assert again["status"]["requeueState"]["count"] == 1


async def test_priority_preemption_suspends_the_lower_job_and_readmits_it_later(tmp_path: Path) -> None:
    async with batch(tmp_path) as b:
        await setup(b.store, flavor(), cluster_queue("cq", "2", withinClusterQueue="LowerPriority"),
                    local_queue("lq", "cq"), priority_class("low", 10), priority_class("high", 1000))
        await b.store.create(job("batch", "lq", cpu="2", priority="low"))
        await eventually(lambda: admitted(b, "batch"), what="the low-priority job admitted")

        async def pod_running() -> bool:
            return any(phase_of(p) == "Running" for p in await b.pods_of("batch"))
        await eventually(pod_running, what="its pod running")
        await b.store.create(job("hotfix", "lq", cpu="2", priority="high"))

        async def swapped() -> bool:
            return await running_jobs(b, "batch", "hotfix") == {"batch": False, "hotfix": True}
        await eventually(swapped, what="the high-priority job running instead")
        victim = await b.workload_of("batch")
        assert condition(victim, "Preempted")["reason"] == "InClusterQueue"
        assert all(phase_of(p) != "Running" for p in await b.pods_of("batch"))

        await b.finish_job("hotfix")

        async def batch_again() -> bool:
            return (await running_jobs(b, "batch"))["batch"]
        await eventually(batch_again, what="the preempted job admitted again")
        await b.finish_job("batch")


async def test_a_gang_waits_whole_then_all_its_pods_are_ungated_together(tmp_path: Path) -> None:
    async with batch(tmp_path) as b:
        await setup(b.store, flavor(), cluster_queue("cq", "4"), local_queue("lq", "cq"))
        await b.store.create(job("filler", "lq", cpu="2"))
        await eventually(lambda: admitted(b, "filler"), what="the filler admitted")
        for i in range(4):
            await b.store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": f"gang-{i}", "namespace": "default",
                "labels": {"kueue.x-k8s.io/queue-name": "lq", "kueue.x-k8s.io/pod-group-name": "gang"},
                "annotations": {"kueue.x-k8s.io/pod-group-total-count": "4"}},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "command": ["true"], "resources": {"requests": {"cpu": "1"}}}]}})
        workloads = b.store.registry.lookup("workloads.kueue.x-k8s.io")

        async def gang_waiting() -> Obj | None:
            try:
                found = reserved(await b.store.get(workloads, "gang", "default"))
            except NotFoundError:
                return None
            return found if found and found.get("reason") == "InsufficientQuota" else None
        wait = await eventually(gang_waiting, what="the gang waiting for quota")
        assert "requested 4, available 2" in wait["message"]
        gang = await b.kubelet.pods(selector="kueue.x-k8s.io/pod-group-name=gang")
        assert len(gang) == 4
        assert all(p["spec"].get("schedulingGates") == [{"name": "kueue.x-k8s.io/admission"}] for p in gang)
        assert all(not p["spec"].get("nodeName") for p in gang)

        await b.finish_job("filler")

        async def all_bound() -> list[Obj] | None:
            pods = await b.kubelet.pods(selector="kueue.x-k8s.io/pod-group-name=gang")
            return pods if all(p["spec"].get("nodeName") for p in pods) else None
        pods = await eventually(all_bound, what="the whole gang scheduled")
        assert all(not p["spec"].get("schedulingGates") for p in pods)
        for pod in pods:
            await b.kubelet.finish(pod)

        async def finished() -> bool:
            found = condition(await b.store.get(workloads, "gang", "default"), "Finished")
            return bool(found and found["status"] == "True")
        await eventually(finished, what="the gang workload finished")


async def test_a_job_naming_a_missing_local_queue_stays_suspended_with_a_clear_condition(tmp_path: Path) -> None:
    async with batch(tmp_path) as b:
        await setup(b.store, flavor(), cluster_queue("cq", "2"))
        await b.store.create(job("lost", "nope"))

        async def missing() -> dict[str, Any] | None:
            found = reserved(await b.workload_of("lost"))
            return found if found and found.get("reason") == "LocalQueueDoesNotExist" else None
        found = await eventually(missing, what="the LocalQueueDoesNotExist condition")
        assert found["status"] == "False"
        assert found["message"] == 'LocalQueue "nope" doesn\'t exist'
        assert (await b.job("lost"))["spec"]["suspend"] is True
        assert await b.pods_of("lost") == []
        await b.store.create(local_queue("nope", "cq"))
        await eventually(lambda: admitted(b, "lost"), what="admission once the LocalQueue exists")


async def test_a_deleted_flavor_makes_the_cluster_queue_inactive(tmp_path: Path) -> None:
    # A queue naming a missing flavor is refused at create (test_batch_validation.py); deleting the
    # flavor afterwards leaves the queue inactive, as in Kueue.
    async with batch(tmp_path) as b:
        await setup(b.store, flavor("gpu-a100"), cluster_queue("cq", "2", flavor_name="gpu-a100"),
                    local_queue("lq", "cq"))
        await b.store.delete(b.store.registry.lookup("resourceflavors.kueue.x-k8s.io"), "gpu-a100")
        cqs = b.store.registry.lookup("clusterqueues.kueue.x-k8s.io")

        async def inactive() -> dict[str, Any] | None:
            found = condition(await b.store.get(cqs, "cq"), "Active")
            return found if found and found["status"] == "False" else None
        active = await eventually(inactive, what="the Active=False condition")
        assert active["reason"] == "FlavorNotFound"
        assert 'ResourceFlavor "gpu-a100" not found (spec.resourceGroups[0].flavors[0].name)' in active["message"]
        await b.store.create(job("w", "lq"))

        async def misconfigured() -> dict[str, Any] | None:
            found = reserved(await b.workload_of("w"))
            return found if found and found.get("reason") == "Misconfigured" else None
        await eventually(misconfigured, what="the workload's Misconfigured reason")
        lq = await b.store.get(b.store.registry.lookup("localqueues.kueue.x-k8s.io"), "lq", "default")
        await eventually(lambda: _lq_inactive(b, lq), what="the LocalQueue inactive")


async def _lq_inactive(b: Batch, lq: Obj) -> bool:
    found = await b.store.get(b.store.registry.lookup("localqueues.kueue.x-k8s.io"), lq["metadata"]["name"],
                              "default")
    active = condition(found, "Active")
    return bool(active and active["reason"] == "ClusterQueueIsInactive")


async def test_dependencies_wait_for_completion_and_a_failed_dependency_finishes_the_dependent(
        tmp_path: Path) -> None:
    async with batch(tmp_path) as b:
        await setup(b.store, flavor(), cluster_queue("cq", "4"), local_queue("lq", "cq"))
        await b.store.create(job("prepare", "lq"))
        await b.store.create(job("train", "lq", depends_on="prepare"))

        async def not_ready() -> dict[str, Any] | None:
            found = reserved(await b.workload_of("train"))
            return found if found and found.get("reason") == "NotReady" else None
        found = await eventually(not_ready, what="train waiting for prepare")
        assert found["message"] == 'not ready: waiting for dependencies to complete: Job "prepare"'
        assert (await b.job("train"))["spec"]["suspend"] is True
        await b.finish_job("prepare")
        await eventually(lambda: admitted(b, "train"), what="train admitted after prepare completed")

        await b.store.create(job("broken", "lq"))
        await b.store.create(job("after-broken", "lq", depends_on="broken"))

        async def fail_broken() -> bool:
            for pod in await b.pods_of("broken"):
                if phase_of(pod) == "Running":
                    await b.kubelet.finish(pod, "Failed")
            found = condition(await b.job("broken"), "Failed")
            return bool(found and found["status"] == "True")
        await b.store.patch(b.jobs_rt, "broken", "default", {"spec": {"backoffLimit": 0}})
        await eventually(fail_broken, what="the dependency failed")

        async def dependency_failed() -> dict[str, Any] | None:
            found = condition(await b.workload_of("after-broken"), "Finished")
            return found if found and found["status"] == "True" else None
        finished = await eventually(dependency_failed, what="the dependent finished as DependencyFailed")
        assert finished["reason"] == "DependencyFailed"
        assert finished["message"] == 'dependency Job "broken" failed: BackoffLimitExceeded'
        assert (await b.job("after-broken"))["spec"]["suspend"] is True


async def test_a_priority_class_label_must_name_an_existing_class(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    install_admission_hooks(store)
    try:
        try:
            await store.create(job("x", "lq", priority="missing"))
        except InvalidError as exc:
            assert exc.causes[0].field == "metadata.labels[kueue.x-k8s.io/priority-class]"
            assert exc.causes[0].message == 'WorkloadPriorityClass "missing" not found'
        else:
            raise AssertionError("the Job was accepted")
        plain = await store.create(job("plain", None))
        assert not plain["spec"].get("suspend")  # only queued Jobs are suspended on create
    finally:
        await store.close()
