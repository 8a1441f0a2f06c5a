"""cron scaler's push loop on a running clock: the window opens and closes on time, not at the next poll."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.integration.scaler_support import pushing

from capstan.scalers.base import MetricResult, ScalerConfig
from capstan.scalers.cron import CronScaler

BERLIN = ZoneInfo("Europe/Berlin")


def clock_starting_at(moment: datetime) -> Callable[[], float]:
    """A wall clock that reads ``moment`` now and runs at real speed."""
    offset = moment.timestamp() - time.time()
    return lambda: time.time() + offset


def scaler(clock: Callable[[], float]) -> CronScaler:
    return CronScaler(ScalerConfig(trigger_type="cron", trigger_index=0, as_of=clock, metadata={
        "timezone": "Europe/Berlin", "start": "0 9 * * 1-5", "end": "0 17 * * 1-5", "desiredReplicas": "3"}))


async def test_window_opens_on_time() -> None:
    s = scaler(clock_starting_at(datetime(2026, 6, 1, 8, 59, 59, 500000, tzinfo=BERLIN)))  # a Monday
    assert await s.get_metrics_and_activity(s.metric) == MetricResult(0.0, False)
    started = time.monotonic()
    async with pushing(s) as wakes:
        late = await wakes.wait_for(True, after=started)
    assert 0.3 < late < 2.5  # at 09:00:00, half a second after the start
    assert await s.get_metrics_and_activity(s.metric) == MetricResult(3.0, True)


async def test_window_closes_on_time() -> None:
    s = scaler(clock_starting_at(datetime(2026, 6, 1, 16, 59, 59, 500000, tzinfo=BERLIN)))
    assert await s.get_metrics_and_activity(s.metric) == MetricResult(3.0, True)
    started = time.monotonic()
    async with pushing(s) as wakes:
        late = await wakes.wait_for(False, after=started)
    assert 0.3 < late < 2.5
    assert await s.get_metrics_and_activity(s.metric) == MetricResult(0.0, False)
