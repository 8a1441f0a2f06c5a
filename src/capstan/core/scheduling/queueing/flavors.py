"""Flavor assignment: for each pod set and resource group, pick a flavor in the queue's order.

Per flavor, each requested resource is one of: fits now (maybe by borrowing), fits only after
preempting (``val <= potential``), or can never fit. Flavors are ranked

    0 fit without borrowing < 1 fit by borrowing < 2 preempt, no borrowing < 3 preempt and borrow < 4 never

and the search stops early according to ``flavorFungibility``: ``whenCanBorrow: MayStopSearch``
(``Borrow``) takes the first flavor that fits by borrowing; ``whenCanPreempt: MayStopSearch``
(``Preempt``) takes the first flavor that needs preemption; ``TryNextFlavor`` keeps looking for a
better rank and falls back to the best seen (the earliest among equals).

Pod sets are assigned in order and each sees the quota taken by the pod sets before it, so a gang
is judged as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from capstan.core.scheduling.queueing.model import (
    ClusterQueueConfig,
    Flavor,
    FlavorResource,
    PodSet,
    PodSetAssignment,
    Reason,
    Shortage,
    Workload,
)
from capstan.core.scheduling.queueing.quota import QuotaNode

FIT, FIT_BORROW, PREEMPT, PREEMPT_BORROW, NEVER = 0, 1, 2, 3, 4


@dataclass(slots=True)
class Assignment:
    rank: int  # worst rank over the pod sets
    assignments: tuple[PodSetAssignment, ...]
    usage: dict[FlavorResource, int]
    reason: Reason | None  # set when rank != FIT/FIT_BORROW: what is short

    @property
    def borrowing(self) -> bool:
        return self.rank in (FIT_BORROW, PREEMPT_BORROW)

    @property
    def fits(self) -> bool:
        return self.rank <= FIT_BORROW


def can_preempt(config: ClusterQueueConfig, node: QuotaNode) -> bool:
    policy = config.preemption
    return policy.within_cluster_queue != "Never" or (node.parent is not None
                                                       and policy.reclaim_within_cohort != "Never")


def flavor_mismatch(flavor: Flavor, pod_set: PodSet) -> str | None:
    """Why pods of ``pod_set`` could not run on this flavor's nodes, or None."""
    labels = dict(flavor.node_labels)
    for key, value in pod_set.node_selector:
        if key in labels and labels[key] != value:
            return f'flavor "{flavor.name}" has node label {key}={labels[key]}, the pods select {key}={value}'
    for taint in flavor.node_taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not any(t.tolerates(taint) for t in pod_set.tolerations):
            return f'flavor "{flavor.name}" has untolerated taint {taint.key}={taint.value}:{taint.effect}'
    return None


def group_index(config: ClusterQueueConfig) -> dict[str, int]:
    return {resource: i for i, group in enumerate(config.resource_groups) for resource in group.covered_resources}


