"""KEDA's ScaledJob decision: how many Jobs to create this poll.

The arithmetic is KEDA's (``scaledjob/metrics.go`` and ``executor/scale_jobs.go``):

1. per trigger: ``queueLength`` = the metric value, ``maxValue = min(queueLength / target, maxRC)``
   (0 when the target is 0), where ``maxRC = maxReplicaCount - minReplicaCount``;
2. across the **active** triggers, ``multipleScalersCalculation``: ``max`` (the trigger with the
   longest queue), ``min`` (the shortest non-zero queue), ``avg`` or ``sum``;
3. ``isActive |= minReplicaCount > 0``; ``maxValue = min(maxValue, maxRC)``;
   ``scaleTo = ceil(queueLength)``, ``maxScale = ceil(maxValue)``;
4. below ``minReplicaCount`` running Jobs, the missing ones are created; otherwise the strategy
   gives ``effectiveMax`` (and for ``eager`` a new ``scaleTo``) from ``running' = running - min``:

   ==========  ===============================================================================
   default     ``maxScale - running'``
   custom      ``min(maxScale - deduction - int(running' * percentage), maxRC)``
   accurate    ``maxRC - running'`` if ``maxScale + running' - pending > maxRC``,
               else ``maxScale - pending``
   eager       ``min(maxRC - running' - pending, maxScale)``, with ``scaleTo = maxRC``
   ==========  ===============================================================================

5. when active and ``effectiveMax > 0``: create ``min(scaleTo, effectiveMax)`` Jobs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from capstan.api.keda import ScaledJobSpec

Strategy = Literal["default", "custom", "accurate", "eager"]
Calculation = Literal["max", "min", "avg", "sum"]


@dataclass(frozen=True)
class JobTriggerReading:
    """One trigger's reading: ``value`` is the queue length (sum of the trigger's metric values)."""

    name: str
    value: float
    target: float
    activation_target: float = 0.0
    active: bool | None = None
    """The scaler's own verdict; None means ``value > activation_target``."""
    error: str | None = None

    @property
    def is_active(self) -> bool:
        if self.error is not None:
            return False
        return self.active if self.active is not None else self.value > self.activation_target


@dataclass(frozen=True)
class ScaledJobSettings:
    min_replicas: int = 0
    max_replicas: int = 100
    strategy: Strategy = "default"
    custom_queue_length_deduction: int | None = None
    custom_running_job_percentage: str | None = None
    multiple_scalers_calculation: Calculation = "max"

    @property
    def effective_min(self) -> int:
        """KEDA's MinReplicaCount(): a minimum above the maximum counts as the maximum."""
        return min(self.min_replicas, self.max_replicas)

    @property
    def max_replica_count(self) -> int:
        """KEDA's MaxReplicaCount(): the Jobs a poll may add on top of the minimum."""
        if self.min_replicas > self.max_replicas:
            return self.max_replicas
        return self.max_replicas - self.min_replicas

    @classmethod
    def from_spec(cls, spec: ScaledJobSpec) -> ScaledJobSettings:
        strategy = spec.scaling_strategy
        return cls(min_replicas=spec.min_replica_count, max_replicas=spec.max_replica_count,
                   strategy=strategy.strategy,
                   custom_queue_length_deduction=strategy.custom_scaling_queue_length_deduction,
                   custom_running_job_percentage=strategy.custom_scaling_running_job_percentage,
                   multiple_scalers_calculation=strategy.multiple_scalers_calculation)


@dataclass(frozen=True)
class TriggerQueue:
    name: str
    queue_length: float
    max_value: float
    is_active: bool


@dataclass(frozen=True)
class JobScaleDecision:
    jobs_to_create: int
    is_active: bool
    queue_length: float
    max_value: float
    scale_to: int
    max_scale: int
    effective_max: int
    running: int
    pending: int
    strategy: Strategy
    reason: str
    triggers: tuple[TriggerQueue, ...] = ()


def trigger_queue(reading: JobTriggerReading, max_replica_count: int) -> TriggerQueue:
    """KEDA's CalculateQueueLengthAndMaxValue for one trigger."""
    max_value = min(reading.value / reading.target, float(max_replica_count)) if reading.target else 0.0
    return TriggerQueue(reading.name, reading.value, max_value, reading.is_active)


def combine(queues: Iterable[TriggerQueue], calculation: Calculation) -> tuple[bool, float, float]:
    """(isActive, queueLength, maxValue) over the active triggers, per multipleScalersCalculation."""
    queue_length = max_value = 0.0
    is_active = False
    active = [q for q in queues if q.is_active]
    if calculation == "min":
        for queue in active:
            # As KEDA: a running value of 0 is replaced by any later active trigger.
            if queue_length == 0 or queue.queue_length < queue_length:
                queue_length, max_value, is_active = queue.queue_length, queue.max_value, True
    elif calculation in ("avg", "sum"):
        if active:
            queue_length = sum(q.queue_length for q in active)
            max_value = sum(q.max_value for q in active)
            is_active = True
            if calculation == "avg":
                queue_length, max_value = queue_length / len(active), max_value / len(active)
    else:
        for queue in active:
            if queue.queue_length > queue_length:
                queue_length, max_value, is_active = queue.queue_length, queue.max_value, True
    return is_active, queue_length, max_value


