"""The Job controller against the real SQLite store, with a simulated kubelet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.workloads_kit import (
    FakeClock,
    Kubelet,
    PodWatcher,
    condition,
    eventually,
    open_store,
    phase_of,
    running,
)

from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.job import JobController
from capstan.core.workloads.job import CONTROLLER_UID_LABEL, JOB_NAME_LABEL
from capstan.store.base import Obj, Store


def manifest(name: str = "batch", **spec: Any) -> Obj:
    restart = spec.pop("restartPolicy", "Never")
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": {**spec, "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "restartPolicy": restart, "containers": [{"name": "main", "command": ["true"]}]}}}}


def job_controller(clock: FakeClock) -> Any:
    def factory(informers: InformerFactory, store: Store, recorder: EventRecorder) -> JobController:
        return JobController(informers, store, recorder, clock=clock)
    return factory


async def get_job(store: Store, name: str = "batch") -> Obj:
    return await store.get(store.registry.lookup("jobs"), name, "default")


async def finished(store: Store, kind: str, name: str = "batch") -> Obj | None:
    job = await get_job(store, name)
    found = condition(job, kind)
    return job if found and found["status"] == "True" else None


def live(pods: dict[str, Obj] | list[Obj]) -> list[Obj]:
    values = pods.values() if isinstance(pods, dict) else pods
    return [p for p in values if phase_of(p) not in ("Succeeded", "Failed")]


async def test_completions_with_parallelism_never_run_more_than_parallelism(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    most = 0

    def invariant(pods: dict[str, Obj]) -> None:
        nonlocal most
        most = max(most, len(live(pods)))
        assert len(live(pods)) <= 2, f"{len(live(pods))} pods running at once"

    async with PodWatcher(store, "default", invariant), running(store, job_controller(FakeClock())):
        await store.create(manifest(completions=5, parallelism=2))

        async def work() -> Obj | None:
            for pod in live(await kubelet.pods(selector="app=batch")):
                await kubelet.run(pod) if phase_of(pod) == "Pending" else await kubelet.finish(pod, "Succeeded")
            return await finished(store, "Complete")

        job = await eventually(work, what="the Job complete")
    status = job["status"]
    assert (status["succeeded"], status["active"], status.get("failed", 0)) == (5, 0, 0)
    assert condition(job, "Complete")["reason"] == "CompletionsReached"
    assert status["completionTime"] and status["startTime"]
    assert most == 2
    pods = await kubelet.pods(selector="app=batch")
    assert len(pods) == 5 and all(phase_of(p) == "Succeeded" for p in pods)  # finished pods are kept
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert labels[JOB_NAME_LABEL] == "batch" and labels[CONTROLLER_UID_LABEL] == job["metadata"]["uid"]
        assert pod["metadata"]["ownerReferences"][0]["controller"] is True
    events = (await store.list(store.registry.lookup("events"), "default")).items
    reasons = [e["reason"] for e in events if e["involvedObject"]["name"] == "batch"]
    assert reasons.count("SuccessfulCreate") == 5 and "Completed" in reasons
    await store.close()


async def test_failing_job_stops_at_backoff_limit(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    async with running(store, job_controller(FakeClock())):
        await store.create(manifest(backoffLimit=2))

        async def fail_all() -> Obj | None:
            for pod in live(await kubelet.pods(selector="app=batch")):
                await kubelet.finish(pod, "Failed")
            return await finished(store, "Failed")

        job = await eventually(fail_all, what="the Job failed")
        failed = condition(job, "Failed")
        assert (failed["reason"], failed["message"]) == ("BackoffLimitExceeded",
                                                         "Job has reached the specified backoff limit")
        assert job["status"]["failed"] == 3 and job["status"]["active"] == 0
        pods = await kubelet.pods(selector="app=batch")
        assert len(pods) == 3 and all(phase_of(p) == "Failed" for p in pods)
    events = (await store.list(store.registry.lookup("events"), "default")).items
    assert any(e["reason"] == "BackoffLimitExceeded" and e["type"] == "Warning" for e in events)
    await store.close()


async def test_active_deadline_kills_pods_and_fails(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    clock = FakeClock()
    async with running(store, job_controller(clock)) as [controller]:
        await store.create(manifest(parallelism=2, completions=4, activeDeadlineSeconds=30))

        async def two_running() -> list[Obj] | None:
            pods = live(await kubelet.pods(selector="app=batch"))
            for pod in pods:
                if phase_of(pod) == "Pending":
                    await kubelet.run(pod)
            return pods if len(pods) == 2 else None

        await eventually(two_running, what="two running pods")
        clock.advance(31)
        controller.queue.add(("default", "batch"))
        job = await eventually(lambda: finished(store, "Failed"), what="DeadlineExceeded")
        failed = condition(job, "Failed")
        assert (failed["reason"], failed["message"]) == ("DeadlineExceeded",
                                                         "Job was active longer than specified deadline")
        assert job["status"]["active"] == 0 and job["status"]["failed"] == 2
        assert await kubelet.pods(selector="app=batch") == []
    await store.close()


async def test_suspend_and_resume(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    clock = FakeClock()
    jobs = store.registry.lookup("jobs")
    async with running(store, job_controller(clock)):
        await store.create(manifest(parallelism=2, completions=2))
        await eventually(lambda: _count(kubelet, 2), what="two pods")
        started = (await get_job(store))["status"]["startTime"]

        await store.patch(jobs, "batch", "default", {"spec": {"suspend": True}})

        async def suspended() -> Obj | None:
            job = await get_job(store)
            found = condition(job, "Suspended")
            empty = not await kubelet.pods(selector="app=batch")
            return job if found and found["status"] == "True" and empty else None

        job = await eventually(suspended, what="suspended with no pods")
        assert condition(job, "Suspended")["reason"] == "JobSuspended" and job["status"]["active"] == 0

        clock.advance(120)
        await store.patch(jobs, "batch", "default", {"spec": {"suspend": False}})

        async def resumed() -> Obj | None:
            job = await get_job(store)
            found = condition(job, "Suspended")
            return job if found and found["status"] == "False" and await _count(kubelet, 2) else None

        job = await eventually(resumed, what="resumed with two pods")
        assert condition(job, "Suspended")["reason"] == "JobResumed"
        assert job["status"]["startTime"] != started
    await store.close()


async def _count(kubelet: Kubelet, wanted: int) -> bool:
    return len(live(await kubelet.pods(selector="app=batch"))) == wanted


async def test_ttl_after_finished_deletes_job_and_pods(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    clock = FakeClock()
    async with running(store, job_controller(clock)) as [controller]:
        await store.create(manifest(ttlSecondsAfterFinished=10))

        async def succeed() -> Obj | None:
            for pod in live(await kubelet.pods(selector="app=batch")):
                await kubelet.finish(pod, "Succeeded")
            return await finished(store, "Complete")

        await eventually(succeed, what="complete")
        clock.advance(5)
        controller.queue.add(("default", "batch"))
        await eventually(lambda: finished(store, "Complete"), what="still there")
        clock.advance(6)
        controller.queue.add(("default", "batch"))

        async def gone() -> bool:
            jobs = (await store.list(store.registry.lookup("jobs"), "default")).items
            return not jobs and not await kubelet.pods(selector="app=batch")

        await eventually(gone, what="the Job and its pods deleted")
    await store.close()


async def test_restart_mid_job_keeps_exact_counts(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    clock = FakeClock()
    async with running(store, job_controller(clock)):
        await store.create(manifest(completions=4, parallelism=2, backoffLimit=6))
        await eventually(lambda: _count(kubelet, 2), what="two pods")
        first, second = live(await kubelet.pods(selector="app=batch"))
        await kubelet.finish(first, "Succeeded")
        await kubelet.finish(second, "Failed")

        async def counted() -> Obj | None:
            job = await get_job(store)
            status = job.get("status") or {}
            return job if (status.get("succeeded"), status.get("failed"), status.get("active")) == (1, 1, 2) else None

        await eventually(counted, what="1 succeeded, 1 failed, 2 active")

    # While no controller runs, one more pod succeeds.
    third = live(await kubelet.pods(selector="app=batch"))[0]
    await kubelet.finish(third, "Succeeded")

    async with running(store, job_controller(clock)):
        async def recounted() -> Obj | None:
            job = await get_job(store)
            status = job.get("status") or {}
            return job if (status.get("succeeded"), status.get("failed")) == (2, 1) else None

        await eventually(recounted, what="2 succeeded, 1 failed after the restart")

        async def finish_rest() -> Obj | None:
            for pod in live(await kubelet.pods(selector="app=batch")):
                await kubelet.finish(pod, "Succeeded")
            return await finished(store, "Complete")

        job = await eventually(finish_rest, what="complete")
    assert (job["status"]["succeeded"], job["status"]["failed"]) == (4, 1)
    pods = await kubelet.pods(selector="app=batch")
    assert len(pods) == 5  # four successes and one failure, nothing created twice
    await store.close()
