"""Quota accounting over the cohort tree (ClusterQueues are the leaves, Cohorts the inner nodes).

The model is Kueue's:

* a node's *subtree quota* for a flavor-resource is its own nominal quota plus what each child
  lends upward (the child's subtree quota minus what the child keeps for itself);
* a child *keeps* (``guaranteed``) ``subtree - lendingLimit`` when a lending limit is set, else 0;
* a node's *usage* is, for a ClusterQueue, the sum of its admitted workloads; for a cohort, the sum
  of what its children use beyond what they keep;
* what a ClusterQueue may still use (``available``) is what it keeps and has not used, plus what
  its parent has available, capped by the borrowing limit.

Nodes are mutable and private to one cycle; usage is updated incrementally along the path to the
root, so admitting a workload costs O(depth x flavor-resources).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from capstan.core.scheduling.queueing.model import (
    ClusterQueueConfig,
    CohortConfig,
    FlavorResource,
    ResourceGroup,
)


class QuotaNode:
    __slots__ = ("borrowing_limit", "children", "config", "depth", "is_queue", "lendable", "lending_limit",
                 "name", "nominal", "parent", "root", "subtree", "usage", "weight")

    def __init__(self, name: str, is_queue: bool, groups: Iterable[ResourceGroup], weight: float) -> None:
        self.name = name
        self.is_queue = is_queue
        self.weight = weight
        self.parent: QuotaNode | None = None
        self.children: list[QuotaNode] = []
        self.nominal: dict[FlavorResource, int] = {}
        self.borrowing_limit: dict[FlavorResource, int] = {}
        self.lending_limit: dict[FlavorResource, int] = {}
        for group in groups:
            for flavor in group.flavors:
                for resource, quota in flavor.resources:
                    fr = (flavor.name, resource)
                    self.nominal[fr] = quota.nominal
                    if quota.borrowing_limit is not None:
                        self.borrowing_limit[fr] = quota.borrowing_limit
                    if quota.lending_limit is not None:
                        self.lending_limit[fr] = quota.lending_limit
        self.subtree: dict[FlavorResource, int] = {}
        self.usage: dict[FlavorResource, int] = {}
        self.root: QuotaNode = self
        self.depth = 0
        self.lendable: dict[str, int] = {}  # per resource, over the whole tree (set on the root)
        self.config: ClusterQueueConfig | CohortConfig | None = None

    # -- structure --------------------------------------------------------------------------------

    def guaranteed(self, fr: FlavorResource) -> int:
        """What this node keeps for itself and never lends to its parent."""
        limit = self.lending_limit.get(fr)
        if limit is None or self.parent is None:
            return 0
        return max(0, self.subtree.get(fr, 0) - limit)

    def path(self) -> list[QuotaNode]:
        """This node and its ancestors, leaf first."""
        nodes = []
        node: QuotaNode | None = self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes

    # -- capacity ---------------------------------------------------------------------------------

    def available(self, fr: FlavorResource) -> int:
        """What this node may still use of ``fr`` right now (Kueue's ``available``)."""
        if self.parent is None:
            return self.subtree.get(fr, 0) - self.usage.get(fr, 0)
        guaranteed = self.guaranteed(fr)
        used = self.usage.get(fr, 0)
        local = max(0, guaranteed - used)
        from_parent = self.parent.available(fr)
        limit = self.borrowing_limit.get(fr)
        if limit is not None:
            stored = self.subtree.get(fr, 0) - guaranteed
            used_in_parent = max(0, used - guaranteed)
            from_parent = min(from_parent, stored - used_in_parent + limit)
        return local + max(0, from_parent)

    def potential(self, fr: FlavorResource) -> int:
        """The most this node could ever use of ``fr`` if nothing else used any."""
        if self.parent is None:
            return self.subtree.get(fr, 0)
        most = self.guaranteed(fr) + self.parent.potential(fr)
        limit = self.borrowing_limit.get(fr)
        if limit is not None:
            most = min(most, self.subtree.get(fr, 0) + limit)
        return most

    def limiting_factor(self, fr: FlavorResource) -> str:
        """Which quota or limit bounds ``available`` for ``fr`` (for wait reasons)."""
        kind = "ClusterQueue" if self.is_queue else "cohort"
        if self.parent is None:
            return f'nominal quota of {kind} "{self.name}"' if self.is_queue else f'quota of cohort "{self.name}"'
        guaranteed = self.guaranteed(fr)
        used = self.usage.get(fr, 0)
        from_parent = self.parent.available(fr)
        limit = self.borrowing_limit.get(fr)
        if limit is not None:
            stored = self.subtree.get(fr, 0) - guaranteed
            capped = stored - max(0, used - guaranteed) + limit
            if capped < from_parent:
                return f'borrowingLimit of {kind} "{self.name}"'
        return self.parent.limiting_factor(fr)

    # -- usage ------------------------------------------------------------------------------------

    def add_usage(self, fr: FlavorResource, delta: int) -> None:
        node: QuotaNode | None = self
        while node is not None and delta:
            guaranteed = node.guaranteed(fr)
            old = node.usage.get(fr, 0)
            new = old + delta
            node.usage[fr] = new
            delta = max(0, new - guaranteed) - max(0, old - guaranteed)
            node = node.parent

    def add_all(self, usage: Mapping[FlavorResource, int], sign: int = 1) -> None:
        for fr, amount in usage.items():
            self.add_usage(fr, sign * amount)

    def borrowing(self, fr: FlavorResource) -> bool:
        return self.usage.get(fr, 0) > self.subtree.get(fr, 0)

    def borrowing_any(self) -> bool:
        return any(used > self.subtree.get(fr, 0) for fr, used in self.usage.items())

    # -- fair sharing -----------------------------------------------------------------------------

    def dominant_share(self, extra: Mapping[FlavorResource, int] | None = None,
                       minus: Mapping[FlavorResource, int] | None = None) -> float:
        """Kueue's weighted dominant resource share of *borrowed* resources, x1000.

        borrowed[r] = sum over flavors of max(0, usage + extra - subtree quota);
        share = max over r of borrowed[r] * 1000 / lendable[r] (lendable: the root's subtree quota
        of r over all flavors); weighted = share / weight.
        """
        borrowed: dict[str, int] = {}
        keys = set(self.usage) | set(extra or ())
        for fr in keys:
            used = self.usage.get(fr, 0) + (extra or {}).get(fr, 0) - (minus or {}).get(fr, 0)
            over = used - self.subtree.get(fr, 0)
            if over > 0:
                borrowed[fr[1]] = borrowed.get(fr[1], 0) + over
        if not borrowed:
            return 0.0
        lendable = self.root.lendable
        share = 0.0
        for resource, amount in borrowed.items():
            total = lendable.get(resource, 0)
            share = max(share, math.inf if total <= 0 else amount * 1000 / total)
        if self.weight <= 0:
            return math.inf
        return share / self.weight


class QuotaTree:
    """All ClusterQueues and cohorts of one snapshot, linked into trees."""

    def __init__(self, queues: Mapping[str, ClusterQueueConfig], cohorts: Mapping[str, CohortConfig]) -> None:
        self.queues: dict[str, QuotaNode] = {}
        self.cohorts: dict[str, QuotaNode] = {}
        self.broken: dict[str, str] = {}  # queue name -> why its tree is unusable
        for name, cohort in cohorts.items():
            node = QuotaNode(name, False, cohort.resource_groups, cohort.fair_weight)
            node.config = cohort
            self.cohorts[name] = node
        for name, cohort in cohorts.items():
            if cohort.parent:
                self._link(self.cohorts[name], self._cohort(cohort.parent))
        for name, queue in queues.items():
            node = QuotaNode(name, True, queue.resource_groups, queue.fair_weight)
            node.config = queue
            self.queues[name] = node
            if queue.cohort:
                self._link(node, self._cohort(queue.cohort))
        cyclic = self._break_cycles()
        for root in self.roots():
            self._finish(root, 0, root)
        for name, node in self.queues.items():
            if node.root.name in cyclic and not node.root.is_queue:
                self.broken[name] = f'cohort "{node.root.name}" is part of a cycle of parent cohorts'

    def _cohort(self, name: str) -> QuotaNode:
        node = self.cohorts.get(name)
        if node is None:  # implicit cohort: named by a queue or cohort but not defined; no own quota
            node = QuotaNode(name, False, (), 1.0)
            self.cohorts[name] = node
        return node

    @staticmethod
    def _link(child: QuotaNode, parent: QuotaNode) -> None:
        child.parent = parent
        parent.children.append(child)

    def _break_cycles(self) -> set[str]:
        """Cohorts whose parent chain loops are cut loose (their queues are reported Misconfigured)."""
        cyclic: set[str] = set()
        for start in self.cohorts.values():
            seen: list[QuotaNode] = []
            node: QuotaNode | None = start
            while node is not None and node not in seen:
                seen.append(node)
                node = node.parent
            if node is not None:  # loop found; cut the edge into `node`
                loop = seen[seen.index(node):]
                cyclic.update(n.name for n in loop)
                parent = loop[-1].parent
                if parent is not None:
                    parent.children.remove(loop[-1])
                loop[-1].parent = None
        return cyclic

    def roots(self) -> list[QuotaNode]:
        return [n for n in (*self.cohorts.values(), *self.queues.values()) if n.parent is None]

    def _finish(self, node: QuotaNode, depth: int, root: QuotaNode) -> None:
        node.root = root
        node.depth = depth
        for child in node.children:
            self._finish(child, depth + 1, root)
        subtree = dict(node.nominal)
        for child in node.children:
            for fr, amount in child.subtree.items():
                subtree[fr] = subtree.get(fr, 0) + amount - child.guaranteed(fr)
        node.subtree = subtree
        if node is root:
            lendable: dict[str, int] = {}
            for fr, amount in subtree.items():
                lendable[fr[1]] = lendable.get(fr[1], 0) + amount
            node.lendable = lendable

    def tree_nodes(self, root: QuotaNode) -> list[QuotaNode]:
        out = [root]
        for child in root.children:
            out.extend(self.tree_nodes(child))
        return out
