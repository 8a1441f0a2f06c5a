"""Job decisions: how many pods to run, when a Job is complete or failed, when it expires.

Counting is derived from the pods themselves, never from counters kept in memory: a Job's
finished pods are kept (as Kubernetes keeps them) and ``succeeded`` / ``failed`` are counted
from them on every look, so a controller restart neither loses nor double-counts a pod. Once
a Job is finished its status is frozen.

Choices where Kubernetes has several modes:

* a pod being deleted that has not finished still occupies a parallelism slot until it is gone
  (Kubernetes' ``podReplacementPolicy: Failed``), so never more than ``parallelism`` pods run;
* a Failed pod that the Job itself deleted while it was running (suspend, surplus, deadline)
  does not count as a failure: only Failed pods without a deletionTimestamp count;
* when the Job fails (deadline or back-off limit) the active pods it kills count as failed,
  as on Kubernetes;
* there is no exponential delay before a failed pod is replaced, and ``completionMode:
  Indexed`` is treated as NonIndexed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from capstan.api.batchv1 import JobSpec
from capstan.core.workloads.deployment import PlannedEvent
from capstan.core.workloads.pods import (
    Obj,
    PodRef,
    deletion_order,
    find_condition,
    format_time,
    is_ready,
    is_terminating,
    parse_time,
    phase,
    ref_of,
    restart_count,
    set_condition,
)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"

BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"
COMPLETE_MESSAGE = "Reached expected number of succeeded pods"


@dataclass(frozen=True)
class JobPlan:
    create: int = 0
    delete: tuple[PodRef, ...] = ()
    status: Mapping[str, Any] | None = None  # None: leave the status alone
    events: tuple[PlannedEvent, ...] = ()
    delete_job: bool = False
    requeue_after: float | None = None


def pod_for(job: Obj) -> dict[str, Any]:
    """The pod a Job creates (named by the store from ``generateName``)."""
    meta = job["metadata"]
    template = job["spec"]["template"]
    template_meta = template.get("metadata") or {}
    name, uid = meta["name"], meta["uid"]
    labels = {**(template_meta.get("labels") or {}),
              JOB_NAME_LABEL: name[:63], CONTROLLER_UID_LABEL: uid,
              LEGACY_JOB_NAME_LABEL: name[:63], LEGACY_CONTROLLER_UID_LABEL: uid}
    pod_meta: dict[str, Any] = {
        "generateName": f"{name[:57]}-",
        "namespace": meta.get("namespace") or "default",
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": job.get("apiVersion", "batch/v1"), "kind": "Job", "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True,
        }],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = dict(template_meta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": copy.deepcopy(template["spec"])}


def finished_condition(job: Obj) -> Mapping[str, Any] | None:
    """The Complete or Failed condition that is True, if the Job is finished."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


@dataclass(frozen=True)
class _Observed:
    active: list[Obj]        # running or pending, not being deleted
    terminating: list[Obj]   # being deleted, not finished: still hold a slot
    succeeded: int
    failed: int
    restarts: int            # container restarts of active pods (counted for OnFailure)


def _observe(pods: Sequence[Obj]) -> _Observed:
    active = [p for p in pods if phase(p) not in ("Succeeded", "Failed") and not is_terminating(p)]
    return _Observed(
        active=active,
        terminating=[p for p in pods if phase(p) not in ("Succeeded", "Failed") and is_terminating(p)],
        succeeded=sum(1 for p in pods if phase(p) == "Succeeded"),
        failed=sum(1 for p in pods if phase(p) == "Failed" and not is_terminating(p)),
        restarts=sum(restart_count(p) for p in active),
    )


def backoff_exceeded(spec: JobSpec, failed: int, restarts: int) -> bool:
    """Kubernetes' rule: more failed pods than the limit; with restartPolicy OnFailure, also
    as many container restarts (of pods still running) as the limit (any restart for 0)."""
    if failed > spec.backoff_limit:
        return True
    if spec.template.spec.restart_policy != "OnFailure":
        return False
    return restarts > 0 if spec.backoff_limit == 0 else restarts >= spec.backoff_limit


