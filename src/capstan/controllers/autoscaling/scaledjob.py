"""The ScaledJob controller: Jobs from a queue, KEDA's way.

Per ScaledJob, a pass every ``pollingInterval`` (or at once on a spec/annotation change, or when a
push scaler wakes it; KEDA ignores push scalers for ScaledJobs, Capstan uses them):

1. its Jobs (label ``scaledjob.keda.sh/name``, controlled by it) and their pods give the running
   and pending counts (``count_jobs``, honouring ``pendingPodConditions``);
2. rollout: after a spec change, the default strategy deletes the unfinished Jobs of older
   generations (``rollout.propagationPolicy``); ``gradual`` leaves them to finish;
3. history: finished Jobs beyond ``successfulJobsHistoryLimit`` / ``failedJobsHistoryLimit`` are
   deleted, oldest first;
4. the triggers are read and ``decide_scaled_job`` says how many Jobs to create; each is made
   from ``jobTargetRef`` with an owner reference to the ScaledJob;
5. status (conditions Ready / Active / Paused, lastActiveTime, ``capstanLastDecision``) and an
   Event for every batch of Jobs created.

``autoscaling.keda.sh/paused: "true"`` stops Job creation (status ``Paused: "true"``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from capstan.api.errors import ConflictError, NotFoundError
from capstan.api.keda import PAUSED_ANNOTATION, SCALED_JOB_NAME_LABEL, ScaledJob
from capstan.controllers.autoscaling import metrics as m
from capstan.controllers.autoscaling.cache import Reading, ScalerSet
from capstan.controllers.autoscaling.common import (
    AutoscalingOptions,
    merge_conditions,
    trigger_configs,
)
from capstan.controllers.autoscaling.polling import Key, NotReadyError, PollingController, validated
from capstan.controllers.autoscaling.triggers import TriggerSetupError
from capstan.controllers.events import EventRecorder, utcnow
from capstan.controllers.informer import ChangeType, InformerFactory
from capstan.core.autoscaling.keda import PauseState
from capstan.core.autoscaling.scaledjob import (
    JobScaleDecision,
    JobTriggerReading,
    JobView,
    PodView,
    ScaledJobSettings,
    count_jobs,
    decide_scaled_job,
)
from capstan.core.workloads.pods import format_time, parse_time
from capstan.scalers.base import ScalerError
from capstan.store.base import Obj, PropagationPolicy, Store

log = logging.getLogger(__name__)

GENERATION_ANNOTATION = "scaledjob.keda.sh/generation"
LAST_DECISION = "capstanLastDecision"


def job_finished(job: Obj) -> str | None:
    """"Complete" or "Failed" when the Job has finished, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def _finished_at(job: Obj) -> str:
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition.get("lastTransitionTime") or status.get("completionTime") or "")
    return str(status.get("completionTime") or job["metadata"].get("creationTimestamp") or "")


def jobs_beyond_history(jobs: Sequence[Obj], successful_limit: int, failed_limit: int) -> list[Obj]:
    """Finished Jobs to delete: the oldest beyond each history limit."""
    doomed: list[Obj] = []
    for outcome, limit in (("Complete", successful_limit), ("Failed", failed_limit)):
        finished = sorted((j for j in jobs if job_finished(j) == outcome),
                          key=lambda j: (_finished_at(j), j["metadata"]["name"]))
        doomed += finished[:max(len(finished) - limit, 0)]
    return doomed


def job_reading(trigger_name: str, reads: Sequence[Reading]) -> JobTriggerReading:
    """A ScaledJob trigger's queue length is the sum of its metrics (KEDA)."""
    errors = [r.error for r in reads if r.error is not None]
    if errors or not reads:
        return JobTriggerReading(trigger_name, 0.0, reads[0].spec.target if reads else 1.0,
                                 error="; ".join(e for e in errors if e) or "no metrics")
    value = sum(r.result.value for r in reads if r.result is not None)
    active = any(r.result.active for r in reads if r.result is not None)
    spec = reads[0].spec
    return JobTriggerReading(trigger_name, value, spec.target, spec.activation_target, active=active)


