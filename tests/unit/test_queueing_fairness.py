"""Fair sharing convergence and the no-preemption-loop property of the queueing core."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.test_queueing_support import Sim, cohort, job, queue

from capstan.core.scheduling.queueing import Preemption, ResourceQuota, Settings


def test_weights_one_and_three_split_a_saturated_cohort_one_to_three() -> None:
    sim = Sim((queue("a", {"default": 0}, cohort="c", fair_weight=1.0),
               queue("b", {"default": 0}, cohort="c", fair_weight=3.0)),
              cohorts=(cohort("c", flavors={"default": 40}),), settings=Settings(fair_sharing=True))
    started: dict[str, int] = {}
    counter = 0
    samples: list[tuple[int, int]] = []
    for step in range(80):
        for key in [k for k, t in started.items() if step - t >= 4]:  # every workload runs 4 cycles
            sim.finish(key)
            del started[key]
        for cq in ("a", "b"):
            while sum(1 for w in sim.pending.values() if w.cluster_queue == cq) < 50:
                counter += 1
                sim.submit(job(f"{cq}/{counter}", cq, 1, created=counter))
        for admission in sim.cycle(step).admissions:
            started[admission.workload] = step
        if step >= 40:
            samples.append((sim.usage("a"), sim.usage("b")))
    share_a = sum(a for a, _ in samples) / len(samples)
    share_b = sum(b for _, b in samples) / len(samples)
    assert share_a + share_b == 40
    assert abs(share_b / share_a - 3.0) <= 0.3, (share_a, share_b)
    assert sim.history[-1].queues["a"].weighted_share == 250  # 10 of 40 borrowed x1000 / weight 1
    assert sim.history[-1].queues["b"].weighted_share == 250  # 30 of 40 x1000 / weight 3


def test_fair_sharing_preemption_reclaims_towards_the_weighted_share() -> None:
    fair = Preemption(reclaim_within_cohort="Any")
    sim = Sim((queue("a", {"default": 0}, cohort="c", preemption=fair),
               queue("b", {"default": 0}, cohort="c", preemption=fair)),
              cohorts=(cohort("c", flavors={"default": 8}),), settings=Settings(fair_sharing=True))
    sim.submit(*(job(f"a/{i}", "a", 1, created=i) for i in range(8)))
    assert len(sim.cycle(0).admissions) == 8
    sim.submit(*(job(f"b/{i}", "b", 1, created=10 + i) for i in range(8)))
    for step in range(1, 12):
        sim.cycle(step)
    assert (sim.usage("a"), sim.usage("b")) == (4, 4)
    last = sim.cycle(20)
    assert last.preemptions == () and last.admissions == ()
    assert {p.reason for r in sim.history for p in r.preemptions} == {"InCohortFairSharing"}


within = st.sampled_from(["Never", "LowerPriority", "LowerOrNewerEqualPriority"])
reclaim = st.sampled_from(["Never", "LowerPriority", "Any"])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Sim, list[tuple[str, str, int, int, int]]]:
    fair = draw(st.booleans())
    count = draw(st.integers(2, 3))
    queues = []
    for i in range(count):
        reclaim_policy = draw(reclaim)
        borrow = draw(st.sampled_from(["Never", "LowerPriority"])) if reclaim_policy != "Never" else "Never"
        limit = draw(st.none() | st.integers(0, 6))
        queues.append(queue(
            f"q{i}", {"default": ResourceQuota(draw(st.integers(0, 6)), borrowing_limit=limit)}, cohort="c",
            preemption=Preemption(draw(within), reclaim_policy, borrow,  # type: ignore[arg-type]
                                  draw(st.none() | st.integers(0, 3))),
            fair_weight=draw(st.sampled_from([1.0, 2.0, 0.5]))))
    sim = Sim(tuple(queues), settings=Settings(fair_sharing=fair))
    workloads = draw(st.lists(st.tuples(st.integers(0, count - 1), st.integers(1, 4), st.integers(0, 3),
                                        st.integers(0, 5)), min_size=1, max_size=14))
    plan = [(f"w{n}", f"q{q}", cpu, prio, arrival) for n, (q, cpu, prio, arrival) in enumerate(workloads)]
    return sim, plan


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_preemption_loop_and_a_fixed_point(case: tuple[Sim, list[tuple[str, str, int, int, int]]]) -> None:
    sim, plan = case
    preempted_by: set[tuple[str, str]] = set()  # (victim, preemptor)
    quiet = 0
    for step in range(300):
        sim.submit(*(job(key, cq, cpu, priority=prio, created=float(n))
                     for n, (key, cq, cpu, prio, arrival) in enumerate(plan) if arrival == step))
        result = sim.cycle(float(step))
        for p in result.preemptions:
            assert (p.preemptor, p.victim) not in preempted_by, f"{p.victim} preempts its preemptor {p.preemptor}"
            preempted_by.add((p.victim, p.preemptor))
        quiet = quiet + 1 if not result.admissions and not result.preemptions and step > 5 else 0
        if quiet >= 3:
            break
    assert quiet >= 3, "no fixed point within 300 cycles"
    for cq in sim.queues:  # quota is never oversubscribed
        total = sum(a.usage().get(("default", "cpu"), 0) for a in sim.admitted.values())
        capacity = sum(q.resource_groups[0].flavors[0].resources[0][1].nominal for q in sim.queues)
        assert total <= capacity, cq.name