def _percentage(text: str | None) -> float | None:
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def effective_max_scale(settings: ScaledJobSettings, max_scale: int, running: int, pending: int,
                        scale_to: int) -> tuple[int, int, str]:
    """(effectiveMax, scaleTo, formula text) for the strategy; ``running`` is already ``running - min``."""
    max_rc = settings.max_replica_count
    strategy = settings.strategy
    if strategy == "custom":
        percentage = _percentage(settings.custom_running_job_percentage)
        if percentage is not None:
            deduction = settings.custom_queue_length_deduction or 0
            value = min(max_scale - deduction - int(running * percentage), max_rc)
            return value, scale_to, (f"custom: min({max_scale} - {deduction} - int({running} x {percentage:g}), "
                                     f"{max_rc}) = {value}")
        strategy = "default"
    if strategy == "accurate":
        if max_scale + running - pending > max_rc:
            value = max_rc - running
            return value, scale_to, (f"accurate: {max_scale} + {running} running - {pending} pending > {max_rc}, "
                                     f"so {max_rc} - {running} = {value}")
        value = max_scale - pending
        return value, scale_to, f"accurate: {max_scale} - {pending} pending = {value}"
    if strategy == "eager":
        value = min(max_rc - running - pending, max_scale)
        return value, max_rc, (f"eager: min({max_rc} - {running} running - {pending} pending, {max_scale}) = "
                               f"{value}")
    value = max_scale - running
    note = " (customScalingRunningJobPercentage does not parse)" if settings.strategy == "custom" else ""
    return value, scale_to, f"default{note}: {max_scale} - {running} running = {value}"


def decide_scaled_job(settings: ScaledJobSettings, readings: Iterable[JobTriggerReading], running: int,
                      pending: int) -> JobScaleDecision:
    """How many Jobs to create, given the triggers' readings and the unfinished (running) and
    pending Jobs of the ScaledJob."""
    max_rc = settings.max_replica_count
    queues = tuple(trigger_queue(r, max_rc) for r in readings)
    is_active, queue_length, max_value = combine(queues, settings.multiple_scalers_calculation)
    minimum = settings.effective_min
    is_active = is_active or minimum > 0
    max_value = min(max_value, float(max_rc))
    scale_to, max_scale = math.ceil(queue_length), math.ceil(max_value)
    if running < minimum:
        effective = scale_to = minimum - running
        how = f"{running} running Jobs is below minReplicaCount {minimum}: {effective} more"
    else:
        effective, scale_to, how = effective_max_scale(settings, max_scale, running - minimum, pending, scale_to)
    effective = max(effective, 0)
    jobs = min(scale_to, effective) if is_active and effective > 0 else 0
    summary = (f"queue {queue_length:g} ({settings.multiple_scalers_calculation} over active triggers), "
               f"maxScale {max_scale}, {running} running, {pending} pending; {how}")
    if not is_active:
        reason = f"no trigger is active ({summary}); creating no Jobs"
    elif jobs == 0:
        reason = f"{summary}; all requested Jobs already exist"
    else:
        reason = f"{summary}; creating {jobs} Job{'s' if jobs != 1 else ''}"
    return JobScaleDecision(jobs, is_active, queue_length, max_value, scale_to, max_scale, effective, running,
                            pending, settings.strategy, reason, queues)


# ---- running and pending Jobs ---------------------------------------------------------------------

@dataclass(frozen=True)
class PodView:
    phase: str
    true_conditions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class JobView:
    """A Job of the ScaledJob: whether it finished (Complete or Failed) and its pods."""

    finished: bool
    pods: tuple[PodView, ...] = ()


def is_pending(job: JobView, pending_pod_conditions: Iterable[str] | None = None) -> bool:
    """KEDA's pending test for an unfinished Job: no pod Running or Succeeded, or, with
    ``pendingPodConditions``, no pod with all of those conditions True."""
    if job.finished:
        return False
    wanted = frozenset(pending_pod_conditions or ())
    if wanted:
        return not any(wanted <= pod.true_conditions for pod in job.pods)
    return not any(pod.phase in ("Running", "Succeeded") for pod in job.pods)


def count_jobs(jobs: Iterable[JobView], pending_pod_conditions: Iterable[str] | None = None) -> tuple[int, int]:
    """(running, pending): running counts every unfinished Job, pending those of them not yet started."""
    conditions = tuple(pending_pod_conditions or ())
    unfinished = [job for job in jobs if not job.finished]
    return len(unfinished), sum(1 for job in unfinished if is_pending(job, conditions))
