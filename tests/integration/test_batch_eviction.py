"""Evicting a running queued Job the way Kubernetes allows it: ``suspend: true`` alone, then (once the
Job controller has deleted the pods and cleared ``status.startTime``) the original template back, then
the Workload requeued. The store here refuses template changes of a started Job, as the API server does,
so a one-write eviction would be refused and the preemption would never finish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.test_batch_admission import (
    NODE,
    Batch,
    batch,
    cluster_queue,
    flavor,
    job,
    local_queue,
    priority_class,
    running_jobs,
    setup,
)
from tests.integration.workloads_kit import condition, eventually, phase_of

from capstan.api.errors import Cause, InvalidError
from capstan.store.base import Obj

ORIGINAL = "capstan.io/original-scheduling"
SCHEDULING_DIRECTIVES = ("nodeSelector", "tolerations", "affinity", "schedulingGates")


def _without_directives(template: dict[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in (template.get("spec") or {}).items() if k not in SCHEDULING_DIRECTIVES}
    meta = {k: v for k, v in (template.get("metadata") or {}).items() if k not in ("labels", "annotations")}
    return {**template, "spec": spec, "metadata": meta}


def kube_template_rule(refused: list[str]) -> Any:
    """Kubernetes' Job validation: the pod template is immutable, except the scheduling directives (and
    template labels/annotations) of a Job that is suspended and has not started (no startTime)."""
    def validate(new: Obj, old: Obj | None) -> None:
        if old is None:
            return
        before, after = (old.get("spec") or {}).get("template") or {}, (new.get("spec") or {}).get("template") or {}
        if before == after:
            return
        unstarted = bool((old.get("spec") or {}).get("suspend")) and not (old.get("status") or {}).get("startTime")
        if unstarted and _without_directives(before) == _without_directives(after):
            return
        name = str(new["metadata"].get("name") or "")
        refused.append(name)
        raise InvalidError.from_causes("Job", name, [Cause(
            field="spec.template", reason="FieldValueInvalid", message="field is immutable")])
    return validate


async def live_pods(b: Batch, name: str) -> list[Obj]:
    return [p for p in await b.pods_of(name) if phase_of(p) not in ("Succeeded", "Failed")]


async def test_a_running_job_is_suspended_then_its_template_restored_then_requeued(tmp_path: Path) -> None:
    async with batch(tmp_path) as b:
        refused: list[str] = []
        b.store.add_validator("Job", kube_template_rule(refused))  # type: ignore[attr-defined]
        await setup(b.store, flavor("default", **{"kubernetes.io/hostname": NODE}),
                    cluster_queue("cq", "2", withinClusterQueue="LowerPriority"),
                    local_queue("lq", "cq"), priority_class("low", 10), priority_class("high", 1000))
        await b.store.create(job("batch", "lq", cpu="2", priority="low"))

        async def batch_running() -> Obj | None:
            found = await b.job("batch")
            pods = await b.pods_of("batch")
            running = pods and all(phase_of(p) == "Running" for p in pods)
            return found if running and (found.get("status") or {}).get("startTime") else None
        started = await eventually(batch_running, what="the low-priority job running")
        assert started["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": NODE}
        assert ORIGINAL in started["metadata"]["annotations"]

        await b.store.create(job("hotfix", "lq", cpu="2", priority="high"))

        async def evicted_and_restored() -> Obj | None:
            found = await b.job("batch")
            restored = ORIGINAL not in (found["metadata"].get("annotations") or {})
            return found if found["spec"].get("suspend") and restored and not await live_pods(b, "batch") else None
        victim = await eventually(evicted_and_restored, what="the low-priority job suspended and restored")
        assert "nodeSelector" not in victim["spec"]["template"]["spec"]  # no flavor nodeSelector left
        assert "startTime" not in victim["status"]
        assert victim["status"].get("active", 0) == 0
        suspended = condition(victim, "Suspended")
        assert suspended is not None and suspended["status"] == "True" and suspended["reason"] == "JobSuspended"

        async def requeued() -> Obj | None:
            found = await b.workload_of("batch")
            again = condition(found, "Requeued") if found else None
            return found if again and again["status"] == "True" else None
        workload = await eventually(requeued, what="the evicted workload requeued")
        evicted = condition(workload, "Evicted")
        assert evicted is not None and evicted["status"] == "True" and evicted["reason"] == "Preempted"
        assert condition(workload, "Preempted")["reason"] == "InClusterQueue"  # type: ignore[index]
        assert workload["status"]["requeueState"]["count"] == 1

        async def hotfix_running() -> bool:
            state = await running_jobs(b, "batch", "hotfix")
            pods = await b.pods_of("hotfix")
            return state == {"batch": False, "hotfix": True} and any(phase_of(p) == "Running" for p in pods)
        await eventually(hotfix_running, what="the high-priority job running instead")
        await b.finish_job("hotfix")

        async def batch_again() -> Obj | None:
            found = await b.job("batch")
            return found if not found["spec"].get("suspend") else None
        resumed = await eventually(batch_again, what="the evicted job admitted again")
        assert resumed["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": NODE}
        await b.finish_job("batch")
        done = await b.workload_of("batch")
        assert done is not None and condition(done, "Finished")["status"] == "True"  # type: ignore[index]
        assert refused == []  # every write was one the API server accepts
