"""The optional physical-fit check: admitted work must also fit on the nodes' free resources.

Quota is abstract; in embedded mode an admitted workload whose pods cannot be placed would sit
pending. When the snapshot carries ``nodes`` (free resources per node), admission also places every
pod of every pod set (first fit, nodes in the given order, only on nodes whose labels carry the
assigned flavors' node labels and the pods' node selector). A gang is placed whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping

from capstan.core.scheduling.queueing.flavors import Assignment
from capstan.core.scheduling.queueing.model import Flavor, NodeCapacity, Workload, fmt


class Placement:
    def __init__(self, nodes: tuple[NodeCapacity, ...], flavors: Mapping[str, Flavor]) -> None:
        self.nodes = [(n.name, dict(n.free), dict(n.labels)) for n in nodes]
        self.flavors = flavors

    def try_place(self, workload: Workload, assignment: Assignment) -> str | None:
        """Reserve room for all pods and return None, or return why they do not fit (nothing reserved)."""
        taken: list[tuple[dict[str, int], dict[str, int]]] = []
        for pod_set, assigned in zip(workload.pod_sets, assignment.assignments, strict=True):
            wanted: dict[str, str] = dict(pod_set.node_selector)
            for _, flavor_name in assigned.flavors:
                flavor = self.flavors.get(flavor_name)
                if flavor is not None:
                    wanted.update(flavor.node_labels)
            per_pod = {r: a for r, a in pod_set.requests.items() if a > 0}
            remaining = pod_set.count
            for _, free, labels in self.nodes:
                if remaining == 0:
                    break
                if any(labels.get(k) != v for k, v in wanted.items()):
                    continue
                room = min((free.get(r, 0) // a for r, a in per_pod.items()), default=remaining)
                count = min(room, remaining)
                if count > 0:
                    used = {r: a * count for r, a in per_pod.items()}
                    for r, a in used.items():
                        free[r] = free.get(r, 0) - a
                    taken.append((free, used))
                    remaining -= count
            if remaining:
                for free, used in taken:
                    for r, a in used.items():
                        free[r] += a
                return self._explain(pod_set.name, pod_set.count, remaining, per_pod, wanted)
        return None

    def _explain(self, pod_set: str, count: int, remaining: int, per_pod: Mapping[str, int],
                 wanted: Mapping[str, str]) -> str:
        need = ", ".join(f"{r}={fmt(r, a)}" for r, a in sorted(per_pod.items()))
        eligible = [(n, free) for n, free, labels in self.nodes if all(labels.get(k) == v for k, v in wanted.items())]
        if not eligible:
            return f'pod set "{pod_set}": no node matches the flavor labels and node selector'
        best = max(eligible, key=lambda nf: min((nf[1].get(r, 0) / a for r, a in per_pod.items()), default=0.0))
        free = ", ".join(f"{r}={fmt(r, best[1].get(r, 0))}" for r in sorted(per_pod))
        return (f'waiting for node capacity: pod set "{pod_set}": {remaining} of {count} pod(s) ({need} each) '
                f'do not fit; most free node "{best[0]}" has {free}')
