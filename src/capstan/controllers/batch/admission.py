"""The admission loop: informer caches -> ``Snapshot`` -> ``schedule`` -> Workload and queue writes.

One loop (never two cycles at once) runs a cycle whenever something relevant changed, after a
short debounce so a burst of changes costs one cycle, and when a back-off expires. A cycle:

1. builds a :class:`Snapshot` from the caches: ClusterQueues, Cohorts, ResourceFlavors, the
   pending Workloads (LocalQueue resolved to its ClusterQueue; a missing LocalQueue is reported on
   the Workload and never reaches the core), the Workloads holding quota, and, in embedded mode,
   each node's free capacity (allocatable minus bound unfinished pods minus the pods admitted
   workloads have not started yet), plus the core's memory from the previous cycle;
2. calls ``schedule(snapshot, now)``;
3. writes: admissions (``status.admission``, ``QuotaReserved`` and ``Admitted``), evictions of
   preemption victims (``Evicted``/``Preempted``; the Job integration suspends their Jobs and
   releases the quota once their pods are gone, and only then is the preemptor admitted), wait
   reasons on pending Workloads (``QuotaReserved=False`` with the core's reason code and message,
   position included), queue status, Events and metrics.

Writes are made from the freshest copy we know: our own writes are kept in an overlay until the
informer delivers them, so a cycle right after a write never decides on a stale Workload.

Dependencies: a Workload annotated ``capstan.io/depends-on: "a,b"`` (copied from its Job) is not
ready until the Jobs ``a`` and ``b`` of its namespace are Complete; if one Failed, the Workload is
Finished with reason ``DependencyFailed`` and its Job stays suspended.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from capstan.api.errors import ConflictError, NotFoundError
from capstan.controllers.batch import metrics
from capstan.controllers.batch.common import (
    ADMISSION_ATTEMPT,
    ADMITTED,
    DEPENDENCY_FAILED,
    DEPENDS_ON,
    EVICTED,
    FINISHED,
    JOB_UID_LABEL,
    LOCAL_QUEUE_MISSING,
    PREEMPTED,
    QUOTA_RESERVED,
    admission_wire,
    cluster_queue_config,
    cohort_config,
    conditions_of,
    core_admitted,
    core_workload,
    epoch,
    flavor_of,
    holds_quota,
    is_evicted,
    is_finished,
    now_rfc3339,
    pod_sets,
    queue_time,
    with_condition,
    workload_key,
)
from capstan.controllers.batch.queues import (
    active_condition,
    cluster_queue_status,
    local_queue_status,
    same_status,
)
from capstan.controllers.batch.workload_pods import GROUP_WORKLOAD_LABEL, group_of
from capstan.controllers.events import EventRecorder, utcnow
from capstan.controllers.informer import ChangeType, Informer, InformerFactory
from capstan.core.scheduling.conditions import find_condition
from capstan.core.scheduling.queueing import (
    AdmittedWorkload,
    CycleResult,
    NodeCapacity,
    PodSet,
    PreemptionDecision,
    Reason,
    SchedulerMemory,
    Settings,
    Snapshot,
    WaitReason,
    Workload,
    schedule,
)
from capstan.core.scheduling.resources import node_allocatable, pod_is_terminal, pod_requests
from capstan.core.workloads.job import CONTROLLER_UID_LABEL, finished_condition
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

_ACTIVE_CODES = ("PreemptionPending", "PreemptionInProgress", "WaitingForCapacity", "Backoff", "Pending")


@dataclass
class AdmissionOptions:
    debounce: float = 0.03
    physical_fit: bool = True
    settings: Settings = field(default_factory=Settings)
    position_refresh: float = 5.0  # at most this often a changed position alone is written
    # Over all workloads, at most this many condition refreshes per second that change only numbers
    # (position, amounts, seconds): with thousands waiting, positions are refreshed less often.
    position_writes_per_second: float = 100.0
    # A workload whose reason keeps changing (quota, evictions in flight, node capacity) gets a new
    # reason written at most this often; the first one is written at once.
    reason_min_interval: float = 1.0
    status_interval: float = 0.5  # at most this often a queue's status is written
    wait_writes_per_cycle: int = 200  # the rest of the waiting workloads are written next cycle
    resync: float = 10.0


@dataclass
class _Written:
    code: str
    message: str
    at: float
    gist: tuple[object, ...] = ()


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _gist(reason: Reason) -> tuple[object, ...]:
    """What makes a wait reason a *different* reason: its code and what is short (flavor, resource,
    what limits it), or, without shortages, its text apart from numbers (positions, seconds of
    back-off). Amounts, positions and the names of workloads being evicted are details: a new gist
    is written with the attempt annotation and an Event; a change of details is a rate-limited
    refresh of the condition."""
    if reason.shortages:
        return (reason.code, tuple((s.flavor, s.resource, s.limited_by) for s in reason.shortages))
    return (reason.code, _NUMBER.sub("#", reason.message))


@dataclass(slots=True)
class _Parsed:
    """What a cycle needs from one version (resourceVersion) of a Workload, parsed once."""

    finished: bool
    holds: bool
    inactive: bool
    namespace: str
    queue_name: str
    requeue_at: float | None
    reserved: tuple[str, str] | None  # the QuotaReserved condition's (reason, message)
    needs_readiness: bool  # has dependencies or is a pod group
    admitted: AdmittedWorkload | None = None
    pending_for: tuple[str, str | None] | None = None  # (ClusterQueue, not ready) of ``pending``
    pending: Workload | None = None


class AdmissionController:
    """Runnable: ``await controller.run(stop)``."""

    name = "batch-admission"

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 clock: Callable[[], datetime] = utcnow, options: AdmissionOptions | None = None) -> None:
        self.store = store
        self.recorder = recorder
        self.clock = clock
        self.options = options or AdmissionOptions()
        registry = store.registry
        self.workloads_rt = registry.lookup("workloads.kueue.x-k8s.io")
        self.cq_rt = registry.lookup("clusterqueues.kueue.x-k8s.io")
        self.lq_rt = registry.lookup("localqueues.kueue.x-k8s.io")
        self.cqs = informers.informer(self.cq_rt)
        self.cohorts = informers.informer(registry.lookup("cohorts.kueue.x-k8s.io"))
        self.flavors = informers.informer(registry.lookup("resourceflavors.kueue.x-k8s.io"))
        self.lqs = informers.informer(self.lq_rt)
        self.workloads = informers.informer(self.workloads_rt)
        self.jobs = informers.informer(registry.lookup("jobs"))
        self.pods = informers.informer(registry.lookup("pods"))
        self.nodes = informers.informer(registry.lookup("nodes"))
        self._wake = asyncio.Event()
        self.memory: SchedulerMemory | None = None
        self.last_result: CycleResult | None = None
        self.cycles = 0
        # Indexes kept by the informer handlers, so a cycle never scans finished objects.
        self._active: dict[str, Obj] = {}  # workload key -> unfinished workload
        self._overlay: dict[str, Obj] = {}  # workload key -> what we wrote, until the cache has it
        self._pod_sets: dict[str, tuple[str, tuple[PodSet, ...]]] = {}  # key -> (uid/generation, pod sets)
        self._bound: dict[str, tuple[str, dict[str, int], str | None]] = {}  # pod uid -> (node, requests, owner)
        self._group_pods: dict[tuple[str, str], set[str]] = {}  # (namespace, group) -> unfinished pod uids
        self._written: dict[str, _Written] = {}
        self._parsed_cache: dict[str, tuple[str, _Parsed]] = {}  # key -> (resourceVersion, parsed)
        self._status_written: dict[str, float] = {}
        self._statuses_at = float("-inf")
        self._refresh_tokens = 0.0
        self._refresh_at: float | None = None
        self._deferred = False
        self._status_timer: asyncio.TimerHandle | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self._preempting: dict[str, PreemptionDecision] = {}  # victim -> why, until the preemptor is admitted
        for informer in (self.cqs, self.cohorts, self.flavors, self.lqs, self.nodes):
            informer.add_handler(self._on_any)
        self.workloads.add_handler(self._on_workload)
        self.pods.add_handler(self._on_pod)
        self.jobs.add_handler(self._on_job)

    # ---- informer handlers ----------------------------------------------------------------------

    def _on_any(self, change: ChangeType, obj: Obj, old: Obj | None) -> None:
        self._wake.set()

    def _on_workload(self, change: ChangeType, obj: Obj, old: Obj | None) -> None:
        key = workload_key(obj)
        mine = self._overlay.get(key)
        own_write = False
        if mine is not None and (change == "DELETED" or mine["metadata"].get("resourceVersion")
                                 == obj["metadata"].get("resourceVersion")):
            del self._overlay[key]
            own_write = change != "DELETED"
        if change == "DELETED" or is_finished(obj):
            self._active.pop(key, None)
            self._pod_sets.pop(key, None)
            self._written.pop(key, None)
            self._parsed_cache.pop(key, None)
        else:
            self._active[key] = obj
        if not own_write:  # our own write, delivered: the cycle that made it already decided on it
            self._wake.set()

    def _on_job(self, change: ChangeType, obj: Obj, old: Obj | None) -> None:
        if change == "DELETED" or (finished_condition(obj) is not None
                                   and (old is None or finished_condition(old) is None)):
            self._wake.set()

    def _on_pod(self, change: ChangeType, obj: Obj, old: Obj | None) -> None:
        meta = obj["metadata"]
        uid = meta.get("uid") or ""
        changed = False
        node = (obj.get("spec") or {}).get("nodeName")
        if change != "DELETED" and node and not pod_is_terminal(obj):
            if uid not in self._bound:
                changed = True
            self._bound[uid] = (node, pod_requests(obj), _owner_tag(obj))
        elif self._bound.pop(uid, None) is not None:
            changed = True
        group = group_of(obj)
        if group is not None:
            members = self._group_pods.setdefault((meta.get("namespace") or "", group), set())
            before = len(members)
            if change == "DELETED" or pod_is_terminal(obj):
                members.discard(uid)
            else:
                members.add(uid)
            changed |= before != len(members)
        if changed:
            self._wake.set()

    # ---- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        for informer in self._informers():
            await informer.wait_synced()
        stopper = asyncio.create_task(stop.wait())
        try:
            self._wake.set()
            while not stop.is_set():
                timeout = self._next_timeout()
                waiter = asyncio.create_task(self._wake.wait())
                await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if stop.is_set():
                    return
                await asyncio.sleep(self.options.debounce)
                self._wake.clear()
                started = time.perf_counter()
                try:
                    await self.cycle()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("admission cycle failed; retrying")
                    await asyncio.sleep(0.5)
                    self._wake.set()
                # A long cycle leaves as much time to the other controllers (they turn its decisions
                # into running pods) before the next one: at most half the loop goes to admission.
                await self._yield_to_others(min(1.0, time.perf_counter() - started))
        finally:
            stopper.cancel()

    @staticmethod
    async def _yield_to_others(budget: float) -> None:
        """Let the other controllers run for up to ``budget`` seconds, but no longer than they have
        work: once a few turns of the event loop in a row ran (almost) nothing but us, the loop is
        idle and waiting would only delay the next admissions."""
        deadline = time.perf_counter() + budget
        quiet_turns = 0
        while quiet_turns < 3 and time.perf_counter() < deadline:
            before = time.perf_counter()
            await asyncio.sleep(0)
            quiet_turns = quiet_turns + 1 if time.perf_counter() - before < 0.0002 else 0

    def _informers(self) -> list[Informer]:
        return [self.cqs, self.cohorts, self.flavors, self.lqs, self.workloads, self.jobs, self.pods, self.nodes]

    def _next_timeout(self) -> float:
        if self._deferred:
            return 0.0
        soonest = self.options.resync
        now = self.clock().timestamp()
        for key, workload in self._view():
            at = self._parsed(key, workload).requeue_at
            if at is not None and at > now:
                soonest = min(soonest, at - now + 0.01)
        return soonest

    def _view(self) -> Iterable[tuple[str, Obj]]:
        for key, obj in self._active.items():
            yield key, self._overlay.get(key, obj)

    def _parsed(self, key: str, workload: Obj) -> _Parsed:
        """The Workload's fields a cycle reads, parsed once per resourceVersion."""
        rv = workload["metadata"].get("resourceVersion") or ""
        cached = self._parsed_cache.get(key)
        if cached is not None and rv and cached[0] == rv:
            return cached[1]
        spec = workload.get("spec") or {}
        meta = workload["metadata"]
        holds = holds_quota(workload)
        requeue = ((workload.get("status") or {}).get("requeueState") or {}).get("requeueAt")
        reserved = find_condition(conditions_of(workload), QUOTA_RESERVED)
        parsed = _Parsed(
            finished=is_finished(workload), holds=holds, inactive=spec.get("active") is False,
            namespace=meta.get("namespace") or "default", queue_name=spec.get("queueName") or "",
            requeue_at=epoch(requeue) if requeue and not holds else None,
            reserved=(str(reserved.get("reason") or ""), str(reserved.get("message") or ""))
            if reserved is not None else None,
            needs_readiness=bool(_dependencies(workload)) or bool((meta.get("labels") or {}).get(
                GROUP_WORKLOAD_LABEL)))
        if holds and not parsed.finished:
            parsed.admitted = core_admitted(workload, self._cached_pod_sets(key, workload))
        if rv:
            self._parsed_cache[key] = (rv, parsed)
        return parsed

    def _pending_workload(self, key: str, workload: Obj, parsed: _Parsed, cluster_queue: str,
                          not_ready: str | None) -> Workload:
        if parsed.pending is None or parsed.pending_for != (cluster_queue, not_ready):
            parsed.pending = core_workload(workload, cluster_queue, not_ready=not_ready,
                                           sets=self._cached_pod_sets(key, workload))
            parsed.pending_for = (cluster_queue, not_ready)
        return parsed.pending

    # ---- one cycle ------------------------------------------------------------------------------

    async def cycle(self) -> CycleResult:
        started = time.perf_counter()
        now_dt = self.clock()
        now = now_dt.timestamp()
        stamp = now_rfc3339(now_dt)
        self._deferred = False
        snapshot, missing_lq, failed_deps, by_key = self._snapshot(now)
        # The core is pure and the snapshot immutable: deciding in a worker thread keeps the event
        # loop turning (the interpreter switches threads every few milliseconds), so a cycle over
        # thousands of pending workloads does not stall every other controller while it runs.
        result = await asyncio.to_thread(schedule, snapshot, now)
        self.memory = result.memory
        self.last_result = result
        self.cycles += 1
        for key, reason in failed_deps.items():
            await self._finish_failed_dependency(by_key[key], reason, stamp)
        for admission in result.admissions:
            await self._admit(by_key[admission.workload], admission.cluster_queue, admission.assignments, now,
                              stamp)
        for decision in result.preemptions:
            self._preempting[decision.victim] = decision
            metrics.PREEMPTED_WORKLOADS.labels(decision.preemptor_cluster_queue, decision.reason).inc()
            metrics.EVICTED_WORKLOADS.labels(decision.victim_cluster_queue, "Preempted").inc()
        await self._evict_victims(result, by_key, stamp)
        for eviction in result.evictions:
            victim = by_key.get(eviction.workload)
            if victim is not None:
                await self._evict(victim, eviction.reason, eviction.message, stamp)
                metrics.EVICTED_WORKLOADS.labels(eviction.cluster_queue, eviction.reason).inc()
        await self._queue_statuses(result, snapshot, stamp, now)
        budget = self.options.wait_writes_per_cycle
        for key, queue_name in missing_lq.items():
            budget -= await self._report_missing_queue(by_key[key], queue_name, stamp, now)
        budget = await self._report_waiting(result.waiting, by_key, stamp, now, budget)
        if budget <= 0:
            self._deferred = True
        self._observe(result)
        metrics.CYCLE_SECONDS.observe(time.perf_counter() - started)
        return result

    def _snapshot(self, now: float) -> tuple[Snapshot, dict[str, str], dict[str, str], dict[str, Obj]]:
        flavors = {f["metadata"]["name"]: flavor_of(f) for f in self.flavors.list()}
        cqs = {c["metadata"]["name"]: cluster_queue_config(c) for c in self.cqs.list()}
        cohorts = {c["metadata"]["name"]: cohort_config(c) for c in self.cohorts.list()}
        lq_target: dict[str, str] = {}
        lq_stops: dict[str, Any] = {}
        for queue in self.lqs.list():
            name = f"{queue['metadata'].get('namespace') or 'default'}/{queue['metadata']['name']}"
            lq_target[name] = (queue.get("spec") or {}).get("clusterQueue") or ""
            lq_stops[name] = (queue.get("spec") or {}).get("stopPolicy") or "None"
        pending: list[Workload] = []
        admitted: list[AdmittedWorkload] = []
        missing_lq: dict[str, str] = {}
        failed_deps: dict[str, str] = {}
        by_key: dict[str, Obj] = {}
        for key, workload in self._view():
            parsed = self._parsed(key, workload)
            if parsed.finished:
                continue
            by_key[key] = workload
            if parsed.admitted is not None:
                admitted.append(parsed.admitted)
                continue
            if parsed.inactive:
                continue
            lq_key = f"{parsed.namespace}/{parsed.queue_name}"
            if lq_key not in lq_target:
                missing_lq[key] = parsed.queue_name
                continue
            not_ready, failed = self._readiness(workload) if parsed.needs_readiness else (None, None)
            if failed is not None:
                failed_deps[key] = failed
                continue
            pending.append(self._pending_workload(key, workload, parsed, lq_target[lq_key], not_ready))
        nodes = self._capacity(admitted, by_key) if self.options.physical_fit else None
        snapshot = Snapshot(cqs, flavors, tuple(pending), tuple(admitted), cohorts, nodes, lq_stops,
                            self.options.settings, self.memory)
        return snapshot, missing_lq, failed_deps, by_key

    def _cached_pod_sets(self, key: str, workload: Obj) -> tuple[PodSet, ...]:
        meta = workload["metadata"]
        rv = f"{meta.get('uid')}/{meta.get('generation')}"  # pod sets are spec: status writes keep them
        cached = self._pod_sets.get(key)
        if cached is not None and cached[0] == rv:
            return cached[1]
        sets = pod_sets(workload)
        self._pod_sets[key] = (rv, sets)
        return sets

    # ---- readiness: dependencies and incomplete pod groups ----------------------------------------

    def _readiness(self, workload: Obj) -> tuple[str | None, str | None]:
        """(why not ready, why failed): both None when the workload may be admitted."""
        meta = workload["metadata"]
        namespace = meta.get("namespace") or "default"
        waiting: list[str] = []
        for name in _dependencies(workload):
            job = self.jobs.get(name, namespace)
            if job is None:
                waiting.append(f'Job "{name}" (not found)')
                continue
            done = finished_condition(job)
            if done is None:
                waiting.append(f'Job "{name}"')
            elif done.get("type") == "Failed":
                return None, f'dependency Job "{name}" failed: {done.get("reason") or "Failed"}'
        if waiting:
            return "waiting for dependencies to complete: " + ", ".join(waiting), None
        group = (meta.get("labels") or {}).get(GROUP_WORKLOAD_LABEL)
        if group:
            expected = sum(p.count for p in self._cached_pod_sets(workload_key(workload), workload))
            present = len(self._group_pods.get((namespace, group), ()))
            if present < expected:
                return f"waiting for the pods of group \"{group}\": {present} of {expected} exist", None
        return None, None

    async def _finish_failed_dependency(self, workload: Obj, reason: str, stamp: str) -> None:
        status = dict(workload.get("status") or {})
        status["conditions"] = with_condition(conditions_of(workload), FINISHED, "True", DEPENDENCY_FAILED,
                                              reason, stamp)
        if await self._write_status(workload, status) is not None:
            await self.recorder.record(workload, "Warning", DEPENDENCY_FAILED, reason)

    # ---- physical capacity ----------------------------------------------------------------------

    def _capacity(self, admitted: list[AdmittedWorkload], by_key: Mapping[str, Obj]) -> tuple[NodeCapacity, ...]:
        free: dict[str, dict[str, int]] = {}
        labels: dict[str, tuple[tuple[str, str], ...]] = {}
        for node in self.nodes.list():
            if (node.get("spec") or {}).get("unschedulable"):
                continue
            name = node["metadata"]["name"]
            free[name] = node_allocatable(node)
            labels[name] = tuple(sorted((node["metadata"].get("labels") or {}).items()))
        started: dict[str, int] = {}
        for node_name, requests, owner in self._bound.values():
            if owner is not None:
                started[owner] = started.get(owner, 0) + 1
            if node_name in free:
                room = free[node_name]
                for resource, amount in requests.items():
                    room[resource] = room.get(resource, 0) - amount
        for admitted_workload in admitted:
            if admitted_workload.evicting:
                continue  # its unstarted pods never start
            source = by_key.get(admitted_workload.key)
            tag = _workload_tag(source) if source is not None else None
            unstarted = sum(p.count for p in admitted_workload.workload.pod_sets) - started.get(tag or "", 0)
            for pod_set in admitted_workload.workload.pod_sets:
                take = min(unstarted, pod_set.count)
                unstarted -= take
                for _ in range(take):
                    _reserve(free, dict(pod_set.requests))
        return tuple(NodeCapacity(name, {r: max(0, a) for r, a in room.items()}, labels[name])
                     for name, room in free.items())

    # ---- writes ---------------------------------------------------------------------------------

    async def _write_status(self, workload: Obj, status: dict[str, Any]) -> Obj | None:
        try:
            written = await self.store.update_status({**workload, "status": status})
        except (ConflictError, NotFoundError):
            self._wake.set()  # someone else wrote: decide again on their version
            return None
        key = workload_key(written)
        if key in self._active:
            self._overlay[key] = written
        return written

    async def _admit(self, workload: Obj, cluster_queue: str, assignments: Any, now: float, stamp: str) -> None:
        status = dict(workload.get("status") or {})
        conditions = conditions_of(workload)
        conditions = with_condition(conditions, QUOTA_RESERVED, "True", "QuotaReserved",
                                    f"Quota reserved in ClusterQueue {cluster_queue}", stamp)
        conditions = with_condition(conditions, ADMITTED, "True", "Admitted", "The workload is admitted", stamp)
        for kind in (EVICTED, PREEMPTED):
            if find_condition(conditions, kind) is not None:
                conditions = with_condition(conditions, kind, "False", "QuotaReserved", "Previously: "
                                            + str((find_condition(conditions, kind) or {}).get("message") or ""),
                                            stamp)
        status.update(admission=admission_wire(cluster_queue, assignments), conditions=conditions)
        if await self._write_status(workload, status) is None:
            return
        key = workload_key(workload)
        self._written.pop(key, None)
        metrics.ADMITTED_WORKLOADS.labels(cluster_queue).inc()
        metrics.ADMISSION_WAIT.labels(cluster_queue).observe(max(0.0, now - queue_time(workload)))
        await self.recorder.record(workload, "Normal", "QuotaReserved",
                                   f"Quota reserved in ClusterQueue {cluster_queue}, wait time since queued was "
                                   f"{max(0, round(now - queue_time(workload)))}s")
        await self.recorder.record(workload, "Normal", "Admitted", f"Admitted by ClusterQueue {cluster_queue}")

    async def _evict_victims(self, result: CycleResult, by_key: dict[str, Obj], stamp: str) -> None:
        """Evict every victim a waiting preemptor is nominated for that is not evicted yet: this cycle's
        decisions, and earlier ones whose write did not go through (the core keeps waiting for them)."""
        wanted = {victim for victims in result.memory.nominated.values() for victim in victims}
        for victim in list(self._preempting):
            if victim not in wanted:
                del self._preempting[victim]
        for victim, decision in self._preempting.items():
            workload = by_key.get(victim)
            if workload is not None and holds_quota(workload) and not is_evicted(workload):
                await self._evict(workload, "Preempted", decision.message, stamp, preempted=decision.reason)

    async def _evict(self, workload: Obj, reason: str, message: str, stamp: str, *,
                     preempted: str | None = None) -> None:
        conditions = with_condition(conditions_of(workload), EVICTED, "True", reason, message, stamp)
        if preempted is not None:
            conditions = with_condition(conditions, PREEMPTED, "True", preempted, message, stamp)
        status = {**(workload.get("status") or {}), "conditions": conditions}
        if await self._write_status(workload, status) is not None:
            await self.recorder.record(workload, "Normal", "Preempted" if preempted else "Evicted", message)

    async def _report_missing_queue(self, workload: Obj, queue_name: str, stamp: str, now: float) -> int:
        message = f'LocalQueue "{queue_name}" doesn\'t exist'
        key = workload_key(workload)
        if self._parsed(key, workload).reserved == (LOCAL_QUEUE_MISSING, message):
            return 0
        last = self._written.get(key)
        if last is not None and (last.code, last.message) == (LOCAL_QUEUE_MISSING, message) and (
                now - last.at < self.options.position_refresh):
            return 0
        status = dict(workload.get("status") or {})
        status["conditions"] = with_condition(conditions_of(workload), QUOTA_RESERVED, "False",
                                              LOCAL_QUEUE_MISSING, message, stamp)
        if await self._write_status(workload, status) is not None:
            self._written[key] = _Written(LOCAL_QUEUE_MISSING, message, now, (LOCAL_QUEUE_MISSING, message))
            await self.recorder.record(workload, "Warning", "Pending", message)
        return 1

    def _refill_refresh_tokens(self, now: float) -> None:
        rate = self.options.position_writes_per_second
        if self._refresh_at is not None:
            self._refresh_tokens = min(rate, self._refresh_tokens + (now - self._refresh_at) * rate)
        else:
            self._refresh_tokens = rate
        self._refresh_at = now

    async def _report_waiting(self, waiting: Mapping[str, WaitReason], by_key: dict[str, Obj], stamp: str,
                              now: float, budget: int) -> int:
        """Write each waiting workload's reason, nearest the head first. A new gist (see ``_gist``) is
        written with the attempt annotation and an Event, within ``budget`` writes per cycle (the rest
        next cycle) and at most every ``reason_min_interval`` per workload (the first at once); a change
        of details only at most every ``position_refresh`` per workload and ``position_writes_per_second``
        over all of them. Nothing is written when the stored condition already says it."""
        self._refill_refresh_tokens(now)
        due: list[tuple[int, str, WaitReason, bool]] = []
        retry_at: float | None = None
        for key, wait in waiting.items():
            previous = self._written.get(key)
            if previous is None:
                new_gist = True
            else:
                new_gist = (previous.code, previous.message) != (wait.code, wait.message) and (
                    previous.gist != _gist(wait.reason))
                wait_for = self.options.reason_min_interval if new_gist else self.options.position_refresh
                if now - previous.at < wait_for:
                    if new_gist:
                        retry_at = min(retry_at or math.inf, previous.at + wait_for)
                    continue
            due.append((-1 if wait.position is None else wait.position, key, wait, new_gist))
        if retry_at is not None:
            self._wake_at(retry_at - now)
        due.sort(key=lambda item: (item[0] < 0, item[0]))
        for _, key, wait, new_gist in due:
            workload = by_key.get(key)
            if workload is None:
                continue
            parsed = self._parsed(key, workload)
            if parsed.holds:
                continue
            if not new_gist and self._refresh_tokens < 1:
                continue
            full = wait.describe()
            if parsed.reserved == (wait.code, full):
                continue
            if new_gist:
                if budget <= 0:
                    return 0
                budget -= 1
            else:
                self._refresh_tokens -= 1
            status = dict(workload.get("status") or {})
            status["conditions"] = with_condition(conditions_of(workload), QUOTA_RESERVED, "False", wait.code,
                                                  full, stamp)
            written = await self._write_status(workload, status)
            if written is None:
                continue
            self._written[key] = _Written(wait.code, wait.message, now, _gist(wait.reason))
            if new_gist:
                await self._record_attempt(written, wait, stamp)
                await self.recorder.record(workload, "Normal", "Pending", f"{wait.code}: {wait.message}")
        return budget

    def _wake_at(self, delay: float) -> None:
        """Run a cycle after ``delay`` seconds (a deferred reason is due), unless one is due sooner."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, delay)
        if self._retry_timer is None or self._retry_timer.when() <= loop.time() or when < self._retry_timer.when():
            if self._retry_timer is not None:
                self._retry_timer.cancel()
            self._retry_timer = loop.call_at(when, self._wake.set)

    async def _record_attempt(self, workload: Obj, wait: WaitReason, stamp: str) -> None:
        """The last admission attempt, for ``capstan describe workload`` (an annotation: it survives a
        restart and needs no schema)."""
        attempt = {
            "time": stamp, "clusterQueue": wait.cluster_queue,
            "position": None if wait.position is None else wait.position + 1,
            "reason": wait.code, "message": wait.message,
            "higherPriorityAhead": wait.higher_priority_ahead, "ahead": list(wait.ahead_sample),
            "shortages": [{"flavor": s.flavor, "resource": s.resource, "requested": s.requested,
                           "available": s.available, "limitedBy": s.limited_by, "text": s.describe()}
                          for s in wait.reason.shortages],
        }
        meta = workload["metadata"]
        try:
            written = await self.store.patch(self.workloads_rt, meta["name"], meta.get("namespace"), {
                "metadata": {"annotations": {ADMISSION_ATTEMPT: json.dumps(attempt, separators=(",", ":"))}}})
        except (NotFoundError, ConflictError):
            return
        key = workload_key(written)
        if key in self._active:
            self._overlay[key] = written

    # ---- queue status ---------------------------------------------------------------------------

    async def _queue_statuses(self, result: CycleResult, snapshot: Snapshot, stamp: str, now: float) -> None:
        if now - self._statuses_at < self.options.status_interval:
            self._deferred_status()  # each queue's status is written at most this often anyway
            return
        self._statuses_at = now
        known = set(snapshot.flavors)
        misconfigured = self._misconfigured(result)
        active_by_cq: dict[str, bool] = {}
        admitted_count: dict[str, int] = {}
        for admitted in snapshot.admitted:
            admitted_count[admitted.workload.cluster_queue] = admitted_count.get(admitted.workload.cluster_queue,
                                                                                 0) + 1
        for admission in result.admissions:
            admitted_count[admission.cluster_queue] = admitted_count.get(admission.cluster_queue, 0) + 1
        for cq in self.cqs.list():
            name = cq["metadata"]["name"]
            active = active_condition(cq, known, misconfigured.get(name), stamp)
            active_by_cq[name] = active["status"] == "True"
            wanted = cluster_queue_status(cq, result.queues.get(name), admitted_count.get(name, 0), active)
            await self._write_queue_status(cq, wanted, now)
        await self._local_queue_statuses(result, snapshot, active_by_cq, stamp, now)

    @staticmethod
    def _misconfigured(result: CycleResult) -> dict[str, str]:
        """Per ClusterQueue, a cohort-tree problem the core found (e.g. a cycle of parents), unless
        flavors explain it."""
        found: dict[str, str] = {}
        for wait in result.waiting.values():
            if wait.code == "Misconfigured" and "not found" not in wait.message:
                found.setdefault(wait.cluster_queue, wait.message)
        return found

    async def _local_queue_statuses(self, result: CycleResult, snapshot: Snapshot, active_by_cq: dict[str, bool],
                                    stamp: str, now: float) -> None:
        pending: dict[str, int] = {}
        reserving: dict[str, int] = {}
        usage: dict[str, dict[tuple[str, str], int]] = {}
        admitted_now = {a.workload: a for a in result.admissions}
        for workload in snapshot.pending:
            if workload.key not in admitted_now:
                pending[workload.local_queue] = pending.get(workload.local_queue, 0) + 1
        held = [(a.workload.local_queue, a.usage())
                for a in snapshot.admitted]
        for workload in snapshot.pending:
            if workload.key in admitted_now:
                admission = admitted_now[workload.key]
                total: dict[tuple[str, str], int] = {}
                for assignment in admission.assignments:
                    flavors = assignment.flavor_of
                    for resource, amount in assignment.usage.items():
                        fr = (flavors.get(resource, ""), resource)
                        total[fr] = total.get(fr, 0) + amount
                held.append((workload.local_queue, total))
        for lq_name, amounts in held:
            reserving[lq_name] = reserving.get(lq_name, 0) + 1
            into = usage.setdefault(lq_name, {})
            for fr, amount in amounts.items():
                into[fr] = into.get(fr, 0) + amount
        for lq in self.lqs.list():
            name = f"{lq['metadata'].get('namespace') or 'default'}/{lq['metadata']['name']}"
            cq_name = (lq.get("spec") or {}).get("clusterQueue") or ""
            cq = self.cqs.get(cq_name)
            wanted = local_queue_status(lq, cq, active_by_cq.get(cq_name, False), pending.get(name, 0),
                                        reserving.get(name, 0), usage.get(name, {}), stamp)
            await self._write_queue_status(lq, wanted, now)

    async def _write_queue_status(self, queue: Obj, wanted: dict[str, Any], now: float) -> None:
        if same_status(queue.get("status"), wanted):
            return
        key = f"{queue['kind']}/{queue['metadata'].get('namespace') or ''}/{queue['metadata']['name']}"
        if now - self._status_written.get(key, 0.0) < self.options.status_interval:
            self._deferred_status()
            return
        try:
            # With the cached resourceVersion: the API server refuses an update of a custom resource
            # without one. A conflict means the cache is behind; the next cycle writes from the newer copy.
            await self.store.update_status({**queue, "status": wanted})
        except NotFoundError:
            return
        except ConflictError:
            self._deferred_status()
            return
        self._status_written[key] = now

    def _deferred_status(self) -> None:
        if self._status_timer is None or self._status_timer.cancelled() or self._status_timer.when() < (
                asyncio.get_running_loop().time()):
            self._status_timer = asyncio.get_running_loop().call_later(self.options.status_interval, self._wake.set)

    # ---- metrics --------------------------------------------------------------------------------

    def _observe(self, result: CycleResult) -> None:
        counts: dict[tuple[str, str], int] = {}
        for wait in result.waiting.values():
            status = "active" if wait.code in _ACTIVE_CODES else "inadmissible"
            counts[(wait.cluster_queue, status)] = counts.get((wait.cluster_queue, status), 0) + 1
        for name, figures in result.queues.items():
            for status in ("active", "inadmissible"):
                metrics.PENDING_WORKLOADS.labels(name, status).set(counts.get((name, status), 0))
            metrics.RESERVING_WORKLOADS.labels(name).set(figures.reserving)
            metrics.WEIGHTED_SHARE.labels(name).set(figures.weighted_share)
            for (flavor, resource), amount in figures.usage.items():
                metrics.RESOURCE_USAGE.labels(name, flavor, resource).set(amount / 1000 if resource == "cpu"
                                                                          else amount)


# ---- helpers ------------------------------------------------------------------------------------

def _dependencies(workload: Obj) -> list[str]:
    raw = ((workload["metadata"].get("annotations") or {}).get(DEPENDS_ON) or "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def _owner_tag(pod: Obj) -> str | None:
    meta = pod["metadata"]
    uid = (meta.get("labels") or {}).get(CONTROLLER_UID_LABEL)
    if uid:
        return f"job:{uid}"
    group = group_of(pod)
    return f"group:{meta.get('namespace') or 'default'}/{group}" if group else None


def _workload_tag(workload: Obj) -> str | None:
    meta = workload["metadata"]
    labels = meta.get("labels") or {}
    if labels.get(JOB_UID_LABEL):
        return f"job:{labels[JOB_UID_LABEL]}"
    if labels.get(GROUP_WORKLOAD_LABEL):
        return f"group:{meta.get('namespace') or 'default'}/{labels[GROUP_WORKLOAD_LABEL]}"
    return None


def _reserve(free: dict[str, dict[str, int]], requests: dict[str, int]) -> None:
    """Take one pod's requests from the first node with room (or the first node)."""
    for room in free.values():
        if all(room.get(r, 0) >= a for r, a in requests.items()):
            for r, a in requests.items():
                room[r] = room.get(r, 0) - a
            return
    for room in free.values():
        for r, a in requests.items():
            room[r] = room.get(r, 0) - a
        return

