"""Job decisions: parallelism, completions, back-off, deadline, suspension, TTL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capstan.api.batchv1 import Job
from capstan.core.workloads.job import (
    BACKOFF_MESSAGE,
    CONTROLLER_UID_LABEL,
    JOB_NAME_LABEL,
    plan_job,
    pod_for,
)
from capstan.core.workloads.pods import format_time

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
_ids = itertools.count()


def job(*, parallelism: int = 1, completions: int | None = 1, backoff: int = 6, restart: str = "Never",
        deadline: int | None = None, suspend: bool = False, ttl: int | None = None,
        status: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"parallelism": parallelism, "backoffLimit": backoff, "suspend": suspend,
                            "template": {"metadata": {"labels": {"team": "a"}},
                                         "spec": {"restartPolicy": restart, "containers": [{"name": "main"}]}}}
    if completions is not None:
        spec["completions"] = completions
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    obj: dict[str, Any] = {"apiVersion": "batch/v1", "kind": "Job",
                           "metadata": {"name": "batch", "namespace": "default", "uid": "job-uid"}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def pod(phase: str = "Running", *, ready: bool = False, deleting: bool = False, restarts: int = 0) -> dict[str, Any]:
    number = next(_ids)
    meta: dict[str, Any] = {"name": f"batch-{number}", "uid": f"uid-{number}", "namespace": "default",
                            "creationTimestamp": format_time(NOW)}
    if deleting:
        meta["deletionTimestamp"] = format_time(NOW)
    return {"metadata": meta, "spec": {},
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "main", "restartCount": restarts}]}}


def conditions(plan_status: Any) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in plan_status.get("conditions") or []}


def test_job_model_rejects_restart_policy_always() -> None:
    with pytest.raises(ValueError, match='Unsupported value: "Always"'):
        Job.model_validate(job(restart="Always"))
    with pytest.raises(ValueError, match="Required value"):
        Job.model_validate({**job(), "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}})


def test_pod_for_labels_and_owner() -> None:
    made = pod_for(job())
    labels = made["metadata"]["labels"]
    assert labels[JOB_NAME_LABEL] == "batch" and labels[CONTROLLER_UID_LABEL] == "job-uid" and labels["team"] == "a"
    assert made["metadata"]["generateName"] == "batch-"
    ref = made["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == ("Job", "job-uid", True, True)
    assert made["spec"]["restartPolicy"] == "Never"


def test_starts_parallelism_pods_but_never_more_than_remaining_completions() -> None:
    plan = plan_job(job(parallelism=3, completions=5), [], NOW)
    assert plan.create == 3
    assert plan.status is not None and plan.status["startTime"] == format_time(NOW) and plan.status["active"] == 3
    plan = plan_job(job(parallelism=3, completions=5), [pod("Succeeded")] * 3 + [pod()], NOW)
    assert plan.create == 1  # 2 remaining completions, 1 running


def test_terminating_pods_hold_their_slot() -> None:
    plan = plan_job(job(parallelism=2, completions=4), [pod(), pod(deleting=True)], NOW)
    assert plan.create == 0


def test_complete_when_completions_reached_deletes_surplus() -> None:
    extra = pod()
    plan = plan_job(job(parallelism=2, completions=2), [pod("Succeeded"), pod("Succeeded"), extra], NOW)
    assert plan.status is not None
    complete = conditions(plan.status)["Complete"]
    assert (complete["status"], complete["reason"]) == ("True", "CompletionsReached")
    assert plan.status["completionTime"] == format_time(NOW) and plan.status["succeeded"] == 2
    assert [r.name for r in plan.delete] == [extra["metadata"]["name"]]
    assert ("Completed", "Job completed") in [(e.reason, e.message) for e in plan.events]


def test_work_queue_completes_when_one_succeeded_and_none_active() -> None:
    running = pod()
    plan = plan_job(job(parallelism=3, completions=None), [pod("Succeeded"), running], NOW)
    assert plan.create == 0 and plan.delete == ()
    plan = plan_job(job(parallelism=3, completions=None), [pod("Succeeded"), pod("Failed")], NOW)
    assert plan.status is not None and "Complete" in conditions(plan.status)


def test_backoff_limit_counts_failed_pods() -> None:
    failures = [pod("Failed") for _ in range(2)]
    plan = plan_job(job(backoff=2), failures, NOW)
    assert plan.create == 1 and plan.status is not None and "Failed" not in conditions(plan.status)
    running = pod()
    plan = plan_job(job(backoff=2), [*failures, pod("Failed"), running], NOW)
    assert plan.status is not None
    failed = conditions(plan.status)["Failed"]
    assert (failed["reason"], failed["message"]) == ("BackoffLimitExceeded", BACKOFF_MESSAGE)
    assert plan.status["failed"] == 4 and plan.status["active"] == 0
    assert [r.name for r in plan.delete] == [running["metadata"]["name"]]
    assert ("Warning", "BackoffLimitExceeded") in [(e.type, e.reason) for e in plan.events]


def test_on_failure_counts_container_restarts() -> None:
    assert plan_job(job(backoff=3, restart="OnFailure"), [pod(restarts=2)], NOW).create == 0
    plan = plan_job(job(backoff=3, restart="OnFailure"), [pod(restarts=3)], NOW)
    assert plan.status is not None and conditions(plan.status)["Failed"]["reason"] == "BackoffLimitExceeded"
    # With restartPolicy Never restarts cannot happen, and are not counted.
    assert "Failed" not in conditions(plan_job(job(backoff=3), [pod(restarts=3)], NOW).status)


def test_failed_pods_deleted_while_running_are_not_failures() -> None:
    plan = plan_job(job(backoff=0, parallelism=1), [pod("Failed", deleting=True)], NOW)
    assert plan.status is not None and "Failed" not in conditions(plan.status)


def test_active_deadline() -> None:
    started = {"startTime": format_time(NOW - timedelta(seconds=25))}
    plan = plan_job(job(deadline=30, status=started), [pod()], NOW)
    assert plan.requeue_after == pytest.approx(5)
    running = pod()
    plan = plan_job(job(deadline=30, status=started), [running], NOW + timedelta(seconds=5))
    assert plan.status is not None
    failed = conditions(plan.status)["Failed"]
    assert (failed["reason"], failed["message"]) == (
        "DeadlineExceeded", "Job was active longer than specified deadline")
    assert [r.name for r in plan.delete] == [running["metadata"]["name"]]


def test_suspend_and_resume() -> None:
    running = pod()
    plan = plan_job(job(suspend=True, status={"startTime": format_time(NOW - timedelta(hours=1))}), [running], NOW)
    assert plan.status is not None and plan.create == 0
    assert [r.name for r in plan.delete] == [running["metadata"]["name"]]
    suspended = conditions(plan.status)["Suspended"]
    assert (suspended["status"], suspended["reason"]) == ("True", "JobSuspended")
    later = NOW + timedelta(minutes=5)
    resumed = plan_job(job(status=dict(plan.status)), [], later)
    assert resumed.status is not None and resumed.create == 1
    suspended = conditions(resumed.status)["Suspended"]
    assert (suspended["status"], suspended["reason"]) == ("False", "JobResumed")
    assert resumed.status["startTime"] == format_time(later)


def test_ttl_after_finished() -> None:
    done = {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": format_time(NOW)}],
            "completionTime": format_time(NOW), "succeeded": 1}
    waiting = plan_job(job(ttl=60, status=done), [], NOW + timedelta(seconds=20))
    assert not waiting.delete_job and waiting.requeue_after == pytest.approx(40) and waiting.status is None
    assert plan_job(job(ttl=60, status=done), [], NOW + timedelta(seconds=60)).delete_job
    assert plan_job(job(status=done), [], NOW + timedelta(days=9)) == plan_job(job(status=done), [], NOW)


def test_finished_job_is_frozen() -> None:
    done = {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": format_time(NOW)}]}
    plan = plan_job(job(status=done), [pod()], NOW)
    assert plan.create == 0 and plan.delete == () and plan.status is None


@settings(max_examples=150, deadline=None)
@given(parallelism=st.integers(0, 5), completions=st.one_of(st.none(), st.integers(0, 10)),
       outcomes=st.lists(st.sampled_from(["run", "succeed", "fail", "delete"]), min_size=1, max_size=60))
def test_job_never_exceeds_parallelism_nor_remaining_completions(
        parallelism: int, completions: int | None, outcomes: list[str]) -> None:
    spec = job(parallelism=parallelism, completions=completions, backoff=1000)
    pods: list[dict[str, Any]] = []
    for outcome in outcomes:
        plan = plan_job(spec, pods, NOW)
        if plan.status is not None:
            spec["status"] = dict(plan.status)
        gone = {r.uid for r in plan.delete}
        pods = [p for p in pods if p["metadata"]["uid"] not in gone]
        pods += [pod("Pending") for _ in range(plan.create)]
        running = [p for p in pods if p["status"]["phase"] in ("Pending", "Running")]
        assert len(running) <= parallelism
        succeeded = sum(1 for p in pods if p["status"]["phase"] == "Succeeded")
        if completions is not None:
            assert len(running) <= max(completions - succeeded, 0)
            assert succeeded <= completions
        if running:  # the kubelet moves one pod along
            target = running[0]
            if outcome == "succeed":
                target["status"]["phase"] = "Succeeded"
            elif outcome == "fail":
                target["status"]["phase"] = "Failed"
            elif outcome == "delete":
                pods.remove(target)
            else:
                target["status"]["phase"] = "Running"
