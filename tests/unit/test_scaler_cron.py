"""cron trigger: metadata, metric name and the window arithmetic on a controlled clock."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.cron import CronScaler
from capstan.scalers.registry import build_scaler

BERLIN = ZoneInfo("Europe/Berlin")


def at(*fields: int) -> float:
    return datetime(*fields, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def scaler(now: float = 0.0, **metadata: str) -> CronScaler:
    values = {"timezone": "Europe/Berlin", "start": "0 9 * * 1-5", "end": "0 17 * * 1-5", "desiredReplicas": "4"}
    values.update(metadata)
    built = build_scaler(ScalerConfig(trigger_type="cron", trigger_index=0, metadata=values, as_of=lambda: now))
    assert isinstance(built, CronScaler)
    return built


def test_metric_spec_targets_one_per_replica_with_keda_name() -> None:
    [spec] = scaler(start="*/5 9-17 * * 1,3", end="0 18 * * *").metric_specs()
    assert spec.name == "s0-cron-Europe-Berlin-xSl59-17xx1Cm3-018xxx"
    assert (spec.target, spec.target_type) == (1.0, "AverageValue")


@pytest.mark.parametrize(("moment", "active"), [
    ((2026, 6, 1, 8, 59, 59), False),   # Monday, just before the window
    ((2026, 6, 1, 9, 0, 0), True),      # the start tick itself is inside
    ((2026, 6, 1, 12, 30, 0), True),
    ((2026, 6, 1, 16, 59, 59), True),
    ((2026, 6, 1, 17, 0, 0), False),    # the end tick is outside
    ((2026, 6, 6, 12, 0, 0), False),    # Saturday
])
def test_window_is_start_inclusive_end_exclusive(moment: tuple[int, ...], active: bool) -> None:
    assert scaler().active_at(at(*moment)) is active


def test_window_across_midnight() -> None:
    night = scaler(start="0 22 * * *", end="0 6 * * *")
    assert night.active_at(at(2026, 6, 1, 23, 0))
    assert night.active_at(at(2026, 6, 2, 5, 59))
    assert not night.active_at(at(2026, 6, 2, 6, 0))
    assert not night.active_at(at(2026, 6, 2, 21, 59))


def test_timezone_decides_the_window() -> None:
    tokyo = scaler(timezone="Asia/Tokyo", start="0 9 * * *", end="0 10 * * *")
    assert tokyo.active_at(datetime(2026, 6, 1, 9, 30, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp())
    assert not tokyo.active_at(at(2026, 6, 1, 9, 30))  # 16:30 in Tokyo


async def test_value_is_desired_replicas_inside_and_zero_outside() -> None:
    inside = scaler(now=at(2026, 6, 1, 10, 0))
    result = await inside.get_metrics_and_activity(inside.metric)
    assert (result.value, result.active) == (4.0, True)
    outside = scaler(now=at(2026, 6, 1, 18, 0))
    result = await outside.get_metrics_and_activity(outside.metric)
    assert (result.value, result.active) == (0.0, False)


def test_next_change_is_the_nearest_tick() -> None:
    assert scaler().next_change_after(at(2026, 6, 1, 8, 0)) == at(2026, 6, 1, 9, 0)
    assert scaler().next_change_after(at(2026, 6, 1, 9, 0)) == at(2026, 6, 1, 17, 0)


@pytest.mark.parametrize(("metadata", "message"), [
    ({"timezone": "Mars/Olympus"}, "metadata.timezone: 'Mars/Olympus' is not an IANA time zone"),
    ({"start": "0 0 9 * * *"}, "metadata.start: '0 0 9 \\* \\* \\*' is not a 5-field cron expression"),
    ({"end": "soon"}, "metadata.end: 'soon' is not a 5-field cron expression"),
    ({"end": "0 9 * * 1-5"}, "metadata.start and metadata.end must differ"),
    ({"desiredReplicas": "0"}, "desiredReplicas must not be 0"),
    ({"desiredReplicas": "many"}, "metadata.desiredReplicas: 'many' is not an integer"),
    ({"timezone": ""}, "metadata.timezone is required"),
])
def test_bad_metadata_is_rejected(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match=message):
        scaler(**metadata)


def test_cron_is_a_push_scaler() -> None:
    assert scaler().is_push
