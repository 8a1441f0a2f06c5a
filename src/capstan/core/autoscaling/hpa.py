"""The Kubernetes HorizontalPodAutoscaler algorithm, as one pure function.

``decide_replicas`` performs one HPA sync: a replica proposal per metric, the maximum over them,
min/max clamping, and either the legacy normalisation (no ``behavior``: 5-minute downscale
stabilisation and a scale-up limit of ``max(2 * current, 4)``) or the ``behavior`` one
(stabilisation windows, then Pods/Percent policies over a history of past scale events).
Histories are passed in and the updated histories are returned; nothing is stored here.

Faithful to Kubernetes' ``replica_calculator.go`` and ``horizontal.go``:

* values and targets are compared in milli-units, as Kubernetes quantities are;
* ``AverageValue``: ``ratio = value / (target * current)``; outside the tolerance
  ``desired = ceil(value / target)`` (independent of the current count);
* ``Value``: ``ratio = value / target``; outside the tolerance ``desired = ceil(ratio * ready)``;
* ``Utilization``: ``ratio = utilization% / target%`` (integer percentages); outside the tolerance
  ``desired = ceil(ratio * ready)``. Kubernetes' extra adjustments for pods without metrics and
  unready pods are not modelled: the caller passes the utilisation of the ready pods;
* tolerance: no change while ``1 - down <= ratio <= 1 + up`` (default 0.1 each way);
* an invalid metric is ignored when the others want to scale up, and holds the current count
  when they would scale down or when every metric is invalid;
* stabilisation: the recommendation is held between the lowest recommendation of the scale-up
  window and the highest of the scale-down window;
* policies: scale-up ``Percent`` rounds up, scale-down ``Percent`` truncates; ``selectPolicy``
  ``Max`` picks the largest change, ``Min`` the smallest, ``Disabled`` none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from capstan.api.keda import HorizontalPodAutoscalerBehavior, HPAScalingRules

TargetType = Literal["AverageValue", "Value", "Utilization"]
SelectPolicy = Literal["Max", "Min", "Disabled"]
Direction = Literal["up", "down"]

DEFAULT_TOLERANCE = 0.1
DEFAULT_DOWNSCALE_STABILIZATION_SECONDS = 300
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0


# ---- records --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricValue:
    """One metric as the HPA sees it.

    ``target`` is per pod for ``AverageValue``, a total for ``Value`` and a percentage of the
    requests for ``Utilization``; ``value`` is the total (``AverageValue``/``Value``) or the current
    utilisation percentage. ``error`` (or a missing value) makes the metric invalid.
    """

    name: str
    target_type: TargetType
    target: float
    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ScalingPolicy:
    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    """One direction of ``behavior``; ``None`` fields take Kubernetes' defaults."""

    stabilization_window_seconds: int | None = None
    select_policy: SelectPolicy | None = None
    policies: tuple[ScalingPolicy, ...] | None = None
    tolerance: float | None = None


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


@dataclass(frozen=True)
class ResolvedRules:
    """A direction of ``behavior`` with every default filled in."""

    stabilization_window_seconds: int
    select_policy: SelectPolicy
    policies: tuple[ScalingPolicy, ...]
    tolerance: float | None = None

    @property
    def longest_period(self) -> int:
        return max((policy.period_seconds for policy in self.policies), default=0)


DEFAULT_SCALE_UP_RULES = ResolvedRules(
    stabilization_window_seconds=0, select_policy="Max",
    policies=(ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)))
DEFAULT_SCALE_DOWN_RULES = ResolvedRules(
    stabilization_window_seconds=DEFAULT_DOWNSCALE_STABILIZATION_SECONDS, select_policy="Max",
    policies=(ScalingPolicy("Percent", 100, 15),))


def resolve_rules(rules: ScalingRules | None, defaults: ResolvedRules) -> ResolvedRules:
    """Fill the unset fields of ``rules`` from ``defaults`` (Kubernetes' copyHPAScalingRules)."""
    if rules is None:
        return defaults
    return ResolvedRules(
        stabilization_window_seconds=(defaults.stabilization_window_seconds
                                      if rules.stabilization_window_seconds is None
                                      else rules.stabilization_window_seconds),
        select_policy=rules.select_policy or defaults.select_policy,
        policies=defaults.policies if rules.policies is None else rules.policies,
        tolerance=rules.tolerance if rules.tolerance is not None else defaults.tolerance,
    )


