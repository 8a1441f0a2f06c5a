"""Step-by-step scenarios for the queueing core: exact admissions, preemptions and wait reasons."""

from __future__ import annotations

from tests.unit.test_queueing_support import CPU, Sim, cohort, job, keys, queue

from capstan.core.scheduling.queueing import (
    Flavor,
    FlavorFungibility,
    NodeCapacity,
    PodSet,
    Preemption,
    ResourceQuota,
    Taint,
    Toleration,
    Workload,
)


def test_quota_exhaustion_admits_what_fits_and_explains_the_rest() -> None:
    sim = Sim((queue("a", {"default": 10}),))
    sim.submit(job("ns/w1", "a", 4, created=1), job("ns/w2", "a", 4, created=2), job("ns/w3", "a", 4, created=3))
    result = sim.cycle()
    assert keys(result.admissions) == ["ns/w1", "ns/w2"]
    wait = result.waiting["ns/w3"]
    assert wait.code == "InsufficientQuota"
    assert wait.describe() == (
        'position 1 in ClusterQueue "a": insufficient quota: cpu in flavor "default": requested 4, available 2, '
        'short by 2 (nominal quota of ClusterQueue "a")')
    assert result.queues["a"].usage == {("default", "cpu"): 8 * CPU}
    sim.finish("ns/w1")
    assert keys(sim.cycle(1).admissions) == ["ns/w3"]


def test_many_admissions_per_cycle_from_one_queue() -> None:
    sim = Sim((queue("a", {"default": 50}),))
    sim.submit(*(job(f"ns/w{i:02}", "a", 1, created=i) for i in range(60)))
    result = sim.cycle()
    assert len(result.admissions) == 50
    assert sorted(result.waiting) == [f"ns/w{i}" for i in range(50, 60)]
    assert [result.waiting[f"ns/w{i}"].position for i in range(50, 60)] == list(range(10))


def test_borrowing_then_reclaim_when_the_lender_needs_its_quota() -> None:
    sim = Sim((queue("a", {"default": 10}, cohort="c"),
               queue("b", {"default": 10}, cohort="c", preemption=Preemption(reclaim_within_cohort="Any"))))
    sim.submit(job("a/1", "a", 5, created=1), job("a/2", "a", 5, created=2))
    assert keys(sim.cycle(1).admissions) == ["a/1", "a/2"]
    sim.submit(job("a/3", "a", 5, created=3), job("a/4", "a", 5, created=4))
    result = sim.cycle(2)
    assert keys(result.admissions) == ["a/3", "a/4"]  # borrowing all of b's idle quota
    assert result.admissions[0].borrowing
    assert result.queues["a"].borrowed == {("default", "cpu"): 10 * CPU}

    sim.submit(job("b/1", "b", 5, created=5))
    result = sim.cycle(3)
    assert result.admissions == ()
    assert [(p.victim, p.preemptor, p.reason) for p in result.preemptions] == [("a/4", "b/1", "InCohortReclamation")]
    assert result.waiting["b/1"].code == "PreemptionPending"
    assert result.waiting["b/1"].message == "preempting 1 workload(s) to make room: a/4"

    result = sim.cycle(4)  # the stand-in controller evicted a/4
    assert keys(result.admissions) == ["b/1"]
    assert result.admissions[0].preempted == frozenset({"a/4"})
    assert result.waiting["a/4"].message == (
        'insufficient quota: cpu in flavor "default": requested 5, available 0, short by 5 (quota of cohort "c")')
    assert sim.cycle(5).preemptions == ()