def assign_flavors(workload: Workload, config: ClusterQueueConfig, node: QuotaNode, flavors: Mapping[str, Flavor],
                   groups_of: Mapping[str, int]) -> Assignment:
    preemptible = can_preempt(config, node)
    fungibility = config.flavor_fungibility
    stop_on_borrow = fungibility.when_can_borrow != "TryNextFlavor"
    stop_on_preempt = fungibility.when_can_preempt != "TryNextFlavor"
    taken: dict[FlavorResource, int] = {}
    worst = FIT
    assignments: list[PodSetAssignment] = []
    problems: list[str] = []
    shortages: list[Shortage] = []
    codes: set[str] = set()
    for pod_set in workload.pod_sets:
        total = pod_set.total
        wanted = [r for r, amount in total.items() if amount > 0]
        by_group: dict[int, list[str]] = {}
        chosen: dict[str, str] = {}
        for resource in wanted:
            gi = groups_of.get(resource)
            if gi is None:
                problems.append(f'pod set "{pod_set.name}": resource {resource} is not covered by ClusterQueue '
                                f'"{config.name}"')
                codes.add("NoMatchingFlavor")
                worst = NEVER
                continue
            by_group.setdefault(gi, []).append(resource)
        for gi, resources in by_group.items():
            best_rank, best_flavor, tried = NEVER, None, 0
            group_shortages: list[Shortage] = []
            mismatches: list[str] = []
            for flavor_quotas in config.resource_groups[gi].flavors:
                flavor = flavors.get(flavor_quotas.name)
                mismatch = flavor_mismatch(flavor, pod_set) if flavor is not None else None
                if mismatch:
                    mismatches.append(mismatch)
                    continue
                tried += 1
                rank, found = _rank_flavor(flavor_quotas.name, resources, total, taken, node)
                group_shortages.extend(found)
                if rank in (PREEMPT, PREEMPT_BORROW) and not preemptible:
                    rank = PREEMPT_BORROW  # still "wait", but never preferred over a flavor that fits
                if rank < best_rank:
                    best_rank, best_flavor = rank, flavor_quotas.name
                if (rank == FIT or (rank == FIT_BORROW and stop_on_borrow)
                        or (rank in (PREEMPT, PREEMPT_BORROW) and preemptible and stop_on_preempt)):
                    best_rank, best_flavor = rank, flavor_quotas.name
                    break
            if tried == 0:
                problems.append(f'pod set "{pod_set.name}": no flavor matches: ' + "; ".join(mismatches))
                codes.add("NoMatchingFlavor")
                worst = NEVER
                continue
            if best_rank > FIT_BORROW:
                shortages.extend(group_shortages)
                codes.add("ExceedsMaxQuota" if best_rank == NEVER else "InsufficientQuota")
            worst = max(worst, best_rank)
            if best_flavor is not None and best_rank != NEVER:
                for resource in resources:
                    chosen[resource] = best_flavor
                    fr = (best_flavor, resource)
                    taken[fr] = taken.get(fr, 0) + total[resource]
        assignments.append(PodSetAssignment(pod_set.name, pod_set.count, tuple(sorted(chosen.items())),
                                            {r: total[r] for r in chosen}))
    reason = None if worst <= FIT_BORROW else _reason(worst, codes, problems, shortages)
    return Assignment(worst, tuple(assignments), taken, reason)


def _rank_flavor(flavor: str, resources: list[str], total: Mapping[str, int], taken: Mapping[FlavorResource, int],
                 node: QuotaNode) -> tuple[int, list[Shortage]]:
    fits, borrow, never = True, False, False
    shortages: list[Shortage] = []
    for resource in resources:
        fr = (flavor, resource)
        if fr not in node.nominal:
            never = True
            shortages.append(Shortage(flavor, resource, total[resource], 0,
                                      f'flavor "{flavor}" has no {resource} quota'))
            continue
        want = total[resource] + taken.get(fr, 0)
        if node.usage.get(fr, 0) + want > node.subtree.get(fr, 0):
            borrow = True
        available = node.available(fr)
        if want <= available:
            continue
        fits = False
        most = node.potential(fr)
        if want > most:
            never = True
            shortages.append(Shortage(flavor, resource, want, most, f'most ClusterQueue "{node.name}" can ever get'))
        else:
            shortages.append(Shortage(flavor, resource, want, max(0, available), node.limiting_factor(fr)))
    if never:
        return NEVER, shortages
    if fits:
        return (FIT_BORROW if borrow else FIT), shortages
    return (PREEMPT_BORROW if borrow else PREEMPT), shortages


def _reason(worst: int, codes: set[str], problems: list[str], shortages: list[Shortage]) -> Reason:
    if worst == NEVER:
        code = "NoMatchingFlavor" if "NoMatchingFlavor" in codes else "ExceedsMaxQuota"
    else:
        code = "InsufficientQuota"
    parts = list(problems)
    if shortages:
        head = "insufficient quota" if code == "InsufficientQuota" else "exceeds the maximum quota"
        parts.append(f"{head}: " + "; ".join(s.describe() for s in shortages))
    return Reason(code, ", ".join(parts), tuple(shortages))
