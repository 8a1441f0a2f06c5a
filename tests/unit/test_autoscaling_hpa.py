"""The HPA algorithm against an independent, literal reference of Kubernetes' controller.

``ReferenceHPA`` below follows the Kubernetes source description (replica_calculator.go and
horizontal.go) step by step, with mutable per-HPA histories as the controller keeps them. It
shares no code with capstan.core.autoscaling.hpa.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from capstan.core.autoscaling.hpa import (
    Behavior,
    HpaInput,
    MetricValue,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    decide_replicas,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# ---- the reference ---------------------------------------------------------------------------------

@dataclass
class RefPolicy:
    kind: str
    value: int
    period: int


@dataclass
class RefRules:
    window: int | None
    select: str | None
    policies: list[RefPolicy] | None
    tolerance: float | None = None


@dataclass
class RefEvent:
    change: int
    at: int
    outdated: bool = False


@dataclass
class ReferenceHPA:
    """One HorizontalPodAutoscaler as the Kubernetes controller processes it; times are seconds."""

    min_replicas: int
    max_replicas: int
    scale_up: RefRules | None
    scale_down: RefRules | None
    has_behavior: bool
    tolerance: float = 0.1
    downscale_window: int = 300
    recommendations: list[tuple[int, int]] = field(default_factory=list)  # (replicas, at)
    up_events: list[RefEvent] = field(default_factory=list)
    down_events: list[RefEvent] = field(default_factory=list)

    def defaults(self) -> tuple[RefRules, RefRules]:
        up = RefRules(0, "Max", [RefPolicy("Pods", 4, 15), RefPolicy("Percent", 100, 15)])
        down = RefRules(None, "Max", [RefPolicy("Percent", 100, 15)])
        for given_rules, default in ((self.scale_up, up), (self.scale_down, down)):
            if given_rules is not None:
                if given_rules.window is not None:
                    default.window = given_rules.window
                if given_rules.select is not None:
                    default.select = given_rules.select
                if given_rules.policies is not None:
                    default.policies = given_rules.policies
                if given_rules.tolerance is not None:
                    default.tolerance = given_rules.tolerance
        if down.window is None:
            down.window = self.downscale_window
        return up, down

    def per_metric(self, kind: str, target: float, value: float, current: int, ready: int,
                   up_tol: float, down_tol: float) -> int:
        def within(ratio: float) -> bool:
            return 1.0 - down_tol <= ratio <= 1.0 + up_tol
        if kind == "AverageValue":
            usage = round(value * 1000)
            per_pod = round(target * 1000)
            if current == 0:
                return math.ceil(usage / per_pod)
            ratio = usage / (per_pod * current)
            if within(ratio):
                return current
            return math.ceil(usage / per_pod)
        if kind == "Value":
            ratio = round(value * 1000) / round(target * 1000)
            if current == 0:
                return math.ceil(ratio)
            if within(ratio):
                return current
            return math.ceil(ratio * ready)
        ratio = int(value) / int(target)
        if within(ratio):
            return current
        return math.ceil(ratio * ready)

    def sync(self, metrics: list[tuple[str, float, float | None]], current: int, ready: int, now: int) -> int:
        if current == 0 and self.min_replicas != 0:
            return 0
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        else:
            up, down = self.defaults()
            up_tol = up.tolerance if self.has_behavior and up.tolerance is not None else self.tolerance
            down_tol = down.tolerance if self.has_behavior and down.tolerance is not None else self.tolerance
            replicas = 0
            invalid = 0
            for kind, target, value in metrics:
                # Resource metrics of unready pods are dropped: no ready pod means no metrics at all.
                if value is None or (kind == "Utilization" and ready == 0):
                    invalid += 1
                    continue
                proposal = self.per_metric(kind, target, value, current, ready, up_tol, down_tol)
                if replicas == 0 or proposal > replicas:
                    replicas = proposal
            if invalid >= len(metrics) or (invalid > 0 and replicas < current):
                return current
            desired = replicas
            if not self.has_behavior:
                desired = self.normalize_legacy(current, desired, now)
            else:
                desired = self.normalize_with_behavior(current, desired, now, up, down)
        if desired != current and self.has_behavior:
            self.store_event(current, desired, now)
        return desired

    def normalize_legacy(self, current: int, desired: int, now: int) -> int:
        highest = desired
        found_old, old_index = False, 0
        cutoff = now - self.downscale_window
        for index, (replicas, at) in enumerate(self.recommendations):
            if at < cutoff:
                found_old, old_index = True, index
            elif replicas > highest:
                highest = replicas
        if found_old:
            self.recommendations[old_index] = (desired, now)
        else:
            self.recommendations.append((desired, now))
        limit = int(max(2.0 * current, 4.0))
        maximum = limit if self.max_replicas > limit else self.max_replicas
        if highest < self.min_replicas:
            return self.min_replicas
        if highest > maximum:
            return maximum
        return highest

    def normalize_with_behavior(self, current: int, desired: int, now: int, up: RefRules, down: RefRules) -> int:
        assert up.window is not None and down.window is not None
        up_cutoff, down_cutoff = now - up.window, now - down.window
        up_rec, down_rec = desired, desired
        found_old, old_index = False, 0
        for index, (replicas, at) in enumerate(self.recommendations):
            if at > up_cutoff:
                up_rec = min(replicas, up_rec)
            if at > down_cutoff:
                down_rec = max(replicas, down_rec)
            if at < up_cutoff and at < down_cutoff:
                found_old, old_index = True, index
        recommendation = current
        if recommendation < up_rec:
            recommendation = up_rec
        if recommendation > down_rec:
            recommendation = down_rec
        if found_old:
            self.recommendations[old_index] = (desired, now)
        else:
            self.recommendations.append((desired, now))
        return self.rate_limit(current, recommendation, now, up, down)

    def changes(self, events: list[RefEvent], period: int, now: int) -> int:
        return sum(e.change for e in events if e.at > now - period)

    def rate_limit(self, current: int, desired: int, now: int, up: RefRules, down: RefRules) -> int:
        if desired > current:
            if up.select == "Disabled":
                limit = current
            else:
                limit = -(2**31) if up.select != "Min" else 2**31 - 1
                for policy in up.policies or []:
                    start = current - self.changes(self.up_events, policy.period, now) + \
                        self.changes(self.down_events, policy.period, now)
                    proposed = start + policy.value if policy.kind == "Pods" else \
                        math.ceil(start * (1 + policy.value / 100))
                    limit = max(limit, proposed) if up.select != "Min" else min(limit, proposed)
            if limit < current:
                limit = current
            maximum = min(self.max_replicas, limit)
            return min(desired, maximum)
        if desired < current:
            if down.select == "Disabled":
                limit = current
            else:
                limit = 2**31 - 1 if down.select != "Min" else -(2**31)
                for policy in down.policies or []:
                    start = current - self.changes(self.up_events, policy.period, now) + \
                        self.changes(self.down_events, policy.period, now)
                    proposed = start - policy.value if policy.kind == "Pods" else \
                        int(start * (1 - policy.value / 100))
                    limit = min(limit, proposed) if down.select != "Min" else max(limit, proposed)
            if limit > current:
                limit = current
            minimum = max(self.min_replicas, limit)
            return max(desired, minimum)
        return desired

    def store_event(self, previous: int, new: int, now: int) -> None:
        up, down = self.defaults()
        events, rules, change = ((self.up_events, up, new - previous) if new > previous
                                 else (self.down_events, down, previous - new))
        longest = max((p.period for p in rules.policies or []), default=0)
        for event in events:
            if event.at < now - longest:
                event.outdated = True
        old = [i for i, e in enumerate(events) if e.outdated]
        if old:
            events[old[-1]] = RefEvent(change, now)
        else:
            events.append(RefEvent(change, now))


# ---- strategies -------------------------------------------------------------------------------------

policy_st = st.builds(RefPolicy, st.sampled_from(["Pods", "Percent"]), st.integers(1, 200),
                      st.sampled_from([5, 15, 30, 60, 120]))
rules_st = st.builds(RefRules, st.one_of(st.none(), st.sampled_from([0, 10, 30, 60, 120, 300])),
                     st.one_of(st.none(), st.sampled_from(["Max", "Min", "Disabled"])),
                     st.one_of(st.none(), st.lists(policy_st, min_size=1, max_size=3)),
                     st.one_of(st.none(), st.sampled_from([0.0, 0.05, 0.2])))
metric_st = st.one_of(
    st.tuples(st.just("AverageValue"), st.sampled_from([0.5, 1.0, 3.0, 10.0, 7.5]),
              st.one_of(st.none(), st.floats(0, 500, allow_nan=False).map(lambda v: round(v, 2)))),
    st.tuples(st.just("Value"), st.sampled_from([1.0, 5.0, 20.0]),
              st.one_of(st.none(), st.floats(0, 200, allow_nan=False).map(lambda v: round(v, 2)))),
    st.tuples(st.just("Utilization"), st.sampled_from([50.0, 80.0]),
              st.one_of(st.none(), st.integers(0, 300).map(float))),
)


def to_behavior(rules: RefRules | None) -> ScalingRules | None:
    if rules is None:
        return None
    policies = None if rules.policies is None else tuple(
        ScalingPolicy(p.kind, p.value, p.period) for p in rules.policies)  # type: ignore[arg-type]
    return ScalingRules(rules.window, rules.select, policies, rules.tolerance)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    bounds=st.tuples(st.integers(1, 5), st.integers(0, 30)).map(lambda b: (b[0], b[0] + b[1])),
    start=st.integers(1, 40),
    behavior=st.one_of(st.none(), st.tuples(st.one_of(st.none(), rules_st), st.one_of(st.none(), rules_st))),
    tolerance=st.sampled_from([0.1, 0.0, 0.05, 0.3]),
    steps=st.lists(st.tuples(st.integers(1, 90), st.lists(metric_st, min_size=1, max_size=3),
                             st.integers(0, 3)), min_size=1, max_size=12),
)
def test_hpa_agrees_with_the_reference(bounds: tuple[int, int], start: int,
                                       behavior: tuple[RefRules | None, RefRules | None] | None,
                                       tolerance: float, steps: list[tuple[int, list[tuple[str, float, float | None]],
                                                                          int]]) -> None:
    minimum, maximum = bounds
    reference = ReferenceHPA(minimum, maximum, behavior[0] if behavior else None,
                             behavior[1] if behavior else None, behavior is not None, tolerance)
    ours_behavior = None if behavior is None else Behavior(to_behavior(behavior[0]), to_behavior(behavior[1]))
    current, now = start, 0
    recommendations: tuple = ()
    events: tuple[ScaleEvent, ...] = ()
    for dt, metrics, unready in steps:
        now += dt
        ready = max(current - unready, 0)
        expected = reference.sync(metrics, current, ready, now)
        decision = decide_replicas(HpaInput(
            metrics=tuple(MetricValue(f"m{i}", kind, target, value, None if value is not None else "failed")
                          for i, (kind, target, value) in enumerate(metrics)),  # type: ignore[arg-type]
            current_replicas=current, min_replicas=minimum, max_replicas=maximum,
            now=T0 + timedelta(seconds=now), ready_replicas=ready, behavior=ours_behavior, tolerance=tolerance,
            recommendations=recommendations, scale_events=events))
        assert decision.desired_replicas == expected, (decision.reason, now, current)
        recommendations, events = decision.recommendations, decision.scale_events
        current = decision.desired_replicas


# ---- tables -------------------------------------------------------------------------------------------

def decide(metrics: list[MetricValue], current: int, minimum: int = 1, maximum: int = 100, **kwargs: object):  # type: ignore[no-untyped-def]
    return decide_replicas(HpaInput(tuple(metrics), current, minimum, maximum, T0, **kwargs))  # type: ignore[arg-type]


def test_average_value_asks_ceil_of_value_over_target() -> None:
    decision = decide([MetricValue("s0-kafka", "AverageValue", 10, 95)], current=4)
    assert decision.metric_replicas == 10
    assert decision.desired_replicas == 8  # legacy scale-up limit max(2 x 4, 4)
    assert decision.condition == "ScaleUpLimit"
    assert "s0-kafka: value 95 / target 10 per pod -> 10" in decision.reason


def test_tolerance_keeps_the_current_count() -> None:
    decision = decide([MetricValue("m", "AverageValue", 10, 105)], current=10)
    assert decision.desired_replicas == 10
    assert "within tolerance" in decision.reason
    assert decide([MetricValue("m", "AverageValue", 10, 112)], current=10).desired_replicas == 12


def test_value_metric_scales_by_ready_pods() -> None:
    decision = decide([MetricValue("m", "Value", 5, 20)], current=2, ready_replicas=2)
    assert decision.desired_replicas == 4  # ratio 4 x 2 ready = 8, capped by the legacy limit 4


def test_max_over_metrics() -> None:
    decision = decide([MetricValue("a", "AverageValue", 10, 30), MetricValue("b", "AverageValue", 1, 5)],
                      current=3)
    assert decision.desired_replicas == 5


def test_invalid_metric_blocks_scale_down_but_not_scale_up() -> None:
    failing = MetricValue("broken", "AverageValue", 10, error="connection refused")
    down = decide([MetricValue("ok", "AverageValue", 10, 10), failing], current=5)
    assert down.desired_replicas == 5 and down.condition == "InvalidMetrics"
    assert "1 of 2 metrics are invalid and the others would scale down to 1" in down.reason
    up = decide([MetricValue("ok", "AverageValue", 10, 70), failing], current=5)
    assert up.desired_replicas == 7


def test_scale_down_stabilization_holds_the_highest_recent_recommendation() -> None:
    metrics = [MetricValue("m", "AverageValue", 10, 80)]
    first = decide(metrics, current=8)
    later = decide_replicas(HpaInput((MetricValue("m", "AverageValue", 10, 20),), 8, 1, 100,
                                     T0 + timedelta(seconds=60), recommendations=first.recommendations))
    assert later.desired_replicas == 8 and later.stabilization == "ScaleDownStabilized"
    after = decide_replicas(HpaInput((MetricValue("m", "AverageValue", 10, 20),), 8, 1, 100,
                                     T0 + timedelta(seconds=301), recommendations=later.recommendations))
    assert after.desired_replicas == 2  # the t=0 recommendation (8) has left the 300 s window