def test_priority_preemption_within_a_queue() -> None:
    sim = Sim((queue("a", {"default": 10}, preemption=Preemption(within_cluster_queue="LowerPriority")),))
    sim.submit(job("ns/low", "a", 6, priority=0, created=1), job("ns/mid", "a", 4, priority=5, created=2))
    assert keys(sim.cycle(1).admissions) == ["ns/mid", "ns/low"]
    sim.submit(job("ns/high", "a", 6, priority=10, created=3))
    result = sim.cycle(2)
    assert [(p.victim, p.reason) for p in result.preemptions] == [("ns/low", "InClusterQueue")]
    result = sim.cycle(3)
    assert keys(result.admissions) == ["ns/high"]
    wait = result.waiting["ns/low"]
    assert wait.code == "InsufficientQuota"
    assert wait.message.endswith("; no workloads can be preempted to make room")
    # an equal-priority newcomer may not preempt under LowerPriority
    sim.submit(job("ns/peer", "a", 6, priority=10, created=4))
    assert sim.cycle(4).preemptions == ()


def test_lower_or_newer_equal_priority_preempts_newer_peers_only() -> None:
    sim = Sim((queue("a", {"default": 4},
                     preemption=Preemption(within_cluster_queue="LowerOrNewerEqualPriority")),))
    sim.submit(job("ns/newer", "a", 4, priority=1, created=10))
    sim.cycle(1)
    sim.submit(job("ns/older", "a", 4, priority=1, created=5))
    assert [p.victim for p in sim.cycle(2).preemptions] == ["ns/newer"]
    assert keys(sim.cycle(3).admissions) == ["ns/older"]
    assert sim.cycle(4).preemptions == ()  # the newer one cannot preempt back


def test_gang_that_does_not_fit_waits_whole() -> None:
    sim = Sim((queue("a", {"default": 10}),))
    sim.submit(job("ns/small", "a", 2, created=1))
    sim.cycle(1)
    gang = Workload("ns/gang", "a", (PodSet("driver", 1, {"cpu": 2 * CPU}), PodSet("workers", 4, {"cpu": 2 * CPU})),
                    created=2)
    sim.submit(gang)
    result = sim.cycle(2)
    assert result.admissions == ()
    assert result.waiting["ns/gang"].message == (
        'insufficient quota: cpu in flavor "default": requested 10, available 8, short by 2 '
        '(nominal quota of ClusterQueue "a")')
    sim.finish("ns/small")
    result = sim.cycle(3)
    assert keys(result.admissions) == ["ns/gang"]
    assert [(a.name, a.count, dict(a.usage)) for a in result.admissions[0].assignments] == [
        ("driver", 1, {"cpu": 2 * CPU}), ("workers", 4, {"cpu": 8 * CPU})]


def test_gang_waits_for_physical_room_on_nodes() -> None:
    nodes = (NodeCapacity("n1", {"cpu": 4 * CPU}), NodeCapacity("n2", {"cpu": 4 * CPU}))
    sim = Sim((queue("a", {"default": 16}),), nodes=nodes)
    sim.submit(Workload("ns/big", "a", (PodSet("main", 1, {"cpu": 6 * CPU}),), created=1),
               Workload("ns/pair", "a", (PodSet("main", 2, {"cpu": 3 * CPU}),), created=2))
    result = sim.cycle()
    assert keys(result.admissions) == ["ns/pair"]
    assert result.waiting["ns/big"].code == "WaitingForCapacity"
    assert result.waiting["ns/big"].message == (
        'waiting for node capacity: pod set "main": 1 of 1 pod(s) (cpu=6 each) do not fit; most free node "n1" '
        "has cpu=4")


def test_strict_fifo_head_blocks_its_queue() -> None:
    sim = Sim((queue("a", {"default": 10}, queueing_strategy="StrictFIFO"),))
    sim.submit(job("ns/running", "a", 5, created=0))
    sim.cycle(0)
    sim.submit(job("ns/big", "a", 8, created=1), job("ns/small", "a", 2, created=2))
    result = sim.cycle(1)
    assert result.admissions == ()
    assert result.waiting["ns/big"].code == "InsufficientQuota"
    assert result.waiting["ns/small"].code == "BlockedByStrictFIFO"
    assert result.waiting["ns/small"].message == 'blocked by the head of StrictFIFO ClusterQueue "a": ns/big'
    assert sim.cycle(2).waiting["ns/small"].code == "BlockedByStrictFIFO"  # still blocked when settled


