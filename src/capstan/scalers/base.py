"""The scaler interface (after KEDA's ``pkg/scalers/scaler.go``), in Python.

A scaler reads one trigger's source. The ScaledObject / ScaledJob controllers build one per
trigger, await its optional ``prepare()``, ask it for its metric specs once, and for values on
every poll. A *push* scaler can
also wake the controller the moment its source changes, so reaction does not wait for the next
poll; polling remains the fallback.

Scalers never touch the Store: the controller resolves TriggerAuthentication secrets and the
target's container environment and hands them over in ``ScalerConfig``. Pod resource usage (for
the cpu and memory scalers) reaches them through the ``PodMetrics`` protocol, which the
controller layer implements per mode (local processes embedded, metrics API on Kubernetes).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

TargetType = Literal["AverageValue", "Value", "Utilization"]


class ScalerError(Exception):
    """A scaler could not read its source (broker down, query failed, timeout)."""


class ScalerConfigError(ScalerError):
    """The trigger's metadata or authentication is wrong; the message names the field."""


@dataclass(frozen=True)
class PodUsage:
    """One pod's current usage and requests, cpu in millicores and memory in bytes."""

    cpu_millis: int
    memory_bytes: int
    cpu_request_millis: int = 0
    memory_request_bytes: int = 0
    ready: bool = True


class PodMetrics(Protocol):
    """Resource usage of the pods a scale target selects."""

    async def usage(self, namespace: str, label_selector: str, container: str | None = None) -> list[PodUsage]: ...


@dataclass(frozen=True)
class ScalerConfig:
    """Everything a scaler needs, resolved by the controller."""

    trigger_type: str
    trigger_index: int
    metadata: Mapping[str, str]
    trigger_name: str | None = None
    auth_params: Mapping[str, str] = field(default_factory=dict)
    """Parameters from the TriggerAuthentication (secretTargetRef, configMapTargetRef, env, ...)."""
    resolved_env: Mapping[str, str] = field(default_factory=dict)
    """The scale target's container environment, for KEDA's ``...FromEnv`` metadata."""
    metric_type: TargetType = "AverageValue"
    namespace: str = "default"
    scalable_name: str = ""
    scalable_kind: str = "ScaledObject"
    target_selector: str = ""
    """Label selector of the scale target's pods (cpu/memory scalers)."""
    timeout_seconds: float = 3.0
    """Upper bound of one read; KEDA's default HTTP timeout is 3 s."""
    pod_metrics: PodMetrics | None = None
    as_of: Callable[[], float] | None = None
    """A wall clock for time-based scalers (cron); None means ``time.time``."""

    @property
    def label(self) -> str:
        """How messages name this trigger: ``redis trigger "jobs" (triggers[0])``."""
        named = f' "{self.trigger_name}"' if self.trigger_name else ""
        return f"{self.trigger_type} trigger{named} (triggers[{self.trigger_index}])"


@dataclass(frozen=True)
class MetricSpec:
    """What one metric of a trigger is compared against (KEDA's GetMetricSpecForScaling)."""

    name: str
    """``s{index}-{type}-{detail}``, unique within the ScaledObject; the ``status.health`` key."""
    target: float
    activation_target: float = 0.0
    target_type: TargetType = "AverageValue"


@dataclass(frozen=True)
class MetricResult:
    """One read (KEDA's GetMetricsAndActivity): the metric value and whether the trigger is active."""

    value: float
    active: bool


WakeCallback = Callable[[bool], None]
"""Called by a push scaler with its activity whenever its source changes."""


class Scaler(abc.ABC):
    """One trigger's reader. Implementations keep connections and reuse them across reads."""

    def __init__(self, config: ScalerConfig) -> None:
        self.config = config

    async def prepare(self) -> None:  # noqa: B027 - optional hook; most scalers know their specs at once
        """I/O the scaler needs before ``metric_specs()`` can answer (the external scaler asks its
        server). The controller awaits it once before the first ``metric_specs()``, bounded by the
        timeout; a ScalerError here counts as a failed read of the trigger and it is retried on the
        next pass. Scalers that override it must make ``metric_specs()`` cheap afterwards."""

    @property
    def needs_prepare(self) -> bool:
        return type(self).prepare is not Scaler.prepare

    @abc.abstractmethod
    def metric_specs(self) -> list[MetricSpec]:
        """The metrics this trigger contributes, fixed for the scaler's life (after ``prepare()``)."""

    @abc.abstractmethod
    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        """Read the source now. Raise ScalerError (never hang: bound every wait by
        ``config.timeout_seconds``)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook; most scalers hold nothing to close
        """Release connections; called when the trigger or its ScaledObject goes."""

    @property
    def is_push(self) -> bool:
        return isinstance(self, PushScaler)


class PushScaler(Scaler):
    """A scaler whose source can tell us about changes (KEDA's PushScaler, external-push)."""

    @abc.abstractmethod
    async def run(self, wake: WakeCallback) -> None:
        """Follow the source until cancelled; call ``wake(active)`` when it changes. Reconnect
        on errors with back-off; never raise except CancelledError."""


ScalerFactory = Callable[[ScalerConfig], Scaler]
Opener = Callable[[ScalerConfig], Awaitable[Scaler]]