def resolve_behavior(behavior: Behavior,
                     downscale_stabilization_seconds: int = DEFAULT_DOWNSCALE_STABILIZATION_SECONDS,
                     ) -> tuple[ResolvedRules, ResolvedRules]:
    """(scaleUp, scaleDown) with defaults; an unset scale-down window is the controller's default."""
    down_defaults = replace(DEFAULT_SCALE_DOWN_RULES, stabilization_window_seconds=downscale_stabilization_seconds)
    return resolve_rules(behavior.scale_up, DEFAULT_SCALE_UP_RULES), resolve_rules(behavior.scale_down,
                                                                                   down_defaults)


def behavior_from_model(model: HorizontalPodAutoscalerBehavior | None) -> Behavior | None:
    """The decision record for an ``advanced.horizontalPodAutoscalerConfig.behavior`` model."""
    if model is None:
        return None
    return Behavior(scale_up=_rules_from_model(model.scale_up), scale_down=_rules_from_model(model.scale_down))


def _rules_from_model(model: HPAScalingRules | None) -> ScalingRules | None:
    if model is None:
        return None
    policies = None if model.policies is None else tuple(
        ScalingPolicy(p.type, p.value, p.period_seconds) for p in model.policies)
    tolerance = None if model.tolerance is None else float(model.tolerance)
    return ScalingRules(model.stabilization_window_seconds, model.select_policy, policies, tolerance)


@dataclass(frozen=True)
class Recommendation:
    """An unstabilised recommendation of a past sync (the stabilisation-window history)."""

    replicas: int
    timestamp: datetime


@dataclass(frozen=True)
class ScaleEvent:
    """A past change of the replica count (the policy history); ``replicas`` is the size of the change."""

    direction: Direction
    replicas: int
    timestamp: datetime


@dataclass(frozen=True)
class HpaInput:
    metrics: tuple[MetricValue, ...]
    current_replicas: int
    min_replicas: int
    max_replicas: int
    now: datetime
    ready_replicas: int | None = None
    """Running and Ready pods, for ``Value`` and ``Utilization`` metrics; ``None`` means current."""
    behavior: Behavior | None = None
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization_seconds: int = DEFAULT_DOWNSCALE_STABILIZATION_SECONDS
    recommendations: tuple[Recommendation, ...] = ()
    scale_events: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True)
class MetricProposal:
    name: str
    replicas: int | None
    """``None`` when the metric is invalid."""
    usage_ratio: float | None
    explanation: str


@dataclass(frozen=True)
class HpaDecision:
    desired_replicas: int
    current_replicas: int
    metric_replicas: int | None
    """The largest proposal over valid metrics, before stabilisation and limits (None: not computed)."""
    stabilized_replicas: int | None
    condition: str
    """Kubernetes' reason: DesiredWithinRange, ScaleUpLimit, ScaleDownLimit, TooManyReplicas,
    TooFewReplicas, ScalingDisabled, InvalidMetrics, AboveMaxReplicas or BelowMinReplicas."""
    stabilization: str | None
    """ScaleUpStabilized, ScaleDownStabilized or ReadyForNewScale (None when not normalised)."""
    reason: str
    proposals: tuple[MetricProposal, ...]
    recommendations: tuple[Recommendation, ...]
    scale_events: tuple[ScaleEvent, ...]

    @property
    def scale(self) -> bool:
        return self.desired_replicas != self.current_replicas


# ---- per-metric proposals -------------------------------------------------------------------------

def to_milli(value: float) -> int:
    """A value in milli-units, as a Kubernetes quantity holds it."""
    return round(value * 1000)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _within(ratio: float, tolerance_up: float, tolerance_down: float) -> bool:
    return (1.0 - tolerance_down) <= ratio <= (1.0 + tolerance_up)


