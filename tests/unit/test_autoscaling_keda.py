"""KEDA ScaledObject decisions over time: trajectories of (t, readings) -> replicas."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from capstan.api.keda import ScaledObject
from capstan.core.autoscaling.expression import compile_formula
from capstan.core.autoscaling.hpa import Behavior, ScalingPolicy, ScalingRules
from capstan.core.autoscaling.keda import (
    FallbackSettings,
    ModifierSettings,
    PauseState,
    ScaledObjectDecision,
    ScaledObjectSettings,
    ScaledObjectState,
    TriggerReading,
    decide_scaled_object,
    fallback_replicas,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ERROR = "error"


@dataclass
class Loop:
    """Runs the decision like a controller would: apply the replicas, keep the status."""

    settings: ScaledObjectSettings
    state: ScaledObjectState
    target: float = 10
    activation: float = 0
    names: tuple[str, ...] = ("a",)

    def readings(self, values: Mapping[str, float | str]) -> tuple[TriggerReading, ...]:
        out = []
        for index, (name, value) in enumerate(values.items()):
            trigger_type = "cpu" if name == "cpu" else "prometheus"
            if value == ERROR:
                out.append(TriggerReading(f"s{index}-{name}", target=self.target, trigger_name=name,
                                          trigger_type=trigger_type, error="connection refused"))
            else:
                out.append(TriggerReading(f"s{index}-{name}", float(value), self.target, self.activation,
                                          "Utilization" if name == "cpu" else "AverageValue", name, trigger_type))
        return tuple(out)

    def step(self, t: int, values: Mapping[str, float | str], pause: PauseState | None = None) -> ScaledObjectDecision:
        decision = decide_scaled_object(self.settings, pause or PauseState(), self.readings(values), self.state,
                                        T0 + timedelta(seconds=t))
        self.state = replace(self.state, current_replicas=decision.desired_replicas,
                             ready_replicas=decision.desired_replicas, last_active_time=decision.last_active_time,
                             failures={k: h.number_of_failures for k, h in decision.health.items()},
                             recommendations=decision.recommendations, scale_events=decision.scale_events)
        return decision

    def run(self, trajectory: list[tuple[int, float | str]]) -> list[int]:
        return [self.step(t, {"a": value}).desired_replicas for t, value in trajectory]


def loop(current: int = 0, **settings: object) -> Loop:
    return Loop(ScaledObjectSettings(**settings), ScaledObjectState(current, created_at=T0))  # type: ignore[arg-type]


def test_activation_is_strict_and_cooldown_counts_from_the_last_active_poll() -> None:
    runner = loop(max_replicas=10, cooldown_period=60)
    runner.activation = 5
    trajectory = [(0, 3), (30, 5), (60, 6), (90, 45), (120, 45), (150, 0), (180, 0), (181, 0), (211, 0)]
    assert runner.run(trajectory) == [0, 0, 1, 4, 5, 5, 5, 1, 0]


def test_the_reasons_explain_each_step() -> None:
    runner = loop(max_replicas=10, cooldown_period=60)
    first = runner.step(0, {"a": 25})
    assert first.reason == ("activated by s0-a: scaling from 0 to 1 (max(minReplicaCount, 1)); the HPA rules take "
                            "over from there")
    assert first.action == "activate" and first.last_active_time == T0
    second = runner.step(30, {"a": 25})
    assert second.reason == ("active (s0-a): metrics want 3 (s0-a: value 25 / target 10 per pod -> 3); scaling "
                             "from 1 to 3")
    third = runner.step(60, {"a": 0})
    assert third.reason.startswith("inactive since 2026-01-01T00:00:30Z; scale to zero waits for the cooldown until "
                                   "2026-01-01T00:01:30Z")
    assert [(c.type, c.status, c.reason) for c in third.conditions] == [
        ("Ready", "True", "ScaledObjectReady"), ("Active", "False", "ScalerCooldown"),
        ("Fallback", "False", "NoFallbackFound"), ("Paused", "False", "ScaledObjectUnpaused")]


def test_keda_compatible_direct_jump_to_zero() -> None:
    runner = loop(max_replicas=10, cooldown_period=60, direct_scale_to_zero=True)
    assert runner.run([(0, 45), (30, 45), (60, 45), (90, 0), (151, 0)]) == [1, 4, 5, 5, 0]


def test_hpa_behavior_governs_scale_down_during_the_cooldown() -> None:
    behavior = Behavior(scale_down=ScalingRules(stabilization_window_seconds=0,
                                                policies=(ScalingPolicy("Pods", 2, 30),)))
    runner = loop(max_replicas=10, cooldown_period=60, behavior=behavior)
    assert runner.run([(60, 45), (90, 45), (120, 45), (150, 0), (180, 0), (181, 0)]) == [1, 5, 5, 3, 1, 0]


def test_no_cliff_inactive_objects_walk_down_at_the_policy_pace() -> None:
    """Activation has priority: value 40 is below activation 50, so the object goes to zero even though
    the HPA wants 4 -- but one pod per 30 s, as the scale-down policy says, not in one jump."""
    behavior = Behavior(scale_down=ScalingRules(stabilization_window_seconds=0,
                                                policies=(ScalingPolicy("Pods", 1, 30),)))
    runner = loop(max_replicas=10, cooldown_period=60, behavior=behavior)
    runner.activation = 50
    trajectory = [(0, 60), (30, 60), (60, 60), (90, 40), (120, 40), (121, 40), (151, 40), (181, 40), (211, 40),
                  (241, 40)]
    assert runner.run(trajectory) == [1, 5, 6, 5, 4, 4, 3, 2, 1, 0]
    keda = loop(max_replicas=10, cooldown_period=60, behavior=behavior, direct_scale_to_zero=True)
    keda.activation = 50
    assert keda.run(trajectory[:6]) == [1, 5, 6, 5, 4, 0]


def test_idle_replica_count() -> None:
    runner = loop(min_replicas=2, idle_replicas=0, max_replicas=10, cooldown_period=30)
    assert runner.run([(0, 0), (30, 15), (60, 15), (90, 0), (91, 0), (120, 0)]) == [0, 2, 2, 2, 0, 0]


def test_idle_above_zero_is_held() -> None:
    runner = loop(current=5, min_replicas=3, idle_replicas=1, max_replicas=10, cooldown_period=30)
    assert runner.run([(31, 0), (32, 0), (60, 0), (90, 25), (120, 0)]) == [3, 1, 1, 3, 3]


def test_initial_cooldown_applies_until_first_activity() -> None:
    runner = loop(current=3, max_replicas=10, initial_cooldown_period=120)
    decisions = [runner.step(t, {"a": 0}) for t in (60, 121)]
    assert [d.desired_replicas for d in decisions] == [1, 0]
    assert "never active; scale to zero waits for initialCooldownPeriod until 2026-01-01T00:02:00Z" in \
        decisions[0].reason


def test_min_replica_count_keeps_the_object_up() -> None:
    runner = loop(min_replicas=2, max_replicas=10, cooldown_period=10)
    assert runner.run([(0, 0), (30, 0), (60, 35), (90, 0), (500, 0)]) == [2, 2, 4, 4, 2]


def test_paused_replicas_sets_and_holds() -> None:
    runner = loop(max_replicas=10)
    pause = PauseState.from_annotations({"autoscaling.keda.sh/paused-replicas": "4"})
    decision = runner.step(0, {"a": 100}, pause)
    assert (decision.desired_replicas, decision.paused_replica_count, decision.action) == (4, 4, "pause")
    assert decision.reason == "paused by autoscaling.keda.sh/paused-replicas=4: scaling from 0 to 4 and holding"
    assert runner.step(30, {"a": 0}, pause).desired_replicas == 4
    both = PauseState.from_annotations({"autoscaling.keda.sh/paused": "true",
                                        "autoscaling.keda.sh/paused-replicas": "2"})
    assert runner.step(60, {"a": 0}, both).desired_replicas == 2


def test_paused_holds_the_current_count() -> None:
    runner = loop(current=3, max_replicas=10)
    pause = PauseState.from_annotations({"autoscaling.keda.sh/paused": "yes"})  # any non-false value pauses
    decision = runner.step(0, {"a": 100}, pause)
    assert decision.desired_replicas == 3
    assert decision.conditions[0].type == "Paused" and decision.conditions[0].status == "True"
    assert not PauseState.from_annotations({"autoscaling.keda.sh/paused": "false"}).paused


def test_invalid_paused_replicas_holds_and_says_why() -> None:
    pause = PauseState.from_annotations({"autoscaling.keda.sh/paused-replicas": "three"})
    decision = loop(current=2).step(0, {"a": 100}, pause)
    assert decision.desired_replicas == 2
    assert decision.reason.startswith("annotation autoscaling.keda.sh/paused-replicas='three' is not a replica count")


def test_paused_scale_in_and_scale_out_block_one_direction() -> None:
    scale_in = PauseState(paused_scale_in=True)
    runner = loop(current=5, max_replicas=10, cooldown_period=10)
    assert [runner.step(t, {"a": v}, scale_in).desired_replicas for t, v in ((0, 0), (400, 0), (430, 90))] == [5, 5, 9]
    scale_out = PauseState(paused_scale_out=True)
    idle = loop(max_replicas=10)
    decision = idle.step(0, {"a": 100}, scale_out)
    assert decision.desired_replicas == 0
    assert "scale-out is paused by autoscaling.keda.sh/paused-scale-out" in decision.reason
    running = loop(current=2, min_replicas=1, max_replicas=10)
    assert running.step(0, {"a": 100}, scale_out).desired_replicas == 2
    # Scale-in still works, after the default 300 s scale-down stabilization window.
    assert [running.step(t, {"a": 0}, scale_out).desired_replicas for t in (30, 301)] == [2, 1]


def test_force_activation() -> None:
    decision = loop().step(0, {"a": 0}, PauseState.from_annotations({"autoscaling.keda.sh/force-activation": "true"}))
    assert decision.desired_replicas == 1 and decision.is_active


def test_fallback_after_more_than_failure_threshold_failures_and_reset_on_success() -> None:
    runner = loop(current=2, min_replicas=1, max_replicas=10, fallback=FallbackSettings(2, 6))
    decisions = [runner.step(t, {"a": v}) for t, v in ((0, ERROR), (30, ERROR), (60, ERROR), (90, ERROR), (120, 10))]
    assert [d.desired_replicas for d in decisions] == [2, 2, 4, 6, 6]
    assert [d.health["s0-a"].number_of_failures for d in decisions] == [1, 2, 3, 4, 0]
    assert [d.fallback_active for d in decisions] == [False, False, True, True, False]
    assert decisions[2].conditions[2].reason == "FallbackExists"
    assert "s0-a failed 3 times in a row (failureThreshold 2): fallback to 6 replicas (static)" in decisions[2].reason
    assert decisions[0].reason.startswith("not active")
    assert decisions[0].hpa is not None and decisions[0].hpa.condition == "InvalidMetrics"


def test_fallback_from_zero_replicas() -> None:
    runner = loop(max_replicas=10, fallback=FallbackSettings(1, 3))
    assert [runner.step(t, {"a": ERROR}).desired_replicas for t in (0, 30, 60)] == [0, 3, 3]


def test_errors_without_fallback_never_scale_to_zero() -> None:
    runner = loop(current=3, max_replicas=10, cooldown_period=0)
    decision = runner.step(600, {"a": ERROR})
    assert decision.desired_replicas == 3
    ready = decision.conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "TriggerError")


@pytest.mark.parametrize(("behavior", "current", "expected"), [
    ("static", 2, 6), ("currentReplicas", 2, 2), ("currentReplicasIfHigher", 8, 8),
    ("currentReplicasIfHigher", 2, 6), ("currentReplicasIfLower", 8, 6), ("currentReplicasIfLower", 2, 2),
])
def test_fallback_behaviors(behavior: str, current: int, expected: int) -> None:
    assert fallback_replicas(FallbackSettings(3, 6, behavior), current) == expected  # type: ignore[arg-type]


def test_scaling_modifiers_composite_metric() -> None:
    modifiers = ModifierSettings(compile_formula("(a + b) / 2"), target=10, activation_target=5)
    runner = loop(max_replicas=10, modifiers=modifiers)
    values = [(0, {"a": 4, "b": 4}), (30, {"a": 20, "b": 10}), (60, {"a": 20, "b": 10})]
    decisions = [runner.step(t, v) for t, v in values]
    assert [d.desired_replicas for d in decisions] == [0, 1, 2]
    assert [d.composite_value for d in decisions] == [4.0, 15.0, 15.0]
    assert decisions[1].triggers_activity["composite-metric"] is True
    assert decisions[2].hpa is not None and "composite-metric: value 15 / target 10 per pod -> 2" in \
        decisions[2].reason


def test_scaling_modifiers_fallback_routes_around_failed_triggers() -> None:
    modifiers = ModifierSettings(compile_formula("a ?? b ?? 8"), target=1)
    runner = loop(current=1, max_replicas=10, modifiers=modifiers,
                  fallback=FallbackSettings(0, 5, "scalingModifiers"))
    assert runner.step(0, {"a": ERROR, "b": 3}).composite_value == 3.0
    decision = runner.step(30, {"a": ERROR, "b": ERROR})
    assert decision.composite_value == 8.0


def test_formula_errors_hold_like_an_invalid_metric() -> None:
    modifiers = ModifierSettings(compile_formula("a > 1 ? a : b"), target=1)
    decision = loop(current=3, max_replicas=10, modifiers=modifiers).step(0, {"a": 0.5, "b": ERROR})
    assert decision.desired_replicas == 3 and decision.is_error


def test_cpu_only_objects_are_always_active() -> None:
    runner = Loop(ScaledObjectSettings(min_replicas=1, max_replicas=10), ScaledObjectState(2, T0, ready_replicas=2),
                  target=50)
    decision = runner.step(0, {"cpu": 90})
    assert decision.is_active and decision.desired_replicas == 4


def test_settings_from_a_scaled_object() -> None:
    obj = ScaledObject.model_validate({
        "metadata": {"name": "w"},
        "spec": {"scaleTargetRef": {"name": "w"}, "minReplicaCount": 1, "maxReplicaCount": 7, "cooldownPeriod": 30,
                 "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleUp": {"policies": [
                     {"type": "Pods", "value": 1, "periodSeconds": 60}]}}},
                     "scalingModifiers": {"formula": "a * 2", "target": "4"}},
                 "fallback": {"failureThreshold": 1, "replicas": 2},
                 "triggers": [{"type": "prometheus", "name": "a", "metadata": {}}]}})
    settings = ScaledObjectSettings.from_spec(obj.spec)
    assert (settings.min_replicas, settings.max_replicas, settings.cooldown_period) == (1, 7, 30)
    assert settings.behavior == Behavior(scale_up=ScalingRules(policies=(ScalingPolicy("Pods", 1, 60),)))
    assert settings.modifiers is not None and settings.modifiers.target == 4.0
    assert settings.fallback == FallbackSettings(1, 2, "static")
