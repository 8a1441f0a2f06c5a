"""The ScaledJob controller on a real SqliteStore with the embedded Job controller; pods are moved
through their phases by the simulated kubelet of workloads_kit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.autoscaling_kit import VALUES, Cluster, cluster, unique
from tests.integration.workloads_kit import Kubelet, eventually

from capstan.api.keda import SCALED_JOB_NAME_LABEL


def scaled_job(name: str, key: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"pollingInterval": 1, "maxReplicaCount": 10,
                     "jobTargetRef": {"template": {"spec": {"containers": [
                         {"name": "main", "image": "python", "command": ["true"]}]}}},
                     "triggers": [{"type": "capstan-test", "name": "q", "metadata": {"key": key, "value": "1"}}],
                     **spec}}


async def jobs_of(c: Cluster, name: str) -> list[dict[str, Any]]:
    return (await c.store.list(c.rt("jobs"), "default", label_selector=f"{SCALED_JOB_NAME_LABEL}={name}")).items


def finished(job: dict[str, Any]) -> bool:
    return any(cond.get("type") == "Complete" and cond.get("status") == "True"
               for cond in (job.get("status") or {}).get("conditions") or [])


async def test_scaled_job_creates_jobs_for_the_queue_and_keeps_the_history_limit(tmp_path: Path) -> None:
    key = unique("jobs")
    VALUES[key] = 3
    async with cluster(tmp_path) as c:
        kubelet = Kubelet(c.store)
        await c.store.create(scaled_job("batch", key, successfulJobsHistoryLimit=1))

        async def three_jobs() -> list[dict[str, Any]] | None:
            jobs = await jobs_of(c, "batch")
            return jobs if len(jobs) == 3 else None

        jobs = await eventually(three_jobs, what="3 jobs for 3 messages")
        for job in jobs:
            assert job["metadata"]["generateName"] == "batch-"
            owner = job["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["name"], owner["controller"]) == ("ScaledJob", "batch", True)
        # Polls later, the 3 running Jobs still cover the queue of 3: no more are made.
        await asyncio.sleep(2.5)
        assert len(await jobs_of(c, "batch")) == 3
        events = [e for e in await c.events_for("batch") if e["reason"] == "KEDAJobsCreated"]
        assert events and events[0]["message"].startswith("Created 3 jobs (batch-")
        assert "queue 3 (max over active triggers)" in events[0]["message"]

        # The work is done: the queue drains and every pod succeeds.
        VALUES[key] = 0
        pods = await eventually(lambda: _pods_of_jobs(kubelet, 3), what="the jobs' pods")
        for pod in pods:
            await kubelet.finish(pod)

        async def history_trimmed() -> bool:
            jobs = await jobs_of(c, "batch")
            return len(jobs) == 1 and finished(jobs[0])

        await eventually(history_trimmed, what="only 1 finished job kept (successfulJobsHistoryLimit 1)")
        active = await c.condition("scaledjobs", "batch", "Active")
        assert active is not None and active["status"] == "False"


async def _pods_of_jobs(kubelet: Kubelet, count: int) -> list[dict[str, Any]] | None:
    pods = [p for p in await kubelet.pods() if p["metadata"].get("ownerReferences")]
    return pods if len(pods) >= count else None


async def test_paused_scaled_job_creates_nothing_and_a_spec_change_replaces_running_jobs(tmp_path: Path) -> None:
    key = unique("jobs")
    VALUES[key] = 2
    async with cluster(tmp_path) as c:
        sj = scaled_job("etl", key)
        sj["metadata"]["annotations"] = {"autoscaling.keda.sh/paused": "true"}
        await c.store.create(sj)
        paused = await eventually(lambda: c.condition("scaledjobs", "etl", "Paused"), what="Paused condition")
        assert paused["status"] == "True"
        assert (await c.get("scaledjobs", "etl"))["status"]["Paused"] == "true"
        assert await jobs_of(c, "etl") == []

        current = await c.get("scaledjobs", "etl")
        current["metadata"]["annotations"] = {}
        await c.store.update(current)
        first = await eventually(lambda: _count(c, "etl", 2), what="2 jobs after unpausing")
        # A spec change (default rollout): the unfinished jobs of the old spec are deleted.
        current = await c.get("scaledjobs", "etl")
        current["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["command"] = ["echo", "v2"]
        await c.store.update(current)
        old = {j["metadata"]["name"] for j in first}

        async def replaced() -> bool:
            jobs = await jobs_of(c, "etl")
            names = {j["metadata"]["name"] for j in jobs}
            return len(jobs) == 2 and not names & old

        await eventually(replaced, what="the old generation's jobs replaced")
        deleted = [e for e in await c.events_for("etl") if e["reason"] == "KEDAJobsDeleted"]
        assert deleted and "deleted 2 running job(s) of the previous spec" in deleted[0]["message"]


async def _count(c: Cluster, name: str, count: int) -> list[dict[str, Any]] | None:
    jobs = await jobs_of(c, name)
    return jobs if len(jobs) == count else None