def metric_proposal(metric: MetricValue, current: int, ready: int,
                    tolerance_up: float = DEFAULT_TOLERANCE,
                    tolerance_down: float = DEFAULT_TOLERANCE) -> MetricProposal:
    """The replica count one metric asks for (Kubernetes' replica calculator)."""
    name = metric.name
    if metric.error is not None or metric.value is None:
        return MetricProposal(name, None, None, f"{name}: invalid ({metric.error or 'no value'})")
    if not (math.isfinite(metric.value) and math.isfinite(metric.target)) or metric.target <= 0:
        return MetricProposal(name, None, None,
                              f"{name}: invalid (value {metric.value}, target {metric.target})")
    if metric.target_type == "Utilization":
        return _utilization_proposal(metric, current, ready, tolerance_up, tolerance_down)
    usage, target = to_milli(metric.value), to_milli(metric.target)
    if target <= 0:
        return MetricProposal(name, None, None, f"{name}: invalid (target {metric.target} is below 0.001)")
    shown = f"{name}: value {_fmt(usage / 1000)}"
    if metric.target_type == "AverageValue":
        ratio = usage / (target * current) if current else math.inf
        if _within(ratio, tolerance_up, tolerance_down):
            return MetricProposal(name, current, ratio, f"{shown} is within tolerance of target "
                                  f"{_fmt(target / 1000)} per pod x {current} pods -> {current}")
        replicas = math.ceil(usage / target)
        return MetricProposal(name, replicas, ratio,
                              f"{shown} / target {_fmt(target / 1000)} per pod -> {replicas}")
    ratio = usage / target
    if current == 0:
        replicas = math.ceil(ratio)
        return MetricProposal(name, replicas, ratio, f"{shown} / target {_fmt(target / 1000)} -> {replicas}")
    if _within(ratio, tolerance_up, tolerance_down):
        return MetricProposal(name, current, ratio,
                              f"{shown} is within tolerance of target {_fmt(target / 1000)} -> {current}")
    replicas = math.ceil(ratio * ready)
    return MetricProposal(name, replicas, ratio, f"{shown} / target {_fmt(target / 1000)} = ratio "
                          f"{ratio:.3g} x {ready} ready pods -> {replicas}")


def _utilization_proposal(metric: MetricValue, current: int, ready: int,
                          tolerance_up: float, tolerance_down: float) -> MetricProposal:
    name = metric.name
    utilization, target = int(metric.value or 0), int(metric.target)
    if target <= 0:
        return MetricProposal(name, None, None, f"{name}: invalid (target {metric.target}%)")
    if current == 0 or ready == 0:
        return MetricProposal(name, None, None, f"{name}: invalid (no ready pods to measure)")
    ratio = utilization / target
    if _within(ratio, tolerance_up, tolerance_down):
        return MetricProposal(name, current, ratio,
                              f"{name}: {utilization}% is within tolerance of target {target}% -> {current}")
    replicas = math.ceil(ratio * ready)
    return MetricProposal(name, replicas, ratio,
                          f"{name}: {utilization}% of requests / target {target}% x {ready} ready pods -> {replicas}")


# ---- the sync -------------------------------------------------------------------------------------

def decide_replicas(inp: HpaInput) -> HpaDecision:
    """One HPA sync: the replica count to set now, why, and the updated histories."""
    current = inp.current_replicas
    if current == 0 and inp.min_replicas != 0:
        return _fixed(inp, 0, "ScalingDisabled", "scaling is disabled while the target has 0 replicas")
    if current > inp.max_replicas:
        return _fixed(inp, inp.max_replicas, "AboveMaxReplicas",
                      f"{current} replicas is above the maximum {inp.max_replicas}; scaling to {inp.max_replicas}")
    if current < inp.min_replicas:
        return _fixed(inp, inp.min_replicas, "BelowMinReplicas",
                      f"{current} replicas is below the minimum {inp.min_replicas}; scaling to {inp.min_replicas}")

    up_rules, down_rules = resolve_behavior(inp.behavior or Behavior(), inp.downscale_stabilization_seconds)
    tolerance_up = inp.tolerance if up_rules.tolerance is None or inp.behavior is None else up_rules.tolerance
    tolerance_down = inp.tolerance if down_rules.tolerance is None or inp.behavior is None else down_rules.tolerance
    ready = current if inp.ready_replicas is None else inp.ready_replicas
    proposals = tuple(metric_proposal(m, current, ready, tolerance_up, tolerance_down) for m in inp.metrics)
    valid = [p.replicas for p in proposals if p.replicas is not None]
    invalid = len(proposals) - len(valid)
    metric_replicas = max(valid, default=0)
    details = "; ".join(p.explanation for p in proposals)
    if invalid >= len(proposals) or (invalid > 0 and metric_replicas < current):
        why = ("no metrics" if not proposals else
               "every metric is invalid" if invalid >= len(proposals) else
               f"{invalid} of {len(proposals)} metrics are invalid and the others would scale down to "
               f"{metric_replicas}")
        return HpaDecision(current, current, None, None, "InvalidMetrics", None,
                           f"holding {current} replicas: {why} ({details})", proposals,
                           inp.recommendations, inp.scale_events)

    if inp.behavior is None:
        return _normalize_legacy(inp, metric_replicas, proposals, details)
    return _normalize_with_behavior(inp, metric_replicas, proposals, details, up_rules, down_rules)


def _fixed(inp: HpaInput, desired: int, condition: str, reason: str) -> HpaDecision:
    events = record_scale_event(inp.scale_events, inp.behavior, inp.current_replicas, desired, inp.now,
                                inp.downscale_stabilization_seconds)
    return HpaDecision(desired, inp.current_replicas, None, None, condition, None, reason, (),
                       inp.recommendations, events)


