"""KEDA's ScaledObject decision, one reconcile at a time, as a pure function.

``decide_scaled_object(settings, pause, readings, state, now)`` takes what the scalers read this
poll and what the ScaledObject's status remembers, and returns the replica count to set, the
status to write (health, lastActiveTime, conditions, histories) and a ``reason`` a user can read.

The rules are KEDA's (docs/autoscaling-semantics.md has each with a worked example):

* activation: the object is active when any trigger's value is strictly greater than its
  activation threshold (default 0), or the scaler says so; cpu/memory triggers do not take part,
  but an object with only cpu/memory triggers is always active; force-activation makes it active;
* 0 -> 1: an active object at 0 replicas (or below ``minReplicaCount`` while idle) is scaled to
  ``max(minReplicaCount, 1)``;
* 1 <-> N: the Kubernetes HPA algorithm (``hpa.py``) between ``max(1, minReplicaCount)`` and
  ``maxReplicaCount``, with ``advanced.horizontalPodAutoscalerConfig.behavior``;
* -> 0 / idle: an inactive object goes to ``idleReplicaCount`` (or 0) once ``cooldownPeriod`` has
  passed since ``lastActiveTime`` (``initialCooldownPeriod`` since creation if it never was active);
* annotations: ``paused-replicas`` sets and holds a count, ``paused`` holds the current one,
  ``paused-scale-in`` / ``paused-scale-out`` block one direction, ``force-activation``;
* fallback: a trigger failing more than ``failureThreshold`` times in a row is replaced by the
  value that makes the HPA want ``fallback.replicas`` (per ``fallback.behavior``);
* scalingModifiers: the formula's composite value replaces the per-trigger metrics.

**The Capstan difference.** Capstan has no HPA object: one loop makes both KEDA's decision and
the HPA's. So after the cooldown an inactive object does not jump from N replicas straight to 0
(KEDA issues #7770, #6844): it walks down to ``max(1, minReplicaCount)`` at the pace of the
scale-down policies, then to 0 / idle. ``ScaledObjectSettings.direct_scale_to_zero`` restores
KEDA's jump. Two smaller differences: a fallback also applies to a target at 0 replicas (KEDA's
HPA, which applies it, is disabled at 0), and ``lastActiveTime`` is refreshed on every active poll
even when another trigger fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from capstan.api.keda import (
    COMPOSITE_METRIC_NAME,
    FORCE_ACTIVATION_ANNOTATION,
    PAUSED_ANNOTATION,
    PAUSED_REPLICAS_ANNOTATION,
    PAUSED_SCALE_IN_ANNOTATION,
    PAUSED_SCALE_OUT_ANNOTATION,
    RESOURCE_TRIGGER_TYPES,
    ScaledObjectSpec,
)
from capstan.core.autoscaling.expression import Formula, FormulaError, compile_formula
from capstan.core.autoscaling.hpa import (
    DEFAULT_DOWNSCALE_STABILIZATION_SECONDS,
    DEFAULT_TOLERANCE,
    Behavior,
    HpaDecision,
    HpaInput,
    MetricValue,
    Recommendation,
    ScaleEvent,
    ScalingRules,
    TargetType,
    behavior_from_model,
    decide_replicas,
    limit_by_policies,
    record_scale_event,
    resolve_behavior,
)

FallbackBehavior = Literal["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower",
                           "scalingModifiers"]


# ---- inputs ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TriggerReading:
    """What one trigger's scaler returned this poll.

    ``metric_name`` is the key of ``status.health`` (KEDA's ``s{index}-{name}``); ``trigger_name``
    is ``triggers[].name``, the variable a scalingModifiers formula uses. ``active`` is the
    scaler's own verdict when it has one (some scalers combine several values); otherwise the
    trigger is active when ``value > activation_target``.
    """

    metric_name: str
    value: float | None = None
    target: float = 1.0
    activation_target: float = 0.0
    metric_type: TargetType = "AverageValue"
    trigger_name: str | None = None
    trigger_type: str = ""
    active: bool | None = None
    error: str | None = None

    @property
    def is_resource(self) -> bool:
        return self.trigger_type in RESOURCE_TRIGGER_TYPES


@dataclass(frozen=True)
class FallbackSettings:
    failure_threshold: int
    replicas: int
    behavior: FallbackBehavior = "static"


@dataclass(frozen=True)
class ModifierSettings:
    formula: Formula
    target: float
    activation_target: float = 0.0
    metric_type: Literal["AverageValue", "Value"] = "AverageValue"


@dataclass(frozen=True)
class ScaledObjectSettings:
    """The spec fields the decision needs (``from_spec`` builds it from a ScaledObjectSpec)."""

    min_replicas: int = 0
    max_replicas: int = 100
    idle_replicas: int | None = None
    cooldown_period: int = 300
    initial_cooldown_period: int = 0
    behavior: Behavior | None = None
    fallback: FallbackSettings | None = None
    modifiers: ModifierSettings | None = None
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization_seconds: int = DEFAULT_DOWNSCALE_STABILIZATION_SECONDS
    direct_scale_to_zero: bool = False
    """True: KEDA's jump from N replicas to 0/idle after the cooldown; False: walk down (Capstan)."""

    @property
    def hpa_min_replicas(self) -> int:
        """The HPA's floor: KEDA never lets the HPA own the 0 state."""
        return max(1, self.min_replicas)

    @classmethod
    def from_spec(cls, spec: ScaledObjectSpec, **overrides: object) -> ScaledObjectSettings:
        fallback = None
        if spec.fallback is not None:
            fallback = FallbackSettings(spec.fallback.failure_threshold, spec.fallback.replicas,
                                        spec.fallback.behavior)
        modifiers = None
        source = spec.scaling_modifiers
        if source is not None and source.formula:
            metric_type: Literal["AverageValue", "Value"] = "Value" if source.metric_type == "Value" \
                else "AverageValue"
            modifiers = ModifierSettings(compile_formula(source.formula), float(source.target or 0),
                                         float(source.activation_target or 0), metric_type)
        settings = cls(min_replicas=spec.min_replica_count, max_replicas=spec.max_replica_count,
                       idle_replicas=spec.idle_replica_count, cooldown_period=spec.cooldown_period,
                       initial_cooldown_period=spec.initial_cooldown_period,
                       behavior=behavior_from_model(spec.behavior), fallback=fallback, modifiers=modifiers)
        return replace(settings, **overrides)  # type: ignore[arg-type]


def _annotation_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    return None


@dataclass(frozen=True)
class PauseState:
    """The scaling annotations of a ScaledObject."""

    paused: bool = False
    paused_replicas: int | None = None
    paused_scale_in: bool = False
    paused_scale_out: bool = False
    force_activation: bool = False
    problem: str | None = None
    """An annotation value that could not be understood; the decision then holds the replicas."""

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> PauseState:
        annotations = annotations or {}
        problem = None
        paused_replicas = None
        raw = annotations.get(PAUSED_REPLICAS_ANNOTATION)
        if raw is not None:
            try:
                paused_replicas = int(raw.strip())
                if paused_replicas < 0:
                    raise ValueError(raw)
            except ValueError:
                paused_replicas = None
                problem = (f"annotation {PAUSED_REPLICAS_ANNOTATION}={raw!r} is not a replica count "
                           "(a whole number, 0 or more)")
        paused_raw = annotations.get(PAUSED_ANNOTATION)
        # As KEDA: any value other than a false boolean pauses.
        paused = paused_raw is not None and _annotation_bool(paused_raw) is not False
        return cls(paused=paused, paused_replicas=paused_replicas,
                   paused_scale_in=_annotation_bool(annotations.get(PAUSED_SCALE_IN_ANNOTATION)) is True,
                   paused_scale_out=_annotation_bool(annotations.get(PAUSED_SCALE_OUT_ANNOTATION)) is True,
                   force_activation=_annotation_bool(annotations.get(FORCE_ACTIVATION_ANNOTATION)) is True,
                   problem=problem)


@dataclass(frozen=True)
class ScaledObjectState:
    """What the decision remembers between polls (from the target and the ScaledObject's status)."""

    current_replicas: int
    created_at: datetime
    ready_replicas: int | None = None
    last_active_time: datetime | None = None
    failures: Mapping[str, int] = field(default_factory=dict)
    """``status.health[metric].numberOfFailures``."""
    recommendations: tuple[Recommendation, ...] = ()
    scale_events: tuple[ScaleEvent, ...] = ()


# ---- outputs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConditionUpdate:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


@dataclass(frozen=True)
class MetricHealth:
    number_of_failures: int
    status: Literal["Happy", "Failing"]


Action = Literal["activate", "scale", "hold", "descend", "deactivate", "pause", "fallback", "to-min"]


@dataclass(frozen=True)
class ScaledObjectDecision:
    desired_replicas: int
    current_replicas: int
    action: Action
    reason: str
    is_active: bool
    is_error: bool
    fallback_active: bool
    last_active_time: datetime | None
    health: Mapping[str, MetricHealth]
    triggers_activity: Mapping[str, bool]
    conditions: tuple[ConditionUpdate, ...]
    paused_replica_count: int | None = None
    composite_value: float | None = None
    hpa: HpaDecision | None = None
    recommendations: tuple[Recommendation, ...] = ()
    scale_events: tuple[ScaleEvent, ...] = ()

    @property
    def scale(self) -> bool:
        return self.desired_replicas != self.current_replicas


# ---- helpers --------------------------------------------------------------------------------------

def clean_metric_value(value: float) -> float:
    """KEDA reports NaN, infinities and negative values as 0."""
    return value if math.isfinite(value) and value > 0 else 0.0


def fallback_replicas(fallback: FallbackSettings, current: int) -> int:
    """The replica count a fallback asks for, per ``fallback.behavior``."""
    if fallback.behavior == "currentReplicas":
        return current
    if fallback.behavior == "currentReplicasIfHigher":
        return max(current, fallback.replicas)
    if fallback.behavior == "currentReplicasIfLower":
        return min(current, fallback.replicas)
    return fallback.replicas


def fallback_metric_value(target: float, metric_type: str, replicas: int, ready: int) -> float | None:
    """The metric value that makes the HPA want ``replicas`` (None: a Value metric with no ready pod)."""
    if metric_type == "Value":
        return target * replicas / ready if ready > 0 else None
    return target * replicas


def cooldown_elapsed(settings: ScaledObjectSettings, state: ScaledObjectState, now: datetime) -> bool:
    if state.last_active_time is None:
        return state.created_at + timedelta(seconds=settings.initial_cooldown_period) < now
    return state.last_active_time + timedelta(seconds=settings.cooldown_period) < now


def _fmt(value: float) -> str:
    return f"{value:g}"


def _time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class _Evaluation:
    """The poll's readings turned into HPA metrics, activity and health."""

    metrics: tuple[MetricValue, ...]
    is_active: bool
    is_error: bool
    fallback_active: bool
    health: Mapping[str, MetricHealth]
    activity: Mapping[str, bool]
    active_names: tuple[str, ...]
    errors: tuple[str, ...]
    composite: float | None = None
    notes: tuple[str, ...] = ()


def _health(readings: tuple[TriggerReading, ...], state: ScaledObjectState) -> dict[str, MetricHealth]:
    health = {}
    for reading in readings:
        if reading.error is None:
            health[reading.metric_name] = MetricHealth(0, "Happy")
        else:
            health[reading.metric_name] = MetricHealth(state.failures.get(reading.metric_name, 0) + 1, "Failing")
    return health


def _over_threshold(settings: ScaledObjectSettings, health: Mapping[str, MetricHealth],
                    reading: TriggerReading) -> bool:
    fallback = settings.fallback
    return (fallback is not None and reading.error is not None and not reading.is_resource
            and health[reading.metric_name].number_of_failures > fallback.failure_threshold)


def _reading_active(reading: TriggerReading, value: float) -> bool:
    if reading.error is not None:
        return False
    return reading.active if reading.active is not None else value > reading.activation_target


def _evaluate(settings: ScaledObjectSettings, readings: tuple[TriggerReading, ...], state: ScaledObjectState,
              force: bool) -> _Evaluation:
    health = _health(readings, state)
    ready = state.current_replicas if state.ready_replicas is None else state.ready_replicas
    values = {r.metric_name: clean_metric_value(r.value) if r.value is not None else 0.0 for r in readings}
    external = [r for r in readings if not r.is_resource]
    activity = {r.metric_name: _reading_active(r, values[r.metric_name]) for r in external}
    errors = tuple(f"{r.metric_name}: {r.error}" for r in readings if r.error is not None)
    resource_metrics = [_resource_metric(r, values[r.metric_name]) for r in readings if r.is_resource]
    if settings.modifiers is not None:
        return _evaluate_composite(settings, settings.modifiers, external, resource_metrics, values, health,
                                   activity, errors, ready, state.current_replicas, force, bool(readings))
    metrics: list[MetricValue] = []
    notes: list[str] = []
    in_fallback = False
    for reading in external:
        if reading.error is None:
            metrics.append(MetricValue(reading.metric_name, reading.metric_type, reading.target,
                                       values[reading.metric_name]))
        elif _over_threshold(settings, health, reading):
            assert settings.fallback is not None
            replicas = fallback_replicas(settings.fallback, state.current_replicas)
            value = fallback_metric_value(reading.target, reading.metric_type, replicas, ready)
            failures = health[reading.metric_name].number_of_failures
            if value is None:
                metrics.append(MetricValue(reading.metric_name, reading.metric_type, reading.target,
                                           error="fallback for a Value metric needs at least one ready pod"))
            else:
                in_fallback = True
                metrics.append(MetricValue(reading.metric_name, reading.metric_type, reading.target, value))
                notes.append(f"{reading.metric_name} failed {failures} times in a row (failureThreshold "
                             f"{settings.fallback.failure_threshold}): fallback to {replicas} replicas "
                             f"({settings.fallback.behavior})")
        else:
            metrics.append(MetricValue(reading.metric_name, reading.metric_type, reading.target, error=reading.error))
    metrics += resource_metrics
    active_names = tuple(name for name, active in activity.items() if active)
    only_resource = bool(readings) and not external
    return _Evaluation(tuple(metrics), force or only_resource or bool(active_names), bool(errors), in_fallback,
                       health, activity, active_names, errors, notes=tuple(notes))


def _resource_metric(reading: TriggerReading, value: float) -> MetricValue:
    return MetricValue(reading.metric_name, reading.metric_type, reading.target,
                       None if reading.error else value, reading.error)


def _evaluate_composite(settings: ScaledObjectSettings, modifiers: ModifierSettings,
                        external: list[TriggerReading], resource_metrics: list[MetricValue],
                        values: Mapping[str, float], health: Mapping[str, MetricHealth],
                        activity: dict[str, bool], errors: tuple[str, ...], ready: int, current: int,
                        force: bool, any_readings: bool) -> _Evaluation:
    fallback = settings.fallback
    per_trigger = fallback is not None and fallback.behavior == "scalingModifiers"
    env: dict[str, float | None] = {}
    problem: str | None = None
    whole_fallback = False
    notes: list[str] = []
    for reading in external:
        name = reading.trigger_name or reading.metric_name
        if reading.error is None:
            env[name] = values[reading.metric_name]
        elif _over_threshold(settings, health, reading):
            env[name] = None
            whole_fallback = whole_fallback or not per_trigger
            if per_trigger:
                notes.append(f"{name} failed more than {fallback.failure_threshold if fallback else 0} times: "
                             "it is nil in the formula")
        else:
            env[name] = None
            problem = problem or f"trigger {name} failed: {reading.error}"
    composite: float | None = None
    used_fallback = False
    if whole_fallback and fallback is not None:
        replicas = fallback_replicas(fallback, current)
        composite = fallback_metric_value(modifiers.target, modifiers.metric_type, replicas, ready)
        used_fallback = composite is not None
        notes.append(f"a trigger is past its failureThreshold: the formula is skipped and the composite metric "
                     f"asks for {replicas} replicas ({fallback.behavior})")
        if composite is None:
            problem = "fallback for a Value composite metric needs at least one ready pod"
    elif problem is None:
        try:
            composite = modifiers.formula.evaluate_number(env)
        except FormulaError as exc:
            problem = f"formula {modifiers.formula.text!r}: {exc}"
        if composite is None and problem is None:
            if per_trigger and fallback is not None:
                composite = fallback_metric_value(modifiers.target, modifiers.metric_type, fallback.replicas, ready)
                used_fallback = composite is not None
                notes.append(f"the formula produced nil: fallback to {fallback.replicas} replicas")
            else:
                problem = f"formula {modifiers.formula.text!r} produced nil"
    if composite is not None:
        composite = clean_metric_value(composite)
    metric = MetricValue(COMPOSITE_METRIC_NAME, modifiers.metric_type, modifiers.target, composite,
                         problem if composite is None else None)
    composite_active = composite is not None and composite > modifiers.activation_target and not used_fallback
    activity = {**activity, COMPOSITE_METRIC_NAME: composite_active}
    trigger_failed = any(r.error is not None for r in external)
    all_errors = errors if problem is None or trigger_failed else (*errors, problem)
    only_resource = any_readings and not external
    return _Evaluation((metric, *resource_metrics), force or only_resource or composite_active,
                       bool(all_errors) or composite is None, used_fallback, health, activity,
                       (COMPOSITE_METRIC_NAME,) if composite_active else (), tuple(all_errors),
                       composite, tuple(notes))


# ---- the decision ---------------------------------------------------------------------------------

def decide_scaled_object(settings: ScaledObjectSettings, pause: PauseState,
                         readings: tuple[TriggerReading, ...], state: ScaledObjectState,
                         now: datetime) -> ScaledObjectDecision:
    """The replica count for the scale target after this poll, and the status to record."""
    current = state.current_replicas
    if pause.problem is not None or pause.paused_replicas is not None or pause.paused:
        return _paused(pause, state)

    evaluation = _evaluate(settings, readings, state, pause.force_activation)
    last_active = now if evaluation.is_active else state.last_active_time
    context = _Context(settings, pause, state, now, evaluation, last_active)
    floor = settings.hpa_min_replicas

    if evaluation.is_active:
        below_idle = settings.idle_replicas is not None and current < settings.min_replicas
        if current == 0 or below_idle:
            return _activate(context)
        return context.hpa_step("scale")

    fallback = settings.fallback
    if evaluation.is_error and fallback is not None and fallback.replicas != 0:
        if current == 0:
            return _fallback_from_zero(context)
        return context.hpa_step("fallback" if evaluation.fallback_active else "hold")
    if evaluation.is_error and fallback is None:
        if current == 0:
            return context.hold(f"inactive with failing triggers ({context.values_text()})")
        return context.hpa_step("hold", prefix=f"triggers failing, no scale to zero ({context.values_text()})")
    if settings.idle_replicas is not None and 0 < current <= settings.idle_replicas:
        return context.hold(f"inactive at idleReplicaCount {settings.idle_replicas} ({context.values_text()})")

    low = settings.idle_replicas if settings.idle_replicas is not None else settings.min_replicas
    if (settings.idle_replicas is not None and current > settings.idle_replicas) or (current > 0
                                                                                     and settings.min_replicas == 0):
        if pause.paused_scale_in:
            return context.hpa_step("hold", prefix=f"inactive, but scale-in is paused by {PAUSED_SCALE_IN_ANNOTATION}")
        if not cooldown_elapsed(settings, state, now):
            return context.hpa_step("scale", cooldown=True)
        if settings.direct_scale_to_zero or current <= floor:
            return context.to(low, "deactivate", f"{context.inactive_since()}; cooldown over: scaling to "
                              f"{'idleReplicaCount' if settings.idle_replicas is not None else 'zero'} ({low})")
        return _descend(context, floor)
    if settings.idle_replicas is None and current < settings.min_replicas:
        return context.to(settings.min_replicas, "to-min", f"{current} replicas is below minReplicaCount "
                          f"{settings.min_replicas}")
    if current == 0:
        return context.hold(f"inactive at 0 replicas ({context.values_text()})")
    return context.hpa_step("scale")


@dataclass(frozen=True)
class _Context:
    settings: ScaledObjectSettings
    pause: PauseState
    state: ScaledObjectState
    now: datetime
    evaluation: _Evaluation
    last_active: datetime | None

    def values_text(self) -> str:
        ev = self.evaluation
        parts = []
        for name, active in ev.activity.items():
            parts.append(f"{name} {'active' if active else 'inactive'}")
        if ev.composite is not None:
            parts.append(f"composite {_fmt(ev.composite)}")
        parts += list(ev.errors)
        return ", ".join(parts) or "no triggers"

    def inactive_since(self) -> str:
        if self.state.last_active_time is None:
            return "never active since creation"
        return f"inactive since {_time(self.state.last_active_time)}"

    def conditions(self, cooldown: bool = False) -> tuple[ConditionUpdate, ...]:
        ev = self.evaluation
        if ev.is_error and not ev.fallback_active:
            errors = "; ".join(ev.errors) or "the composite metric has no value"
            # Partial only while a trigger still reads: cpu/memory triggers count as active even when their
            # only read failed, and then every trigger has failed.
            if ev.is_active and any(h.status == "Happy" for h in ev.health.values()):
                ready = ConditionUpdate("Ready", "Unknown", "PartialTriggerError", f"some triggers failed: {errors}")
            else:
                ready = ConditionUpdate("Ready", "False", "TriggerError", f"triggers failed: {errors}")
        else:
            ready = ConditionUpdate("Ready", "True", "ScaledObjectReady",
                                    "ScaledObject is defined correctly and is ready for scaling")
        if ev.is_active:
            names = ", ".join(ev.active_names) or ("force-activation" if self.pause.force_activation
                                                   else "cpu/memory triggers")
            active = ConditionUpdate("Active", "True", "ScalerActive", f"scaling is performed because triggers are "
                                     f"active: {names}")
        elif cooldown:
            active = ConditionUpdate("Active", "False", "ScalerCooldown",
                                     "triggers are not active; waiting for the cooldown period")
        else:
            active = ConditionUpdate("Active", "False", "ScalerNotActive",
                                     "scaling is not performed because triggers are not active")
        fallback = (ConditionUpdate("Fallback", "True", "FallbackExists",
                                    "at least one trigger is falling back on this scaled object")
                    if ev.fallback_active else
                    ConditionUpdate("Fallback", "False", "NoFallbackFound",
                                    "no fallbacks are active on this scaled object"))
        paused = ConditionUpdate("Paused", "False", "ScaledObjectUnpaused", "ScaledObject is not paused")
        return (ready, active, fallback, paused)

    def decision(self, desired: int, action: Action, reason: str, hpa: HpaDecision | None = None,
                 cooldown: bool = False, recommendations: tuple[Recommendation, ...] | None = None,
                 scale_events: tuple[ScaleEvent, ...] | None = None) -> ScaledObjectDecision:
        ev = self.evaluation
        if ev.notes:
            reason = f"{reason} [{'; '.join(ev.notes)}]"
        return ScaledObjectDecision(
            desired_replicas=desired, current_replicas=self.state.current_replicas, action=action, reason=reason,
            is_active=ev.is_active, is_error=ev.is_error, fallback_active=ev.fallback_active,
            last_active_time=self.last_active, health=ev.health, triggers_activity=ev.activity,
            conditions=self.conditions(cooldown), composite_value=ev.composite, hpa=hpa,
            recommendations=self.state.recommendations if recommendations is None else recommendations,
            scale_events=self.state.scale_events if scale_events is None else scale_events)

    def hold(self, why: str) -> ScaledObjectDecision:
        current = self.state.current_replicas
        return self.decision(current, "hold", f"{why}; keeping {current} replicas")

    def to(self, desired: int, action: Action, why: str) -> ScaledObjectDecision:
        current = self.state.current_replicas
        return self.decision(desired, action, f"{why}; scaling from {current} to {desired}"
                             if desired != current else f"{why}; keeping {current} replicas")

    def hpa_step(self, action: Action, prefix: str = "", cooldown: bool = False) -> ScaledObjectDecision:
        settings, state = self.settings, self.state
        behavior = _with_paused_directions(settings.behavior, self.pause)
        hpa = decide_replicas(HpaInput(
            metrics=self.evaluation.metrics, current_replicas=state.current_replicas,
            min_replicas=settings.hpa_min_replicas, max_replicas=settings.max_replicas, now=self.now,
            ready_replicas=state.ready_replicas, behavior=behavior, tolerance=settings.tolerance,
            downscale_stabilization_seconds=settings.downscale_stabilization_seconds,
            recommendations=state.recommendations, scale_events=state.scale_events))
        lead = prefix
        if not lead:
            if self.evaluation.is_active:
                lead = f"active ({', '.join(self.evaluation.active_names) or 'always active'})"
            elif cooldown and state.last_active_time is not None:
                until = state.last_active_time + timedelta(seconds=settings.cooldown_period)
                lead = f"{self.inactive_since()}; scale to zero waits for the cooldown until {_time(until)}"
            elif cooldown:
                until = state.created_at + timedelta(seconds=settings.initial_cooldown_period)
                lead = f"never active; scale to zero waits for initialCooldownPeriod until {_time(until)}"
            else:
                lead = f"not active ({self.values_text()})"
        if hpa.desired_replicas == state.current_replicas and action == "scale":
            action = "hold"
        elif action == "hold" and hpa.desired_replicas != state.current_replicas:
            action = "scale"
        return self.decision(hpa.desired_replicas, action, f"{lead}: {hpa.reason}", hpa=hpa, cooldown=cooldown,
                             recommendations=hpa.recommendations, scale_events=hpa.scale_events)


def _with_paused_directions(behavior: Behavior | None, pause: PauseState) -> Behavior | None:
    """As KEDA, paused-scale-in / -out set the HPA's selectPolicy to Disabled for that direction."""
    if not (pause.paused_scale_in or pause.paused_scale_out):
        return behavior
    behavior = behavior or Behavior()
    if pause.paused_scale_in:
        down = replace(behavior.scale_down or ScalingRules(), select_policy="Disabled")
        behavior = replace(behavior, scale_down=down)
    if pause.paused_scale_out:
        up = replace(behavior.scale_up or ScalingRules(), select_policy="Disabled")
        behavior = replace(behavior, scale_up=up)
    return behavior


def _paused(pause: PauseState, state: ScaledObjectState) -> ScaledObjectDecision:
    current = state.current_replicas
    if pause.problem is not None:
        desired, reason = current, f"{pause.problem}; keeping {current} replicas until it is fixed"
        paused_count = None
    elif pause.paused_replicas is not None:
        desired = pause.paused_replicas
        paused_count = desired
        reason = (f"paused by {PAUSED_REPLICAS_ANNOTATION}={desired}: "
                  + (f"scaling from {current} to {desired} and holding" if desired != current
                     else f"holding {desired} replicas"))
    else:
        desired, paused_count = current, None
        reason = f"paused by {PAUSED_ANNOTATION}: holding {current} replicas"
    condition = ConditionUpdate("Paused", "True", "ScaledObjectPaused", reason)
    health = {name: MetricHealth(count, "Failing" if count else "Happy") for name, count in state.failures.items()}
    return ScaledObjectDecision(
        desired_replicas=desired, current_replicas=current, action="pause", reason=reason, is_active=False,
        is_error=False, fallback_active=False, last_active_time=state.last_active_time, health=health,
        triggers_activity={}, conditions=(condition,), paused_replica_count=paused_count,
        recommendations=state.recommendations, scale_events=state.scale_events)


def _activate(context: _Context) -> ScaledObjectDecision:
    settings, current = context.settings, context.state.current_replicas
    names = ", ".join(context.evaluation.active_names) or (
        "force-activation annotation" if context.pause.force_activation else "cpu/memory triggers")
    if context.pause.paused_scale_out:
        return context.hold(f"active ({names}), but scale-out is paused by {PAUSED_SCALE_OUT_ANNOTATION}")
    desired = max(settings.min_replicas, 1)
    origin = "0" if current == 0 else f"idleReplicaCount {current}"
    return context.decision(desired, "activate", f"activated by {names}: scaling from {origin} to {desired} "
                            f"(max(minReplicaCount, 1)); the HPA rules take over from there")


def _fallback_from_zero(context: _Context) -> ScaledObjectDecision:
    settings = context.settings
    fallback = settings.fallback
    assert fallback is not None
    if not context.evaluation.fallback_active:
        return context.hold(f"inactive with failing triggers ({context.values_text()}); fallback starts after "
                            f"more than {fallback.failure_threshold} consecutive failures")
    replicas = fallback_replicas(fallback, 0)
    if replicas <= 0:
        return context.hold(f"fallback ({fallback.behavior}) asks for 0 replicas")
    desired = min(max(replicas, settings.hpa_min_replicas), settings.max_replicas)
    return context.decision(desired, "fallback", f"triggers keep failing ({'; '.join(context.evaluation.errors)}): "
                            f"fallback scales from 0 to {desired} replicas")


def _descend(context: _Context, floor: int) -> ScaledObjectDecision:
    """After the cooldown, walk down to the HPA floor at the pace of the scale-down policies."""
    settings, state, now = context.settings, context.state, context.now
    current = state.current_replicas
    behavior = settings.behavior
    if behavior is None:
        desired, limit = floor, ""
    else:
        up_rules, down_rules = resolve_behavior(behavior, settings.downscale_stabilization_seconds)
        desired, _, limit = limit_by_policies(current, floor, floor, settings.max_replicas, up_rules, down_rules,
                                              state.scale_events, now)
    events = record_scale_event(state.scale_events, behavior, current, desired, now,
                                settings.downscale_stabilization_seconds)
    window = timedelta(seconds=max(settings.downscale_stabilization_seconds, _longest_window(behavior)))
    history = (*(r for r in state.recommendations if r.timestamp >= now - window), Recommendation(floor, now))
    target = "idleReplicaCount" if settings.idle_replicas is not None else "zero"
    reason = (f"{context.inactive_since()}; cooldown over: stepping down to {floor} before {target}"
              + (f" ({limit})" if limit else "") + f"; scaling from {current} to {desired}")
    return context.decision(desired, "descend", reason, recommendations=history, scale_events=events)


def _longest_window(behavior: Behavior | None) -> int:
    if behavior is None:
        return 0
    up_rules, down_rules = resolve_behavior(behavior)
    return max(up_rules.stabilization_window_seconds, down_rules.stabilization_window_seconds)