def test_best_effort_fifo_lets_smaller_work_pass_a_stuck_head() -> None:
    sim = Sim((queue("a", {"default": 10}),))
    sim.submit(job("ns/running", "a", 5, created=0))
    sim.cycle(0)
    sim.submit(job("ns/big", "a", 8, created=1), job("ns/small", "a", 2, created=2))
    result = sim.cycle(1)
    assert keys(result.admissions) == ["ns/small"]
    assert result.waiting["ns/big"].position == 0


def test_flavor_fallback_to_the_second_flavor() -> None:
    sim = Sim((queue("a", {"on-demand": 4, "spot": 10}),), flavors=("on-demand", "spot"))
    sim.submit(job("ns/w1", "a", 3, created=1), job("ns/w2", "a", 3, created=2))
    result = sim.cycle()
    assert [(a.workload, a.assignments[0].flavors) for a in result.admissions] == [
        ("ns/w1", (("cpu", "on-demand"),)), ("ns/w2", (("cpu", "spot"),))]


def test_flavor_taints_need_tolerations() -> None:
    gpu = Flavor.of("gpu", {"pool": "gpu"}, (Taint("nvidia.com/gpu", "present", "NoSchedule"),))
    sim = Sim((queue("a", {"gpu": 8}),), flavors=(gpu,))
    plain = job("ns/plain", "a", 1, created=1)
    tolerant = Workload("ns/tolerant", "a", (PodSet("main", 1, {"cpu": CPU}, tolerations=(
        Toleration("nvidia.com/gpu", "Exists"),)),), created=2)
    sim.submit(plain, tolerant)
    result = sim.cycle()
    assert keys(result.admissions) == ["ns/tolerant"]
    assert result.waiting["ns/plain"].code == "NoMatchingFlavor"
    assert result.waiting["ns/plain"].message == (
        'pod set "main": no flavor matches: flavor "gpu" has untolerated taint nvidia.com/gpu=present:NoSchedule')


def test_when_can_borrow_try_next_flavor_prefers_a_flavor_without_borrowing() -> None:
    queues = (queue("a", {"f1": 2, "f2": 4}, cohort="c", flavor_fungibility=FlavorFungibility("TryNextFlavor")),
              queue("b", {"f1": 10, "f2": 0}, cohort="c"))
    sim = Sim(queues, flavors=("f1", "f2"))
    sim.submit(job("ns/w", "a", 3))
    assert sim.cycle().admissions[0].assignments[0].flavors == (("cpu", "f2"),)
    default = Sim((queue("a", {"f1": 2, "f2": 4}, cohort="c"), queues[1]), flavors=("f1", "f2"))
    default.submit(job("ns/w", "a", 3))
    admission = default.cycle().admissions[0]
    assert (admission.assignments[0].flavors, admission.borrowing) == ((("cpu", "f1"),), True)


def test_hierarchical_cohort_lending_limit_protects_the_lender() -> None:
    cohorts = (cohort("org"), cohort("team-a", parent="org"))
    queues = (queue("a1", {"default": ResourceQuota(10, lending_limit=4)}, cohort="team-a"),
              queue("b", {"default": 0}, cohort="org"))
    sim = Sim(queues, cohorts=cohorts)
    sim.submit(job("b/too-big", "b", 6, created=1))
    result = sim.cycle(1)
    assert result.waiting["b/too-big"].code == "ExceedsMaxQuota"
    assert result.waiting["b/too-big"].message == (
        'exceeds the maximum quota: cpu in flavor "default": requested 6, available 4, short by 2 '
        '(most ClusterQueue "b" can ever get)')
    sim.submit(job("b/fits", "b", 4, created=2))
    assert keys(sim.cycle(2).admissions) == ["b/fits"]
    sim.submit(job("a1/w", "a1", 8, created=3), job("a1/v", "a1", 6, created=4))
    result = sim.cycle(3)
    assert keys(result.admissions) == ["a1/v"]  # the 6 cores a1 keeps for itself
    assert result.waiting["a1/w"].message == (
        'insufficient quota: cpu in flavor "default": requested 8, available 6, short by 2 '
        '(quota of cohort "org")')


