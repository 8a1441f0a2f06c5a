"""One scheduling cycle: ``schedule(snapshot, now) -> CycleResult``.

Order of work. Each ClusterQueue's pending workloads are sorted by (nominated preemptor first,
priority descending, ``created`` ascending, key). The *heads* of all queues sit in one heap keyed by

* classic: (nominated, borrows?, -priority, created): workloads that fit within nominal quota go
  before borrowers, so a borrower cannot take what a lender's own work needs this cycle;
* fair sharing: (nominated, weighted shares along the cohort path with the workload added, ...):
  the queue (and, at each level, the cohort) with the lowest share goes first, Kueue's tournament.

The best head is popped and decided; then that queue's next workload becomes its head. So a cycle
admits as many workloads as fit, from every queue (not one per queue per cycle). Within a cycle
usage only grows, so a head's key only worsens; a popped head whose key went stale is re-keyed and
pushed back (lazy heap). StrictFIFO: an inadmissible head blocks the rest of its queue.
BestEffortFIFO: it does not.

Not evaluating needlessly. Within a cycle, a flavor assignment is cached per (queue, pod sets,
tree version) and a failed preemption search per (queue, pod sets, priority, tree version): many
identical workloads cost one evaluation. Across cycles, ``memory.settled`` remembers workloads
found inadmissible together with a fingerprint of their cohort tree (queue and cohort configs, the
set of admitted workloads, the flavors); while the fingerprint is unchanged they are skipped and
keep their reason.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field

from capstan.core.scheduling.queueing.flavors import (
    FIT_BORROW,
    NEVER,
    PREEMPT,
    PREEMPT_BORROW,
    Assignment,
    assign_flavors,
    can_preempt,
    group_index,
)
from capstan.core.scheduling.queueing.model import (
    Admission,
    ClusterQueueConfig,
    CycleResult,
    Eviction,
    FlavorResource,
    PreemptionDecision,
    QueueFigures,
    Reason,
    SchedulerMemory,
    Snapshot,
    WaitReason,
    Workload,
)
from capstan.core.scheduling.queueing.physical import Placement
from capstan.core.scheduling.queueing.preemption import Running, VictimFinder
from capstan.core.scheduling.queueing.quota import QuotaNode, QuotaTree

_INF_SHARE = 2**63 - 1
_NOT_SETTLED = ("WaitingForCapacity", "PreemptionPending", "PreemptionInProgress", "BlockedByStrictFIFO")


@dataclass(slots=True)
class _Queue:
    config: ClusterQueueConfig
    node: QuotaNode
    groups_of: dict[str, int]
    order: list[Workload] = field(default_factory=list)
    index: int = 0
    pushed_version: int = -1
    pushed_assignment: Assignment | None = None


class _Cycle:
    def __init__(self, snapshot: Snapshot, now: float) -> None:
        self.snapshot = snapshot
        self.now = now
        self.memory = snapshot.memory or SchedulerMemory()
        self.tree = QuotaTree(snapshot.cluster_queues, snapshot.cohorts)
        self.version: dict[str, int] = {}
        self.reasons: dict[str, Reason] = {}
        self.reason_version: dict[str, int] = {}
        self.admissions: list[Admission] = []
        self.preemptions: list[PreemptionDecision] = []
        self.evictions: list[Eviction] = []
        self.nominated: dict[str, tuple[str, ...]] = {}
        self.assign_cache: dict[tuple[str, object, int], Assignment] = {}
        self.fail_cache: dict[tuple[object, ...], Reason] = {}
        self.evaluated = 0
        self.placement = Placement(snapshot.nodes, snapshot.flavors) if snapshot.nodes is not None else None
        self.running: dict[str, list[Running]] = {}
        self.running_by_key: dict[str, Running] = {}
        self.admitted_keys: set[str] = set()
        self.guards: dict[str, frozenset[str]] = {}
        self.queues: dict[str, _Queue] = {}
        self.misconfigured: dict[str, Reason] = {}
        self.heap: list[tuple[tuple[object, ...], int, str]] = []
        self.seq = 0
        self.finder = VictimFinder(self.tree, self.running, snapshot.settings)
        self.settled_now: dict[str, Mapping[str, tuple[int, Reason]]] = {}
        self.fresh: dict[str, int] = {}  # queue -> admissions this cycle

    # -- setup ------------------------------------------------------------------------------------

    def load(self) -> None:
        flavors = self.snapshot.flavors
        for name, config in self.snapshot.cluster_queues.items():
            node = self.tree.queues[name]
            self.queues[name] = _Queue(config, node, group_index(config))
            missing = sorted({f.name for g in config.resource_groups for f in g.flavors if f.name not in flavors})
            if missing:
                self.misconfigured[name] = Reason("Misconfigured", f'ClusterQueue "{name}" is inactive: '
                                                  f"ResourceFlavor(s) not found: {', '.join(missing)}")
            elif name in self.tree.broken:
                self.misconfigured[name] = Reason("Misconfigured", f'ClusterQueue "{name}" is inactive: '
                                                  f"{self.tree.broken[name]}")
        for root in self.tree.roots():
            self.version[root.name] = 0
        for admitted in self.snapshot.admitted:
            workload = admitted.workload
            owner = self.tree.queues.get(workload.cluster_queue)
            self.admitted_keys.add(workload.key)
            guards = admitted.preempted | self.memory.guards.get(workload.key, frozenset())
            if guards:
                self.guards[workload.key] = guards
            if owner is None:
                continue
            usage = admitted.usage()
            owner.add_all(usage)
            running = Running(workload.key, workload.cluster_queue, workload.priority, workload.created,
                              admitted.admitted_at, usage, admitted.evicting, guards)
            self.running.setdefault(workload.cluster_queue, []).append(running)
            self.running_by_key[workload.key] = running
            self._drain_if_stopped(admitted.evicting, workload)

    def _drain_if_stopped(self, evicting: bool, workload: Workload) -> None:
        if evicting:
            return
        config = self.snapshot.cluster_queues[workload.cluster_queue]
        if config.stop_policy == "HoldAndDrain":
            self.evictions.append(Eviction(workload.key, workload.cluster_queue, "ClusterQueueStopped",
                                           f'ClusterQueue "{config.name}" is stopped (HoldAndDrain)'))
        elif self.snapshot.local_queue_stop_policies.get(workload.local_queue) == "HoldAndDrain":
            self.evictions.append(Eviction(workload.key, workload.cluster_queue, "LocalQueueStopped",
                                           f'LocalQueue "{workload.local_queue}" is stopped (HoldAndDrain)'))

    def fingerprints(self, extra_admitted: Mapping[str, str] | None = None) -> dict[str, int]:
        """Per tree root: a hash of everything that decides admissibility in that tree."""
        members: dict[str, list[tuple[str, bool]]] = {root: [] for root in self.version}
        for admitted in self.snapshot.admitted:
            node = self.tree.queues.get(admitted.workload.cluster_queue)
            if node is not None:
                members[node.root.name].append((admitted.workload.key, admitted.evicting))
        for key, queue in (extra_admitted or {}).items():
            members[self.tree.queues[queue].root.name].append((key, False))
        flavors_hash = hash(tuple(sorted(self.snapshot.flavors.items())))
        out = {}
        for root_name, keys in members.items():
            root = self.tree.cohorts.get(root_name) or self.tree.queues[root_name]
            configs = tuple(sorted((n.name, hash(n.config)) for n in self.tree.tree_nodes(root)))
            out[root_name] = hash((configs, frozenset(keys), flavors_hash))
        return out

    def enqueue(self) -> None:
        stops = self.snapshot.local_queue_stop_policies
        settled_now = self._settled_now()
        nominated = self.memory.nominated
        for workload in self.snapshot.pending:
            queue = self.queues.get(workload.cluster_queue)
            if queue is None:
                self.reasons[workload.key] = Reason(
                    "ClusterQueueNotFound", f'ClusterQueue "{workload.cluster_queue}" not found')
            elif workload.not_ready is not None:
                self.reasons[workload.key] = Reason("NotReady", f"not ready: {workload.not_ready}")
            elif workload.requeue_at is not None and workload.requeue_at > self.now:
                wait = workload.requeue_at - self.now
                self.reasons[workload.key] = Reason("Backoff", f"requeued after eviction; eligible again in {wait:g}s")
            else:
                queue.order.append(workload)
        for name, queue in self.queues.items():
            queue.order.sort(key=lambda w: (w.key not in nominated, -w.priority, w.created, w.key))
            held = self.misconfigured.get(name)
            if held is None and queue.config.stop_policy != "None":
                held = Reason("ClusterQueueStopped", f'ClusterQueue "{name}" is stopped ({queue.config.stop_policy})')
            for workload in queue.order:
                if held is not None:
                    self.reasons[workload.key] = held
                elif stops.get(workload.local_queue, "None") != "None":
                    self.reasons[workload.key] = Reason(
                        "LocalQueueStopped", f'LocalQueue "{workload.local_queue}" is stopped '
                        f"({stops[workload.local_queue]})")
            if held is None:
                queue.order = [w for w in queue.order if w.key not in self.reasons]
                self._push_head(name, settled_now)
            else:
                queue.order = []

    def _settled_now(self) -> dict[str, Mapping[str, tuple[int, Reason]]]:
        """Per root, the settled workloads whose tree has not changed since they were settled."""
        current = self.fingerprints()
        out: dict[str, Mapping[str, tuple[int, Reason]]] = {}
        for root, (fingerprint, entries) in self.memory.settled.items():
            if current.get(root) == fingerprint:
                out[root] = entries
        self.settled_now = out
        return out

    # -- ordering ---------------------------------------------------------------------------------

    def _assignment(self, queue: _Queue, workload: Workload) -> Assignment:
        version = self.version[queue.node.root.name]
        cache_key = (queue.config.name, workload.pod_sets, version)
        found = self.assign_cache.get(cache_key)
        if found is None:
            self.evaluated += 1
            found = assign_flavors(workload, queue.config, queue.node, self.snapshot.flavors, queue.groups_of)
            self.assign_cache[cache_key] = found
        return found

    def _key(self, queue: _Queue, workload: Workload, assignment: Assignment) -> tuple[object, ...]:
        first = 0 if workload.key in self.memory.nominated else 1
        if self.snapshot.settings.fair_sharing:
            path = queue.node.path()[:-1] or [queue.node]
            shares = tuple(n.dominant_share(extra=assignment.usage) for n in reversed(path))
            return (first, shares, -workload.priority, workload.created, workload.key)
        return (first, 1 if assignment.borrowing else 0, -workload.priority, workload.created, workload.key)

    def _push_head(self, name: str, settled_now: Mapping[str, Mapping[str, tuple[int, Reason]]]) -> None:
        queue = self.queues[name]
        settled = settled_now.get(queue.node.root.name, {})
        while queue.index < len(queue.order):
            workload = queue.order[queue.index]
            entry = settled.get(workload.key)
            if entry is not None and entry[0] == hash(workload):
                self._set_reason(queue, workload, entry[1])
                if queue.config.queueing_strategy == "StrictFIFO":
                    self._block_rest(queue, workload)
                    return
                queue.index += 1
                continue
            assignment = self._assignment(queue, workload)
            queue.pushed_version = self.version[queue.node.root.name]
            queue.pushed_assignment = assignment
            self.seq += 1
            heapq.heappush(self.heap, (self._key(queue, workload, assignment), self.seq, name))
            return

    def _set_reason(self, queue: _Queue, workload: Workload, reason: Reason) -> None:
        self.reasons[workload.key] = reason
        self.reason_version[workload.key] = self.version[queue.node.root.name]

    def _block_rest(self, queue: _Queue, head: Workload) -> None:
        blocked = Reason("BlockedByStrictFIFO", f'blocked by the head of StrictFIFO ClusterQueue '
                         f'"{queue.config.name}": {head.key}')
        for workload in queue.order[queue.index + 1:]:
            self.reasons[workload.key] = blocked
        queue.index = len(queue.order)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        while self.heap:
            key, _, name = heapq.heappop(self.heap)
            queue = self.queues[name]
            workload = queue.order[queue.index]
            assignment = queue.pushed_assignment
            if assignment is None or queue.pushed_version != self.version[queue.node.root.name]:
                assignment = self._assignment(queue, workload)
                fresh = self._key(queue, workload, assignment)
                queue.pushed_version = self.version[queue.node.root.name]
                queue.pushed_assignment = assignment
                if fresh > key and self.heap and fresh > self.heap[0][0]:
                    self.seq += 1
                    heapq.heappush(self.heap, (fresh, self.seq, name))
                    continue
            admitted = self._decide(queue, workload, assignment)
            if not admitted and queue.config.queueing_strategy == "StrictFIFO":
                self._block_rest(queue, workload)
                continue
            queue.index += 1
            self._push_head(name, self.settled_now)

    def _decide(self, queue: _Queue, workload: Workload, assignment: Assignment) -> bool:
        waiting_for = [v for v in self.memory.nominated.get(workload.key, ()) if v in self.admitted_keys]
        if waiting_for:
            self._hold_for_preemptor(queue, waiting_for, assignment)
            self._set_reason(queue, workload, Reason(
                "PreemptionInProgress", f"waiting for {len(waiting_for)} preempted workload(s) to release quota: "
                f"{', '.join(waiting_for)}"))
            return False
        if assignment.fits:
            problem = self.placement.try_place(workload, assignment) if self.placement is not None else None
            if problem is not None:
                self._set_reason(queue, workload, Reason("WaitingForCapacity", problem))
                return False
            self._admit(queue, workload, assignment)
            return True
        if assignment.rank in (PREEMPT, PREEMPT_BORROW) and can_preempt(queue.config, queue.node):
            self._preempt(queue, workload, assignment)
            return False
        assert assignment.reason is not None
        self._set_reason(queue, workload, assignment.reason)
        return False

    def _hold_for_preemptor(self, queue: _Queue, victims: list[str], assignment: Assignment) -> None:
        """A nominated preemptor waits for its victims to release their quota. As in the cycle that chose
        them, the preemption is applied virtually: that quota is the preemptor's, so workloads decided
        after it neither wait for those evictions nor count on the quota they free."""
        if assignment.rank == NEVER or not assignment.usage:
            return
        for key in victims:
            running = self.running_by_key.get(key)
            if running is None or key in self.finder.taken:
                continue
            self.tree.queues[running.queue].add_all(running.usage, -1)
            self.finder.taken.add(key)
        queue.node.add_all(assignment.usage)
        self.version[queue.node.root.name] += 1

    def _admit(self, queue: _Queue, workload: Workload, assignment: Assignment) -> None:
        queue.node.add_all(assignment.usage)
        self.version[queue.node.root.name] += 1
        preempted = frozenset(self.memory.nominated.get(workload.key, ()))
        self.admissions.append(Admission(workload.key, queue.config.name, assignment.assignments,
                                         assignment.rank == FIT_BORROW, preempted))
        # Not a preemption candidate in the cycle that admits it: counted in usage only.
        self.fresh[queue.config.name] = self.fresh.get(queue.config.name, 0) + 1
        if preempted:
            self.guards[workload.key] = preempted

    def _preempt(self, queue: _Queue, workload: Workload, assignment: Assignment) -> None:
        policy = queue.config.preemption
        tie = workload.created if policy.within_cluster_queue == "LowerOrNewerEqualPriority" else 0.0
        root = queue.node.root.name
        cache_key = (queue.config.name, workload.pod_sets, workload.priority, tie, self.version[root])
        cached = self.fail_cache.get(cache_key)
        if cached is not None:
            self._set_reason(queue, workload, cached)
            return
        found = self.finder.find(workload, queue.config, queue.node, assignment.usage)
        assert assignment.reason is not None
        if found is None:
            reason = Reason(assignment.reason.code, assignment.reason.message
                            + "; no workloads can be preempted to make room", assignment.reason.shortages)
            self.fail_cache[cache_key] = reason
            self._set_reason(queue, workload, reason)
            return
        if found.waiting_for:
            keys = [r.key for r in found.waiting_for]
            self._set_reason(queue, workload, Reason(
                "PreemptionInProgress", f"waiting for {len(keys)} evicted workload(s) to release quota: "
                f"{', '.join(keys)}", assignment.reason.shortages))
            return
        victims = found.victims
        for victim, why in victims:
            self.preemptions.append(PreemptionDecision(
                victim.key, victim.queue, workload.key, queue.config.name, why,
                f"preempted to make room for {workload.key} ({_why(why)})"))
        self.nominated[workload.key] = tuple(v.key for v, _ in victims)
        # Apply the preemption virtually for the rest of the cycle: the victims' quota is spoken for
        # by the preemptor, so later decisions see the state this cycle is heading to.
        for victim, _ in victims:
            self.tree.queues[victim.queue].add_all(victim.usage, -1)
        queue.node.add_all(assignment.usage)
        self.version[root] += 1
        self._set_reason(queue, workload, Reason(
            "PreemptionPending", f"preempting {len(victims)} workload(s) to make room: "
            f"{', '.join(v.key for v, _ in victims)}", assignment.reason.shortages))

    # -- results ----------------------------------------------------------------------------------

    def result(self) -> CycleResult:
        waiting = self._wait_reasons()
        new_admitted = {a.workload: a.cluster_queue for a in self.admissions}
        end = self.fingerprints(new_admitted)
        settled: dict[str, dict[str, tuple[int, Reason]]] = {}
        by_key = {w.key: w for w in self.snapshot.pending}
        for key, reason in self.reasons.items():
            workload = by_key[key]
            queue = self.queues.get(workload.cluster_queue)
            if (queue is None or key not in self.reason_version or reason.code in _NOT_SETTLED
                    or self.reason_version[key] != self.version[queue.node.root.name]):
                continue
            settled.setdefault(queue.node.root.name, {})[key] = (hash(workload), reason)
        memory = SchedulerMemory(
            settled={root: (end[root], entries) for root, entries in settled.items()},
            nominated={**{k: v for k, v in self.memory.nominated.items()
                          if k in by_key and k not in new_admitted and any(x in self.admitted_keys for x in v)},
                       **self.nominated},
            guards={k: v for k, v in self.guards.items() if k in self.admitted_keys or k in new_admitted})
        return CycleResult(tuple(self.admissions), tuple(self.preemptions), tuple(self.evictions), waiting,
                           self._figures(new_admitted), memory, self.evaluated)

    def _wait_reasons(self) -> dict[str, WaitReason]:
        sample = self.snapshot.settings.wait_reason_ahead_sample
        admitted = {a.workload for a in self.admissions}
        reasons = self.reasons
        out: dict[str, WaitReason] = {}
        for name, queue in self.queues.items():
            order = [w for w in queue.order if w.key not in admitted] if admitted else queue.order
            first_of_priority, previous = 0, None
            ahead: tuple[str, ...] = ()
            for position, workload in enumerate(order):
                if workload.priority != previous:
                    first_of_priority, previous = position, workload.priority
                    ahead = tuple(w.key for w in order[:min(first_of_priority, sample)])
                out[workload.key] = WaitReason(workload.key, name, position, reasons[workload.key], first_of_priority,
                                               ahead)
        for workload in self.snapshot.pending:
            if workload.key not in out and workload.key not in admitted:
                reason = reasons.get(workload.key) or Reason("Pending", "not evaluated")
                out[workload.key] = WaitReason(workload.key, workload.cluster_queue, None, reason)
        return out

    def _figures(self, new_admitted: Mapping[str, str]) -> dict[str, QueueFigures]:
        pending: dict[str, int] = {}
        for workload in self.snapshot.pending:
            if workload.key not in new_admitted:
                pending[workload.cluster_queue] = pending.get(workload.cluster_queue, 0) + 1
        out = {}
        for name, queue in self.queues.items():
            node = queue.node
            usage = {fr: v for fr, v in node.usage.items() if v}
            borrowed: dict[FlavorResource, int] = {fr: v - node.subtree.get(fr, 0) for fr, v in usage.items()
                                                   if v > node.subtree.get(fr, 0)}
            share = node.dominant_share()
            reserving = len(self.running.get(name, ())) + self.fresh.get(name, 0)
            out[name] = QueueFigures(pending.get(name, 0), reserving, usage, borrowed,
                                     _INF_SHARE if share == float("inf") else int(share))
        return out


def _why(reason: str) -> str:
    return {"InClusterQueue": "prioritization in the ClusterQueue",
            "InCohortReclamation": "reclamation within the cohort",
            "InCohortFairSharing": "fair sharing within the cohort",
            "InCohortReclaimWhileBorrowing": "reclamation within the cohort while borrowing"}.get(reason, reason)


def schedule(snapshot: Snapshot, now: float) -> CycleResult:
    """Run one scheduling cycle over ``snapshot`` at time ``now`` (seconds; any epoch)."""
    cycle = _Cycle(snapshot, now)
    cycle.load()
    cycle.enqueue()
    cycle.run()
    return cycle.result()
