"""redis-streams trigger: KEDA's three modes and their targets (no I/O)."""

from __future__ import annotations

import pytest

from capstan.scalers.base import ScalerConfig, ScalerConfigError
from capstan.scalers.redis_streams import RedisStreamsScaler
from capstan.scalers.registry import build_scaler


def scaler(**metadata: str) -> RedisStreamsScaler:
    built = build_scaler(ScalerConfig(trigger_type="redis-streams", trigger_index=0,
                                      metadata={"address": "r:6379", **metadata}))
    assert isinstance(built, RedisStreamsScaler)
    return built


def test_length_mode_without_a_group() -> None:
    s = scaler(stream="orders")
    assert (s.mode, s.target) == ("length", 5)
    [spec] = s.metric_specs()
    assert (spec.name, spec.target, spec.activation_target) == ("s0-redis-streams-orders", 5.0, 0.0)
    assert scaler(stream="orders", streamLength="50", pendingEntriesCount="7").target == 50


def test_pending_mode_with_a_group() -> None:
    s = scaler(stream="orders", consumerGroup="workers", pendingEntriesCount="10", streamLength="99")
    assert (s.mode, s.target) == ("pending", 10)
    assert scaler(stream="orders", consumerGroup="workers").target == 5


def test_lag_mode_with_a_group_and_lag_count() -> None:
    s = scaler(stream="orders", consumerGroup="workers", lagCount="12", activationLagCount="2")
    assert (s.mode, s.target) == ("lag", 12)
    assert s.metric_specs()[0].activation_target == 2.0
    # lagCount without a group means nothing: KEDA falls back to the stream length.
    assert scaler(stream="orders", lagCount="12").mode == "length"
    # lagCount 0 is "unset" for KEDA: pending mode.
    assert scaler(stream="orders", consumerGroup="workers", lagCount="0").mode == "pending"


@pytest.mark.parametrize(("metadata", "message"), [
    ({}, "metadata.stream is required"),
    ({"stream": "s", "streamLength": "0"}, "metadata.streamLength must be greater than 0"),
    ({"stream": "s", "consumerGroup": "g", "pendingEntriesCount": "-1"}, "pendingEntriesCount must be greater"),
    ({"stream": "s", "activationLagCount": "x"}, "metadata.activationLagCount: 'x' is not an integer"),
])
def test_bad_metadata_is_rejected(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ScalerConfigError, match=message):
        scaler(**metadata)