class ScaledJobController(PollingController):
    name = "scaledjob"
    resource = "scaledjobs"
    kind = "ScaledJob"
    errors = m.SCALED_JOB_ERRORS

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 options: AutoscalingOptions | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(informers, store, recorder, options=options, clock=clock)
        self.jobs_rt = store.registry.lookup("jobs")
        self.pods_rt = store.registry.lookup("pods")

    def _on_change(self, change: ChangeType, obj: Obj, old: Obj | None) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace") or "default", meta["name"])
        if change == "DELETED":
            self.scheduler.remove(key)
            self._drop_scalers_soon(key)
            return
        if old is None or meta.get("generation") != old["metadata"].get("generation") \
                or meta.get("annotations") != old["metadata"].get("annotations"):
            self.scheduler.wake(key)

    async def _pass(self, key: Key) -> float | None:
        namespace, name = key
        obj = self.informer.get(name, namespace)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            await self.cache.drop(key)
            return None
        return await self._poll(obj)

    async def reconcile(self, obj: Obj) -> JobScaleDecision | None:
        meta = obj["metadata"]
        namespace, name = meta.get("namespace") or "default", meta["name"]
        model = validated(ScaledJob, obj, "ScaledJobCheckFailed")
        spec = model.spec
        jobs = await self._jobs(obj)
        jobs = await self._rollout(obj, model, jobs)
        jobs = await self._trim_history(obj, jobs, spec.successful_jobs_history_limit, spec.failed_jobs_history_limit)
        running, pending = count_jobs(await self._job_views(namespace, jobs),
                                      spec.scaling_strategy.pending_pod_conditions)
        now = self.clock()
        if PauseState.from_annotations(meta.get("annotations")).paused:
            await self._write_status(obj, [
                {"type": "Paused", "status": "True", "reason": "ScaledJobPaused",
                 "message": f"paused by {PAUSED_ANNOTATION}: no Jobs are created"}], now, paused=True)
            return None
        scaler_set = await self._scalers((namespace, name), obj, model)
        reads = await scaler_set.read_all()
        readings = []
        for index, trigger in enumerate(spec.triggers):
            own = [r for r in reads if r.index == index]
            readings.append(job_reading(trigger.name or f"triggers[{index}]", own))
            for read in own:
                m.observe_read((namespace, name, "scaledjob", trigger.type, str(index), read.spec.name), read)
        decision = decide_scaled_job(ScaledJobSettings.from_spec(spec), readings, running, pending)
        created = [await self._create_job(obj) for _ in range(decision.jobs_to_create)]
        if created:
            names = ", ".join(job["metadata"]["name"] for job in created)
            await self.recorder.record(obj, "Normal", "KEDAJobsCreated",
                                       f"Created {len(created)} job{'s' if len(created) != 1 else ''} ({names}): "
                                       f"{decision.reason}")
        errors = [f"{r.name}: {r.error}" for r in readings if r.error is not None]
        conditions = [
            {"type": "Ready", "status": "False" if errors and not decision.is_active else "True",
             "reason": "TriggerError" if errors else "ScaledJobReady",
             "message": ("triggers failed: " + "; ".join(errors)) if errors
             else "ScaledJob is defined correctly and is ready to scale"},
            {"type": "Active", "status": "True" if decision.is_active else "False",
             "reason": "ScalerActive" if decision.is_active else "ScalerNotActive",
             "message": decision.reason},
            {"type": "Paused", "status": "False", "reason": "ScaledJobUnpaused", "message": "ScaledJob is not paused"},
        ]
        summary = {"action": "create" if created else "none", "jobsCreated": len(created), "running": running,
                   "pending": pending, "queueLength": decision.queue_length, "reason": decision.reason,
                   "triggers": [{"name": r.name, "value": r.value, "target": r.target,
                                 "activationTarget": r.activation_target, "active": r.is_active,
                                 **({"error": r.error} if r.error else {})} for r in readings]}
        await self._write_status(obj, conditions, now, active=decision.is_active, summary=summary)
        return decision

    # ---- Jobs ------------------------------------------------------------------------------

    async def _jobs(self, obj: Obj) -> list[Obj]:
        meta = obj["metadata"]
        listed = await self.store.list(self.jobs_rt, meta.get("namespace"),
                                       label_selector=f"{SCALED_JOB_NAME_LABEL}={meta['name']}")
        return [job for job in listed.items
                if any(ref.get("uid") == meta["uid"] for ref in job["metadata"].get("ownerReferences") or [])]

    async def _job_views(self, namespace: str, jobs: Sequence[Obj]) -> list[JobView]:
        unfinished = {job["metadata"]["uid"] for job in jobs if job_finished(job) is None}
        pods_by_job: dict[str, list[PodView]] = {uid: [] for uid in unfinished}
        if unfinished:
            for pod in (await self.store.list(self.pods_rt, namespace)).items:
                for ref in pod["metadata"].get("ownerReferences") or []:
                    if ref.get("uid") in pods_by_job:
                        status = pod.get("status") or {}
                        true = frozenset(str(c.get("type")) for c in status.get("conditions") or []
                                         if c.get("status") == "True")
                        pods_by_job[ref["uid"]].append(PodView(str(status.get("phase") or "Pending"), true))
        return [JobView(job_finished(job) is not None, tuple(pods_by_job.get(job["metadata"]["uid"], ())))
                for job in jobs]

    async def _rollout(self, obj: Obj, model: ScaledJob, jobs: list[Obj]) -> list[Obj]:
        spec = model.spec
        strategy = spec.rollout.strategy if spec.rollout is not None else (spec.rollout_strategy or "default")
        if strategy == "gradual":
            return jobs
        generation = int(obj["metadata"].get("generation") or 1)
        foreground = spec.rollout is not None and spec.rollout.propagation_policy == "foreground"
        policy: PropagationPolicy = "Foreground" if foreground else "Background"
        kept = []
        deleted = []
        for job in jobs:
            made_for = int((job["metadata"].get("annotations") or {}).get(GENERATION_ANNOTATION) or generation)
            if made_for < generation and job_finished(job) is None:
                with contextlib.suppress(NotFoundError, ConflictError):
                    await self.store.delete(self.jobs_rt, job["metadata"]["name"], job["metadata"].get("namespace"),
                                            propagation_policy=policy, uid=job["metadata"]["uid"])
                deleted.append(job["metadata"]["name"])
            else:
                kept.append(job)
        if deleted:
            await self.recorder.record(obj, "Normal", "KEDAJobsDeleted",
                                       f"The ScaledJob changed: deleted {len(deleted)} running job(s) of the "
                                       f"previous spec ({', '.join(deleted)})")
        return kept

    async def _trim_history(self, obj: Obj, jobs: list[Obj], successful: int, failed: int) -> list[Obj]:
        doomed = jobs_beyond_history(jobs, successful, failed)
        for job in doomed:
            with contextlib.suppress(NotFoundError, ConflictError):
                await self.store.delete(self.jobs_rt, job["metadata"]["name"], job["metadata"].get("namespace"),
                                        propagation_policy="Background", uid=job["metadata"]["uid"])
        gone = {job["metadata"]["uid"] for job in doomed}
        return [job for job in jobs if job["metadata"]["uid"] not in gone]

    async def _create_job(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        labels = {**(meta.get("labels") or {}), SCALED_JOB_NAME_LABEL: meta["name"],
                  "app.kubernetes.io/managed-by": "capstan"}
        job = {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {
                "generateName": f"{meta['name']}-", "namespace": meta.get("namespace") or "default",
                "labels": labels,
                "annotations": {GENERATION_ANNOTATION: str(meta.get("generation") or 1)},
                "ownerReferences": [{"apiVersion": obj["apiVersion"], "kind": "ScaledJob", "name": meta["name"],
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": obj["spec"]["jobTargetRef"],
        }
        return await self.store.create(job)

    # ---- scalers and status ----------------------------------------------------------------

    async def _scalers(self, key: Key, obj: Obj, model: ScaledJob) -> ScalerSet:
        fingerprint = (obj["metadata"].get("uid"), obj["metadata"].get("generation"))
        found = self.cache.get(key, fingerprint)
        if found is not None:
            return found
        job_spec = obj["spec"]["jobTargetRef"]
        pod_spec = (job_spec.get("template") or {}).get("spec")
        try:
            configs = await trigger_configs(self.store, key[0], obj, model.spec.triggers, pod_spec,
                                            model.spec.env_source_container_name, "", self.options)
            built = ScalerSet.build(fingerprint, configs, lambda active: self.scheduler.wake(key) if active else None)
        except TriggerSetupError as exc:
            raise NotReadyError(exc.reason, str(exc)) from None
        except ScalerError as exc:
            raise NotReadyError("ScalerConfigError", str(exc)) from None
        await self.cache.put(key, built)
        return built

    async def _write_status(self, obj: Obj, updates: list[dict[str, Any]], now: datetime, *, active: bool = False,
                            paused: bool = False, summary: dict[str, Any] | None = None) -> None:
        current = obj.get("status") or {}
        status = dict(current)
        status["conditions"] = merge_conditions(current.get("conditions"), updates, now)
        if paused:
            status["Paused"] = "true"
        else:
            status.pop("Paused", None)
        if active:
            last = parse_time(current.get("lastActiveTime"))
            if last is None or (now - last).total_seconds() >= self.options.status_refresh_seconds:
                status["lastActiveTime"] = format_time(now)
        types = ",".join(dict.fromkeys(t.get("type", "") for t in obj["spec"].get("triggers") or []))
        status["triggersTypes"] = types
        if summary is not None:
            previous = current.get(LAST_DECISION) or {}
            same = all(previous.get(k) == summary.get(k) for k in ("action", "jobsCreated", "running", "pending",
                                                                     "queueLength"))
            status[LAST_DECISION] = {**summary, "time": previous.get("time") if same and previous.get("time")
                                     else format_time(now)}
        if status == current:
            return
        meta = obj["metadata"]
        patch = dict(status)
        for gone in set(current) - set(status):
            patch[gone] = None
        with contextlib.suppress(NotFoundError):
            await self.store.patch(self.rt, meta["name"], meta.get("namespace"), {"status": patch},
                                   subresource="status")