def _normalize_legacy(inp: HpaInput, desired: int, proposals: tuple[MetricProposal, ...],
                      details: str) -> HpaDecision:
    """No ``behavior``: downscale stabilisation, then the fixed scale-up limit and min/max."""
    cutoff = inp.now - timedelta(seconds=inp.downscale_stabilization_seconds)
    recent = [r for r in inp.recommendations if not r.timestamp < cutoff]
    stabilized = max([desired, *(r.replicas for r in recent)])
    history = (*recent, Recommendation(desired, inp.now))
    current = inp.current_replicas
    scale_up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if inp.max_replicas > scale_up_limit:
        ceiling, ceiling_condition = scale_up_limit, "ScaleUpLimit"
        ceiling_text = f"the scale-up limit max(2 x {current}, 4) = {scale_up_limit}"
    else:
        ceiling, ceiling_condition = inp.max_replicas, "TooManyReplicas"
        ceiling_text = f"maxReplicas {inp.max_replicas}"
    if stabilized < inp.min_replicas:
        final, condition, limit = inp.min_replicas, "TooFewReplicas", f"raised to minReplicas {inp.min_replicas}"
    elif stabilized > ceiling:
        final, condition, limit = ceiling, ceiling_condition, f"capped at {ceiling_text}"
    else:
        final, condition, limit = stabilized, "DesiredWithinRange", ""
    stabilization = "ScaleDownStabilized" if stabilized != desired else "ReadyForNewScale"
    held = (f"held at {stabilized} by the highest recommendation of the last "
            f"{inp.downscale_stabilization_seconds}s" if stabilized != desired else "")
    reason = _sentence(current, desired, final, details, held, limit)
    return HpaDecision(final, current, desired, stabilized, condition, stabilization, reason, proposals,
                       history, inp.scale_events)


def _normalize_with_behavior(inp: HpaInput, desired: int, proposals: tuple[MetricProposal, ...], details: str,
                             up_rules: ResolvedRules, down_rules: ResolvedRules) -> HpaDecision:
    stabilized, history, stabilization = stabilize(
        desired, inp.current_replicas, inp.now, inp.recommendations,
        up_rules.stabilization_window_seconds, down_rules.stabilization_window_seconds)
    final, condition, limit = limit_by_policies(
        inp.current_replicas, stabilized, inp.min_replicas, inp.max_replicas, up_rules, down_rules,
        inp.scale_events, inp.now)
    events = record_scale_event(inp.scale_events, inp.behavior, inp.current_replicas, final, inp.now,
                                inp.downscale_stabilization_seconds)
    held = ""
    if stabilization == "ScaleUpStabilized":
        held = (f"held at {stabilized} by the lowest recommendation of the last "
                f"{up_rules.stabilization_window_seconds}s (scaleUp stabilization window)")
    elif stabilization == "ScaleDownStabilized":
        held = (f"held at {stabilized} by the highest recommendation of the last "
                f"{down_rules.stabilization_window_seconds}s (scaleDown stabilization window)")
    reason = _sentence(inp.current_replicas, desired, final, details, held, limit)
    return HpaDecision(final, inp.current_replicas, desired, stabilized, condition, stabilization, reason,
                       proposals, history, events)


def stabilize(desired: int, current: int, now: datetime, recommendations: tuple[Recommendation, ...],
              up_window_seconds: int, down_window_seconds: int,
              ) -> tuple[int, tuple[Recommendation, ...], str]:
    """Hold ``desired`` between the lowest recent (scale-up window) and highest recent (scale-down
    window) recommendation; return it, the updated history and Kubernetes' AbleToScale reason."""
    up_cutoff = now - timedelta(seconds=up_window_seconds)
    down_cutoff = now - timedelta(seconds=down_window_seconds)
    up_recommendation = min([desired, *(r.replicas for r in recommendations if r.timestamp > up_cutoff)])
    down_recommendation = max([desired, *(r.replicas for r in recommendations if r.timestamp > down_cutoff)])
    recommendation = min(max(current, up_recommendation), down_recommendation)
    kept = tuple(r for r in recommendations if not (r.timestamp < up_cutoff and r.timestamp < down_cutoff))
    history = (*kept, Recommendation(desired, now))
    if recommendation == desired:
        reason = "ReadyForNewScale"
    else:
        reason = "ScaleUpStabilized" if desired >= current else "ScaleDownStabilized"
    return recommendation, history, reason


