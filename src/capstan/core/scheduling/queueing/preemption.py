"""Choosing preemption victims.

Classic preemption (Kueue's heuristics, simplified): candidates are the preemptor's own queue's
workloads allowed by ``withinClusterQueue`` plus workloads of *borrowing* queues in the same cohort
tree allowed by ``reclaimWithinCohort`` / ``borrowWithinCohort``. They are ordered: other (borrowing)
queues first, then lowest priority, then most recently admitted. Attempts, first success wins:

1. reclaim without borrowing (own queue + reclaimable workloads of borrowing queues);
2. borrow while reclaiming (``borrowWithinCohort: LowerPriority``, below ``maxPriorityThreshold``);
3. own queue only, borrowing allowed.

Each attempt removes candidates greedily until the preemptor fits, skipping a queue's workloads
once that queue no longer borrows, then re-adds victims in reverse order whenever the preemptor
still fits without them, so the set is small.

Fair-sharing preemption repeatedly targets the queue with the highest weighted share; a victim in
another queue is taken only if a configured strategy allows it (``LessThanOrEqualToFinalShare``:
share(preemptor queue with the workload) <= share(target queue without the victim);
``LessThanInitialShare``: ... < share(target queue now)).

The loop guard: a workload admitted by preempting X is never a candidate when X is the preemptor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from capstan.core.scheduling.queueing.model import (
    ClusterQueueConfig,
    FlavorResource,
    Settings,
    Workload,
)
from capstan.core.scheduling.queueing.quota import QuotaNode, QuotaTree


@dataclass(slots=True)
class Running:
    """An admitted workload as the cycle tracks it."""

    key: str
    queue: str
    priority: int
    created: float
    admitted_at: float
    usage: dict[FlavorResource, int]
    evicting: bool = False
    guards: frozenset[str] = field(default_factory=frozenset)


@dataclass(slots=True)
class Victims:
    victims: list[tuple[Running, str]]  # (victim, Kueue reason)
    waiting_for: list[Running]  # already evicting workloads whose quota is enough


def fits(node: QuotaNode, need: Mapping[FlavorResource, int], allow_borrow: bool) -> bool:
    for fr, amount in need.items():
        if amount > node.available(fr):
            return False
        if not allow_borrow and node.usage.get(fr, 0) + amount > node.subtree.get(fr, 0):
            return False
    return True


def _within_allows(config: ClusterQueueConfig, preemptor: Workload, candidate: Running) -> bool:
    policy = config.preemption.within_cluster_queue
    if policy == "LowerPriority":
        return candidate.priority < preemptor.priority
    if policy == "LowerOrNewerEqualPriority":
        return candidate.priority < preemptor.priority or (
            candidate.priority == preemptor.priority and candidate.created > preemptor.created)
    return False


def _reclaim_allows(config: ClusterQueueConfig, preemptor: Workload, candidate: Running) -> bool:
    policy = config.preemption.reclaim_within_cohort
    if policy == "Any":
        return True
    return policy == "LowerPriority" and candidate.priority < preemptor.priority


def _order(own: str, candidate: Running) -> tuple[int, int, float, float, str]:
    return (0 if candidate.queue != own else 1, candidate.priority, -candidate.admitted_at, -candidate.created,
            candidate.key)


class VictimFinder:
    def __init__(self, tree: QuotaTree, running: Mapping[str, list[Running]], settings: Settings) -> None:
        self.tree = tree
        self.running = running
        self.settings = settings
        self.taken: set[str] = set()  # victims already chosen this cycle

    def _usable(self, preemptor: Workload, candidate: Running, need: Mapping[FlavorResource, int]) -> bool:
        return (not candidate.evicting and candidate.key not in self.taken
                and preemptor.key not in candidate.guards and any(fr in need for fr in candidate.usage))

    def _tree_queues(self, node: QuotaNode) -> list[str]:
        return [n.name for n in self.tree.tree_nodes(node.root) if n.is_queue]

    def find(self, preemptor: Workload, config: ClusterQueueConfig, node: QuotaNode,
             need: Mapping[FlavorResource, int]) -> Victims | None:
        """Victims that make room for ``need``; ``waiting_for`` if evictions in flight suffice; None if none."""
        queues = self._tree_queues(node)
        # Evictions in flight, except those a nominated preemptor already holds (see _Cycle).
        evicting = [r for q in queues for r in self.running.get(q, ()) if r.evicting and r.key not in self.taken]
        for r in evicting:
            self.tree.queues[r.queue].add_all(r.usage, -1)
        try:
            if evicting and fits(node, need, allow_borrow=True):
                return Victims([], [r for r in evicting if any(fr in need for fr in r.usage)])
            if self.settings.fair_sharing and node.parent is not None:
                chosen = self._fair(preemptor, config, node, need, queues)
            else:
                chosen = self._classic(preemptor, config, node, need, queues)
        finally:
            for r in evicting:
                self.tree.queues[r.queue].add_all(r.usage, +1)
        if chosen:
            self.taken.update(v.key for v, _ in chosen)
            return Victims(chosen, [])
        return None

    # -- classic ----------------------------------------------------------------------------------

    def _classic(self, preemptor: Workload, config: ClusterQueueConfig, node: QuotaNode,
                 need: Mapping[FlavorResource, int], queues: list[str]) -> list[tuple[Running, str]]:
        own = node.name
        same = [r for r in self.running.get(own, ()) if self._usable(preemptor, r, need)
                and _within_allows(config, preemptor, r)]
        others = [r for q in queues if q != own for r in self.running.get(q, ())
                  if self._usable(preemptor, r, need)]
        policy = config.preemption
        attempts: list[tuple[list[Running], bool, str]] = []
        if node.parent is not None and policy.reclaim_within_cohort != "Never":
            reclaim = [r for r in others if _reclaim_allows(config, preemptor, r)]
            attempts.append((same + reclaim, False, "InCohortReclamation"))
            if policy.borrow_within_cohort == "LowerPriority":
                threshold = policy.max_priority_threshold
                borrow = [r for r in others if r.priority < preemptor.priority
                          and (threshold is None or r.priority <= threshold)]
                attempts.append((same + borrow, True, "InCohortReclaimWhileBorrowing"))
        attempts.append((same, True, "InClusterQueue"))
        for candidates, allow_borrow, cohort_reason in attempts:
            if not candidates:
                continue
            victims = self._greedy(own, node, need, sorted(candidates, key=lambda r: _order(own, r)), allow_borrow)
            if victims:
                return [(v, "InClusterQueue" if v.queue == own else cohort_reason) for v in victims]
        return []

    def _greedy(self, own: str, node: QuotaNode, need: Mapping[FlavorResource, int], candidates: list[Running],
                allow_borrow: bool) -> list[Running]:
        removed: list[Running] = []
        success = False
        for candidate in candidates:
            target = self.tree.queues[candidate.queue]
            if candidate.queue != own and not any(target.borrowing(fr) for fr in candidate.usage if fr in need):
                continue  # only reclaim from queues that are still borrowing what we need
            target.add_all(candidate.usage, -1)
            removed.append(candidate)
            if fits(node, need, allow_borrow):
                success = True
                break
        if success:
            for candidate in reversed(removed[:-1]):  # minimize: give back what is not needed
                target = self.tree.queues[candidate.queue]
                target.add_all(candidate.usage, +1)
                if fits(node, need, allow_borrow):
                    removed.remove(candidate)
                else:
                    target.add_all(candidate.usage, -1)
        for candidate in removed:
            self.tree.queues[candidate.queue].add_all(candidate.usage, +1)
        return removed if success else []

    # -- fair sharing -----------------------------------------------------------------------------

    def _fair(self, preemptor: Workload, config: ClusterQueueConfig, node: QuotaNode,
              need: Mapping[FlavorResource, int], queues: list[str]) -> list[tuple[Running, str]]:
        own = node.name
        pools: dict[str, list[Running]] = {}
        for q in queues:
            if q == own:
                pool = [r for r in self.running.get(q, ()) if self._usable(preemptor, r, need)
                        and _within_allows(config, preemptor, r)]
            elif config.preemption.reclaim_within_cohort == "Never":
                continue
            else:
                pool = [r for r in self.running.get(q, ()) if self._usable(preemptor, r, need)
                        and _reclaim_allows(config, preemptor, r)]
            if pool:
                pools[q] = sorted(pool, key=lambda r: (r.priority, -r.admitted_at, r.key), reverse=True)
        removed: list[tuple[Running, str]] = []
        preemptor_share = node.dominant_share(extra=need)
        while not fits(node, need, allow_borrow=True):
            if not pools:
                for victim, _ in removed:
                    self.tree.queues[victim.queue].add_all(victim.usage, +1)
                return []
            target_name = max(pools, key=lambda q: (self.tree.queues[q].dominant_share(), q == own, q))
            target = self.tree.queues[target_name]
            candidate = pools[target_name].pop()
            if not pools[target_name]:
                del pools[target_name]
            if target_name == own:
                reason = "InClusterQueue"
            else:
                before = target.dominant_share()
                if before <= 0:
                    pools.pop(target_name, None)
                    continue
                after = target.dominant_share(minus=candidate.usage)
                allowed = any(
                    (s == "LessThanOrEqualToFinalShare" and preemptor_share <= after)
                    or (s == "LessThanInitialShare" and preemptor_share < before)
                    for s in self.settings.fair_sharing_strategies)
                if not allowed:
                    pools.pop(target_name, None)
                    continue
                reason = "InCohortFairSharing"
            target.add_all(candidate.usage, -1)
            removed.append((candidate, reason))
        for victim, _ in removed:
            self.tree.queues[victim.queue].add_all(victim.usage, +1)
        return removed
