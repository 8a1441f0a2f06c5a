"""Benchmark the pure queueing core: 100,000 pending workloads over 1,000 ClusterQueues.

100 cohorts x 10 ClusterQueues, one flavor, cpu + memory quotas. Workloads come in three shapes
(small, medium, large) with a few priorities. Prints, for several cycles of a simulated run:

* cold cycle: everything pending, plenty admitted in one cycle;
* steady cycles: a share of admitted work finishes between cycles and the freed quota is refilled;
* idle cycle: nothing changed since the last cycle (the settled-workload memory skips evaluation).

Run: python bench/bench_queueing_core.py [--fair-sharing]
"""

from __future__ import annotations

import argparse
import random
import time

from capstan.core.scheduling.queueing import (
    AdmittedWorkload,
    ClusterQueueConfig,
    FlavorQuotas,
    PodSet,
    Preemption,
    ResourceGroup,
    ResourceQuota,
    Settings,
    Snapshot,
    Workload,
    schedule,
)

COHORTS, PER_COHORT, PENDING = 100, 10, 100_000
SHAPES = ((1000, 2 << 30), (4000, 8 << 30), (16000, 32 << 30))  # cpu millis, memory bytes


def build(rng: random.Random) -> tuple[dict[str, ClusterQueueConfig], list[Workload]]:
    queues = {}
    for c in range(COHORTS):
        for q in range(PER_COHORT):
            name = f"cq-{c}-{q}"
            quota = FlavorQuotas("default", (("cpu", ResourceQuota(40_000, borrowing_limit=40_000)),
                                             ("memory", ResourceQuota(160 << 30))))
            queues[name] = ClusterQueueConfig(name, (ResourceGroup(("cpu", "memory"), (quota,)),), cohort=f"co-{c}",
                                              preemption=Preemption("LowerPriority", "LowerPriority"))
    names = list(queues)
    pending = []
    for i in range(PENDING):
        cpu, mem = rng.choice(SHAPES)
        pending.append(Workload(f"ns/w{i}", names[i % len(names)], (PodSet("main", 1, {"cpu": cpu, "memory": mem}),),
                                priority=rng.choice((0, 0, 0, 100)), created=float(i)))
    return queues, pending


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fair-sharing", action="store_true")
    parser.add_argument("--cycles", type=int, default=6)
    args = parser.parse_args()
    rng = random.Random(7)
    queues, pending_list = build(rng)
    pending = {w.key: w for w in pending_list}
    admitted: dict[str, AdmittedWorkload] = {}
    settings = Settings(fair_sharing=args.fair_sharing)
    memory = None
    print(f"{len(queues)} ClusterQueues in {COHORTS} cohorts, {len(pending):,} pending workloads, "
          f"fair sharing {'on' if args.fair_sharing else 'off'}")
    print(f"{'cycle':>5} {'kind':>7} {'pending':>8} {'admitted':>8} {'admits':>7} {'preempt':>7} {'evaluated':>9} "
          f"{'seconds':>8} {'admits/s':>9}")
    for cycle in range(args.cycles + 1):
        kind = "cold" if cycle == 0 else ("idle" if cycle == args.cycles else "steady")
        if kind == "steady":  # a quarter of the running work finishes
            for key in rng.sample(sorted(admitted), len(admitted) // 4):
                del admitted[key]
        snapshot = Snapshot(queues, {"default": _flavor()}, tuple(pending.values()), tuple(admitted.values()),
                            settings=settings, memory=memory)
        start = time.perf_counter()
        result = schedule(snapshot, float(cycle))
        elapsed = time.perf_counter() - start
        memory = result.memory
        for admission in result.admissions:
            workload = pending.pop(admission.workload)
            admitted[workload.key] = AdmittedWorkload(workload, admission.assignments, float(cycle),
                                                      preempted=admission.preempted)
        for preemption in result.preemptions:
            victim = admitted.pop(preemption.victim, None)
            if victim is not None:
                pending[victim.key] = victim.workload
        rate = len(result.admissions) / elapsed if elapsed else 0.0
        print(f"{cycle:>5} {kind:>7} {len(snapshot.pending):>8,} {len(snapshot.admitted):>8,} "
              f"{len(result.admissions):>7,} {len(result.preemptions):>7,} {result.evaluated:>9,} {elapsed:>8.3f} "
              f"{rate:>9,.0f}")


def _flavor() -> object:
    from capstan.core.scheduling.queueing import Flavor

    return Flavor("default")


if __name__ == "__main__":
    main()