def _change_in_period(events: tuple[ScaleEvent, ...], direction: Direction, period_seconds: int,
                      now: datetime) -> int:
    cutoff = now - timedelta(seconds=period_seconds)
    return sum(e.replicas for e in events if e.direction == direction and e.timestamp > cutoff)


def _period_start(current: int, policy: ScalingPolicy, events: tuple[ScaleEvent, ...], now: datetime) -> int:
    added = _change_in_period(events, "up", policy.period_seconds, now)
    removed = _change_in_period(events, "down", policy.period_seconds, now)
    return current - added + removed


def scale_up_limit(current: int, rules: ResolvedRules, events: tuple[ScaleEvent, ...], now: datetime) -> int:
    """The highest count the scale-up policies allow now (Kubernetes' calculateScaleUpLimitWithScalingRules)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, policy, events, now)
        if policy.type == "Pods":
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    if not proposals:
        return current
    return max(proposals) if rules.select_policy == "Max" else min(proposals)


def scale_down_limit(current: int, rules: ResolvedRules, events: tuple[ScaleEvent, ...], now: datetime) -> int:
    """The lowest count the scale-down policies allow now (Kubernetes' calculateScaleDownLimitWithBehaviors)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, policy, events, now)
        if policy.type == "Pods":
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    if not proposals:
        return current
    return min(proposals) if rules.select_policy == "Max" else max(proposals)


def _describe_policies(rules: ResolvedRules, sign: str) -> str:
    if rules.select_policy == "Disabled":
        return "selectPolicy Disabled"
    parts = [f"{sign}{p.value}{' pods' if p.type == 'Pods' else ' %'} per {p.period_seconds}s" for p in rules.policies]
    joiner = " or " if rules.select_policy == "Max" else " and "
    return joiner.join(parts) or "no policies"


def limit_by_policies(current: int, desired: int, min_replicas: int, max_replicas: int,
                      up_rules: ResolvedRules, down_rules: ResolvedRules,
                      events: tuple[ScaleEvent, ...], now: datetime) -> tuple[int, str, str]:
    """Apply the rate limits and min/max to ``desired`` (Kubernetes' convertDesiredReplicasWithBehaviorRate).

    Returns (replicas, condition, a phrase naming the limit that applied or "")."""
    if desired > current:
        up_limit = max(scale_up_limit(current, up_rules, events, now), current)
        if max_replicas > up_limit:
            allowed, condition = up_limit, "ScaleUpLimit"
            text = f"limited to {up_limit} by the scaleUp policies ({_describe_policies(up_rules, '+')})"
        else:
            allowed, condition = max_replicas, "TooManyReplicas"
            text = f"capped at maxReplicas {max_replicas}"
        if desired > allowed:
            return allowed, condition, text
    elif desired < current:
        down_limit = min(scale_down_limit(current, down_rules, events, now), current)
        if min_replicas < down_limit:
            allowed, condition = down_limit, "ScaleDownLimit"
            text = f"limited to {down_limit} by the scaleDown policies ({_describe_policies(down_rules, '-')})"
        else:
            allowed, condition = min_replicas, "TooFewReplicas"
            text = f"raised to minReplicas {min_replicas}"
        if desired < allowed:
            return allowed, condition, text
    return desired, "DesiredWithinRange", ""


def record_scale_event(events: tuple[ScaleEvent, ...], behavior: Behavior | None, previous: int, new: int,
                       now: datetime,
                       downscale_stabilization_seconds: int = DEFAULT_DOWNSCALE_STABILIZATION_SECONDS,
                       ) -> tuple[ScaleEvent, ...]:
    """The policy history after changing from ``previous`` to ``new`` replicas at ``now``.

    As Kubernetes, events are only kept when ``behavior`` is set, and events older than the
    longest policy period of their direction are dropped."""
    if behavior is None:
        return events
    up_rules, down_rules = resolve_behavior(behavior, downscale_stabilization_seconds)
    longest = {"up": up_rules.longest_period, "down": down_rules.longest_period}
    kept = tuple(e for e in events if not e.timestamp < now - timedelta(seconds=longest[e.direction]))
    if new == previous:
        return kept
    direction: Direction = "up" if new > previous else "down"
    return (*kept, ScaleEvent(direction, abs(new - previous), now))


def _sentence(current: int, desired: int, final: int, details: str, held: str, limit: str) -> str:
    steps = [f"metrics want {desired} ({details})"]
    steps += [part for part in (held, limit) if part]
    outcome = f"scaling from {current} to {final}" if final != current else f"keeping {current} replicas"
    return "; ".join(steps) + f"; {outcome}"
