"""``cpu`` and ``memory``: resource usage of the scale target's pods (KEDA's ``cpu_memory_scaler.go``).

In KEDA these triggers only describe an HPA ``Resource`` (or ``ContainerResource`` with
``containerName``) metric and the HPA reads the usage itself. Capstan has no separate HPA in
embedded mode, so the scaler reads the usage through ``config.pod_metrics`` and reports it the
way the HPA computes it:

- ``Utilization`` (``value`` is a whole percent): ``sum(usage) / sum(requests) * 100`` over the
  ready pods that report usage. A ready pod without a request is an error, as in the HPA.
- ``AverageValue`` (``value`` is a quantity per pod, e.g. ``500m`` or ``256Mi``): the total usage
  of the ready pods, cpu in cores and memory in bytes. Like every ``AverageValue`` metric the value
  is a total and the target is per pod, so ``ceil(total / target)`` is the HPA's
  ``ceil(average / target * ready pods)``.

These triggers are always active (KEDA returns ``true``): on their own they never scale a
workload to zero, and the ScaledObject webhook rejects ``minReplicaCount: 0`` with only them.

The metric type comes from the trigger's ``metricType``; the controller passes ``Utilization``
when it is unset (KEDA itself rejects an unset metricType for these triggers). The old
``metadata.type`` is rejected as in KEDA 2.18+.
"""

from __future__ import annotations

import asyncio

from capstan.api.quantity import QuantityError, parse_quantity
from capstan.scalers import _metadata as md
from capstan.scalers.base import (
    MetricResult,
    MetricSpec,
    PodUsage,
    Scaler,
    ScalerConfig,
    ScalerConfigError,
    ScalerError,
)
from capstan.scalers.registry import register


def utilization_percent(resource: str, pods: list[PodUsage]) -> float:
    """The HPA's average utilization of the ready pods, in percent of their requests."""
    ready = [p for p in pods if p.ready]
    if not ready:
        return 0.0
    usage = requests = 0
    for pod in ready:
        request = pod.cpu_request_millis if resource == "cpu" else pod.memory_request_bytes
        if request <= 0:
            raise ScalerError(f"missing request for {resource} in one of the target's pods: "
                              f"Utilization needs resources.requests.{resource} on every container")
        usage += pod.cpu_millis if resource == "cpu" else pod.memory_bytes
        requests += request
    return usage * 100 / requests


def total_usage(resource: str, pods: list[PodUsage]) -> float:
    """Usage summed over the ready pods: cores for cpu, bytes for memory."""
    ready = [p for p in pods if p.ready]
    if resource == "cpu":
        return sum(p.cpu_millis for p in ready) / 1000
    return float(sum(p.memory_bytes for p in ready))


@register("cpu", "memory")
class CpuMemoryScaler(Scaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        self.resource = config.trigger_type
        if config.metadata.get("type"):
            raise ScalerConfigError(f"{config.label}: metadata.type was removed in KEDA 2.18; "
                                    "set the trigger's metricType (Utilization or AverageValue) instead")
        self.metric_type = config.metric_type
        value = md.required(config, "value")
        if self.metric_type == "Utilization":
            try:
                self.target = float(int(value))
            except ValueError:
                raise ScalerConfigError(f"{config.label}: metadata.value: {value!r} is not a whole percent "
                                        "(metricType Utilization)") from None
        elif self.metric_type == "AverageValue":
            try:
                self.target = float(parse_quantity(value))
            except QuantityError:
                raise ScalerConfigError(f"{config.label}: metadata.value: {value!r} is not a quantity "
                                        "(metricType AverageValue), e.g. 500m or 256Mi") from None
        else:
            raise ScalerConfigError(f"{config.label}: metricType {self.metric_type!r} is not supported for "
                                    f"{self.resource}; allowed values are 'Utilization' or 'AverageValue'")
        if self.target <= 0:
            raise ScalerConfigError(f"{config.label}: metadata.value must be greater than 0")
        self.container = md.raw(config, "containerName")
        self.metric = md.metric_name(config, self.container or "")

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=self.metric, target=self.target, target_type=self.metric_type)]

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        source = self.config.pod_metrics
        if source is None:
            raise ScalerError(f"{self.config.label}: no pod metrics are available to this scaler")
        if not self.config.target_selector:
            raise ScalerError(f"{self.config.label}: the scale target has no pod selector")
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                pods = await source.usage(self.config.namespace, self.config.target_selector, self.container)
        except TimeoutError as exc:
            raise ScalerError(f"{self.config.label}: pod metrics did not answer within "
                              f"{self.config.timeout_seconds:g}s") from exc
        except ScalerError as exc:  # the source's own words (e.g. no metrics API), named for this trigger
            raise ScalerError(f"{self.config.label}: {exc}") from exc
        try:
            if self.metric_type == "Utilization":
                value = utilization_percent(self.resource, pods)
            else:
                value = total_usage(self.resource, pods)
        except ScalerError as exc:
            raise ScalerError(f"{self.config.label}: {exc}") from exc
        return MetricResult(value=value, active=True)