def test_cohort_own_quota_and_borrowing_limit() -> None:
    sim = Sim((queue("a", {"default": ResourceQuota(2, borrowing_limit=3)}, cohort="pool"),),
              cohorts=(cohort("pool", flavors={"default": 20}),))
    sim.submit(job("ns/w1", "a", 5, created=1), job("ns/w2", "a", 1, created=2))
    result = sim.cycle()
    assert keys(result.admissions) == ["ns/w1"]
    assert result.waiting["ns/w2"].message == (
        'insufficient quota: cpu in flavor "default": requested 1, available 0, short by 1 '
        '(borrowingLimit of ClusterQueue "a")')


def test_not_ready_and_backoff_are_skipped_with_their_reason() -> None:
    sim = Sim((queue("a", {"default": 10}),))
    sim.submit(job("ns/dep", "a", 1, not_ready="waiting for job ns/first to succeed"),
               job("ns/backoff", "a", 1, requeue_at=100.0))
    result = sim.cycle(40)
    assert result.admissions == ()
    assert result.waiting["ns/dep"].describe() == "not ready: waiting for job ns/first to succeed"
    assert result.waiting["ns/backoff"].message == "requeued after eviction; eligible again in 60s"
    assert keys(sim.cycle(100).admissions) == ["ns/backoff"]


def test_wait_reason_lists_higher_priority_work_ahead() -> None:
    sim = Sim((queue("a", {"default": 1}),))
    sim.submit(job("ns/run", "a", 1))
    sim.cycle()
    sim.submit(job("ns/h1", "a", 1, priority=9, created=1), job("ns/h2", "a", 1, priority=9, created=2),
               job("ns/low", "a", 1, priority=0, created=0))
    wait = sim.cycle().waiting["ns/low"]
    assert (wait.position, wait.higher_priority_ahead, wait.ahead_sample) == (2, 2, ("ns/h1", "ns/h2"))
    assert wait.describe().startswith(
        'position 3 in ClusterQueue "a" (2 higher-priority workload(s) ahead, first: ns/h1, ns/h2): ')


def test_unknown_queue_flavor_and_stop_policies() -> None:
    sim = Sim((queue("a", {"missing": 4}), queue("held", {"default": 4}, stop_policy="Hold"),
               queue("drained", {"default": 4})))
    sim.submit(job("ns/x", "nope", 1), job("ns/y", "a", 1), job("ns/z", "held", 1), job("ns/d", "drained", 1))
    result = sim.cycle()
    assert result.waiting["ns/x"].message == 'ClusterQueue "nope" not found'
    assert result.waiting["ns/y"].message == 'ClusterQueue "a" is inactive: ResourceFlavor(s) not found: missing'
    assert result.waiting["ns/z"].message == 'ClusterQueue "held" is stopped (Hold)'
    assert keys(result.admissions) == ["ns/d"]
    sim.queues = (sim.queues[0], sim.queues[1], queue("drained", {"default": 4}, stop_policy="HoldAndDrain"))
    result = sim.cycle()
    assert [(e.workload, e.reason) for e in result.evictions] == [("ns/d", "ClusterQueueStopped")]


def test_inadmissible_workloads_are_not_reevaluated_until_something_changes() -> None:
    sim = Sim((queue("a", {"default": 4}, cohort="c"), queue("b", {"default": 4}, cohort="c")))
    sim.submit(job("ns/fill", "a", 8))
    sim.cycle(0)
    sim.submit(*(job(f"ns/w{i}", "b", 1 + i % 3, created=i) for i in range(30)))
    first = sim.cycle(1)
    assert first.admissions == ()
    assert first.evaluated == 3  # one evaluation per distinct shape, not per workload
    assert sim.cycle(2).evaluated == 0  # nothing changed: nothing evaluated
    assert sim.cycle(2).waiting["ns/w5"].code == "InsufficientQuota"
    sim.finish("ns/fill")
    result = sim.cycle(3)
    assert result.evaluated > 0
    assert len(result.admissions) > 0
