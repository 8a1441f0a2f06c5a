"""ScaledJob job counts: each strategy and multipleScalersCalculation, with exact expected counts."""

from __future__ import annotations

import pytest

from capstan.core.autoscaling.scaledjob import (
    JobTriggerReading,
    JobView,
    PodView,
    ScaledJobSettings,
    count_jobs,
    decide_scaled_job,
)


def jobs(settings: ScaledJobSettings, queue: float, running: int, pending: int, target: float = 1) -> int:
    return decide_scaled_job(settings, [JobTriggerReading("q", queue, target)], running, pending).jobs_to_create


@pytest.mark.parametrize(("settings", "expected"), [
    # The reference's worked example: min 0, max 100, queue 10, target 1, running 3, pending 1.
    (ScaledJobSettings(strategy="default"), 7),
    (ScaledJobSettings(strategy="custom", custom_queue_length_deduction=1, custom_running_job_percentage="0.5"), 8),
    (ScaledJobSettings(strategy="accurate"), 9),
    (ScaledJobSettings(strategy="eager"), 10),
    (ScaledJobSettings(strategy="custom", custom_running_job_percentage="half"), 7),  # does not parse: default
    (ScaledJobSettings(strategy="custom", custom_queue_length_deduction=2), 8),  # unset percentage counts as 0
])
def test_worked_example(settings: ScaledJobSettings, expected: int) -> None:
    assert jobs(settings, queue=10, running=3, pending=1) == expected


@pytest.mark.parametrize(("settings", "queue", "running", "pending", "target", "expected"), [
    (ScaledJobSettings(), 500, 0, 0, 1, 100),  # maxValue capped at maxReplicaCount
    (ScaledJobSettings(), 12, 1, 0, 5, 2),  # maxScale ceil(12/5) = 3, minus 1 running
    (ScaledJobSettings(), 10, 12, 0, 1, 0),  # more running than wanted
    (ScaledJobSettings(max_replicas=10, strategy="accurate"), 8, 5, 0, 1, 5),  # 8 + 5 > 10: 10 - 5
    (ScaledJobSettings(max_replicas=10, strategy="accurate"), 8, 5, 4, 1, 4),  # 8 + 5 - 4 <= 10: 8 - 4
    (ScaledJobSettings(max_replicas=10, strategy="eager"), 3, 2, 1, 1, 3),  # min(10 - 2 - 1, 3)
    (ScaledJobSettings(max_replicas=10, strategy="eager"), 30, 2, 1, 1, 7),
    (ScaledJobSettings(min_replicas=2, max_replicas=10), 0, 1, 0, 1, 1),  # below min: create the missing one
    (ScaledJobSettings(min_replicas=2, max_replicas=10), 5, 4, 0, 1, 3),  # running' = 4 - 2; maxScale 5
    (ScaledJobSettings(min_replicas=5, max_replicas=3), 10, 0, 0, 1, 3),  # min above max counts as max
    (ScaledJobSettings(), 0, 0, 0, 1, 0),  # inactive
    (ScaledJobSettings(), 4, 0, 0, 0, 0),  # target 0: maxValue 0
])
def test_job_counts(settings: ScaledJobSettings, queue: float, running: int, pending: int, target: float,
                    expected: int) -> None:
    assert jobs(settings, queue, running, pending, target) == expected


@pytest.mark.parametrize(("calculation", "expected", "queue"), [
    ("max", 5, 10.0), ("min", 4, 4.0), ("avg", 5, 7.0), ("sum", 9, 14.0),
])
def test_multiple_scalers_calculation(calculation: str, expected: int, queue: float) -> None:
    readings = [JobTriggerReading("q1", 4, 1), JobTriggerReading("q2", 10, 2),
                JobTriggerReading("q3", 100, 1, active=False)]
    decision = decide_scaled_job(ScaledJobSettings(multiple_scalers_calculation=calculation),  # type: ignore[arg-type]
                                 readings, running=0, pending=0)
    assert (decision.jobs_to_create, decision.queue_length) == (expected, queue)


def test_reason_explains_the_count() -> None:
    decision = decide_scaled_job(ScaledJobSettings(strategy="accurate"), [JobTriggerReading("q", 10, 1)], 3, 1)
    assert decision.reason == ("queue 10 (max over active triggers), maxScale 10, 3 running, 1 pending; accurate: "
                               "10 - 1 pending = 9; creating 9 Jobs")
    idle = decide_scaled_job(ScaledJobSettings(), [JobTriggerReading("q", 0, 1)], 0, 0)
    assert idle.reason.startswith("no trigger is active") and idle.jobs_to_create == 0


def test_running_and_pending_jobs() -> None:
    views = [JobView(finished=True), JobView(False, (PodView("Pending"),)), JobView(False, (PodView("Running"),)),
             JobView(False, ()), JobView(False, (PodView("Running", frozenset({"Ready"})),))]
    assert count_jobs(views) == (4, 2)
    assert count_jobs(views, ["Ready", "PodScheduled"]) == (4, 4)
    assert count_jobs(views, ["Ready"]) == (4, 3)
