"""``cron``: a replica count during a recurring time window (KEDA's ``cron_scaler.go``).

``start`` and ``end`` are 5-field cron expressions evaluated in ``timezone`` (IANA). The trigger
is active from a ``start`` tick up to (not including) the next ``end`` tick: KEDA's rule is that
we are inside the window exactly when the next ``end`` comes before the next ``start``, which
also handles windows that wrap midnight. Active: value ``desiredReplicas``; inactive: 0. The
target is 1 (``AverageValue`` unless the trigger's metricType says otherwise), so the HPA wants
exactly ``desiredReplicas`` pods inside the window.

The scaler is also a push scaler: it sleeps until the next ``start`` or ``end`` tick and wakes
the controller then, so a window opens on time instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from capstan.scalers import _metadata as md
from capstan.scalers.base import (
    MetricResult,
    MetricSpec,
    PushScaler,
    ScalerConfig,
    ScalerConfigError,
    WakeCallback,
)
from capstan.scalers.registry import register

MAX_SLEEP_SECONDS = 30.0
"""Re-read the clock at least this often, so a changed wall clock (or test clock) is noticed."""


def _keda_cron_text(expression: str) -> str:
    """KEDA's metric-name spelling of a cron expression ("*/5 * * * *" -> "xSl5xxxx")."""
    text = expression.replace(" ", "").replace("*", "x").replace("/", "Sl").replace("?", "Qm").replace(",", "Cm")
    for char in ".:%()":
        text = text.replace(char, "-")
    return text


def _schedule(config: ScalerConfig, name: str) -> str:
    expression = md.required(config, name).strip()
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ScalerConfigError(f"{config.label}: metadata.{name}: {expression!r} is not a 5-field cron "
                                "expression (minute hour day-of-month month day-of-week)")
    return expression


@register("cron")
class CronScaler(PushScaler):
    def __init__(self, config: ScalerConfig) -> None:
        super().__init__(config)
        zone = md.required(config, "timezone")
        try:
            self.zone = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScalerConfigError(f"{config.label}: metadata.timezone: {zone!r} is not an IANA time zone "
                                    "(e.g. Europe/Berlin)") from None
        self.timezone = zone
        self.start = _schedule(config, "start")
        self.end = _schedule(config, "end")
        if self.start == self.end:
            raise ScalerConfigError(f"{config.label}: metadata.start and metadata.end must differ")
        self.desired_replicas = md.integer(config, "desiredReplicas")
        if self.desired_replicas == 0:
            raise ScalerConfigError(f"{config.label}: metadata.desiredReplicas must not be 0")
        self.metric = md.metric_name(config, self.timezone.replace("/", "-").replace(".", "-"),
                                     _keda_cron_text(self.start), _keda_cron_text(self.end))

    def _now(self) -> float:
        return self.config.as_of() if self.config.as_of else time.time()

    def _next(self, expression: str, now: datetime) -> datetime:
        result: datetime = croniter(expression, now).get_next(datetime)
        return result

    def active_at(self, timestamp: float) -> bool:
        """Inside the window when the next end tick comes before the next start tick."""
        now = datetime.fromtimestamp(timestamp, self.zone)
        return self._next(self.end, now) < self._next(self.start, now)

    def next_change_after(self, timestamp: float) -> float:
        """The next start or end tick after ``timestamp`` (epoch seconds)."""
        now = datetime.fromtimestamp(timestamp, self.zone)
        return min(self._next(self.start, now), self._next(self.end, now)).timestamp()

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(name=self.metric, target=1.0, target_type=self.config.metric_type)]

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        active = self.active_at(self._now())
        return MetricResult(value=float(self.desired_replicas) if active else 0.0, active=active)

    async def run(self, wake: WakeCallback) -> None:
        active = self.active_at(self._now())
        while True:
            now = self._now()
            await asyncio.sleep(min(max(self.next_change_after(now) - now, 0.0), MAX_SLEEP_SECONDS))
            current = self.active_at(self._now())
            if current != active:
                active = current
                wake(active)