def plan_job(job: Obj, pods: Sequence[Obj], now: datetime) -> JobPlan:
    """What to do for ``job`` given the pods it controls (finished ones included), at ``now``."""
    spec = JobSpec.model_validate(job["spec"])
    if finished_condition(job) is not None:
        return _plan_finished(job, spec, now)

    status: dict[str, Any] = copy.deepcopy(dict(job.get("status") or {}))
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    seen = _observe(pods)
    events: list[PlannedEvent] = []

    if spec.suspend:
        return _plan_suspended(status, conditions, seen, now)

    suspended = find_condition(conditions, "Suspended")
    if suspended is not None and suspended.get("status") == "True":
        conditions = set_condition(conditions, _condition("Suspended", "False", "JobResumed", "Job resumed"), now)
        status["startTime"] = format_time(now)
        events.append(PlannedEvent("Normal", "Resumed", "Job resumed"))
    status.setdefault("startTime", format_time(now))

    deadline_left = _deadline_left(spec, status, now)
    if deadline_left is not None and deadline_left <= 0:
        return _plan_failure(status, conditions, seen, now, "DeadlineExceeded", DEADLINE_MESSAGE, events)
    if backoff_exceeded(spec, seen.failed, seen.restarts):
        return _plan_failure(status, conditions, seen, now, "BackoffLimitExceeded", BACKOFF_MESSAGE, events)

    in_flight = len(seen.active) + len(seen.terminating)
    if _complete(spec, seen):
        doomed = seen.active  # surplus once the completions are reached
        conditions = set_condition(conditions, _condition("Complete", "True", "CompletionsReached",
                                                          COMPLETE_MESSAGE), now)
        status["completionTime"] = format_time(now)
        events += _deleted_events(doomed)
        events.append(PlannedEvent("Normal", "Completed", "Job completed"))
        ttl_left = float(spec.ttl_seconds_after_finished) if spec.ttl_seconds_after_finished is not None else None
        return JobPlan(delete=tuple(ref_of(p) for p in doomed),
                       status=_counts(status, conditions, [], seen.succeeded, seen.failed, 0),
                       events=tuple(events), requeue_after=ttl_left)

    wanted = _wanted_active(spec, seen)
    create = max(0, wanted - in_flight)
    doomed = deletion_order(seen.active)[: max(0, len(seen.active) - wanted)]
    remaining = [p for p in seen.active if p not in doomed]
    events += _deleted_events(doomed)
    return JobPlan(
        create=create, delete=tuple(ref_of(p) for p in doomed),
        status=_counts(status, conditions, remaining, seen.succeeded, seen.failed, create),
        events=tuple(events), requeue_after=deadline_left,
    )


def _condition(kind: str, value: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": value, "reason": reason, "message": message, "lastProbeTime": ""}


def _counts(status: dict[str, Any], conditions: list[dict[str, Any]], active: list[Obj], succeeded: int,
            failed: int, created: int) -> dict[str, Any]:
    status = dict(status)
    status.update(active=len(active) + created, ready=sum(1 for p in active if is_ready(p)),
                  succeeded=succeeded, failed=failed)
    if conditions:
        status["conditions"] = conditions
    return status


def _deleted_events(pods: Sequence[Obj]) -> list[PlannedEvent]:
    return [PlannedEvent("Normal", "SuccessfulDelete", f"Deleted pod: {ref_of(p).name}") for p in pods]


def _deadline_left(spec: JobSpec, status: Mapping[str, Any], now: datetime) -> float | None:
    started = parse_time(status.get("startTime"))
    if spec.active_deadline_seconds is None or started is None:
        return None
    return spec.active_deadline_seconds - (now - started).total_seconds()


def _complete(spec: JobSpec, seen: _Observed) -> bool:
    if spec.completions is not None:
        return seen.succeeded >= spec.completions
    # Work-queue semantics: done when some pod succeeded and none is still working.
    return seen.succeeded > 0 and not seen.active and not seen.terminating


def _wanted_active(spec: JobSpec, seen: _Observed) -> int:
    if spec.completions is not None:
        return min(spec.parallelism, spec.completions - seen.succeeded)
    if seen.succeeded > 0:  # a work queue reported done: let the others finish, start nothing
        return min(spec.parallelism, len(seen.active))
    return spec.parallelism


def _plan_suspended(status: dict[str, Any], conditions: list[dict[str, Any]], seen: _Observed,
                    now: datetime) -> JobPlan:
    events = _deleted_events(seen.active)
    current = find_condition(conditions, "Suspended")
    if current is None or current.get("status") != "True":
        conditions = set_condition(conditions, _condition("Suspended", "True", "JobSuspended", "Job suspended"), now)
        events.append(PlannedEvent("Normal", "Suspended", "Job suspended"))
    if not seen.active and not seen.terminating:
        # As Kubernetes does: a suspended Job with no pod left has not started, so its scheduling
        # directives (nodeSelector, tolerations) may change again and a resume gets a fresh deadline.
        status.pop("startTime", None)
    return JobPlan(delete=tuple(ref_of(p) for p in seen.active),
                   status=_counts(status, conditions, [], seen.succeeded, seen.failed, 0), events=tuple(events))


def _plan_failure(status: dict[str, Any], conditions: list[dict[str, Any]], seen: _Observed, now: datetime,
                  reason: str, message: str, events: list[PlannedEvent]) -> JobPlan:
    conditions = set_condition(conditions, _condition("Failed", "True", reason, message), now)
    events = [*events, *_deleted_events(seen.active), PlannedEvent("Warning", reason, message)]
    status = _counts(status, conditions, [], seen.succeeded, seen.failed + len(seen.active), 0)
    return JobPlan(delete=tuple(ref_of(p) for p in seen.active), status=status, events=tuple(events),
                   requeue_after=None)


def _plan_finished(job: Obj, spec: JobSpec, now: datetime) -> JobPlan:
    """A finished Job only waits for its TTL."""
    if spec.ttl_seconds_after_finished is None:
        return JobPlan()
    finished_at = finish_time(job)
    if finished_at is None:
        return JobPlan(delete_job=True) if spec.ttl_seconds_after_finished == 0 else JobPlan()
    expires = finished_at + timedelta(seconds=spec.ttl_seconds_after_finished)
    if now >= expires:
        return JobPlan(delete_job=True)
    return JobPlan(requeue_after=(expires - now).total_seconds())


def finish_time(job: Obj) -> datetime | None:
    status = job.get("status") or {}
    condition = finished_condition(job)
    if condition is not None and condition.get("type") == "Complete" and status.get("completionTime"):
        return parse_time(status["completionTime"])
    return parse_time(condition.get("lastTransitionTime")) if condition is not None else None
