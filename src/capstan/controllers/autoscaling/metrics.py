"""Prometheus metrics of the KEDA controllers, with KEDA's metric names where KEDA has one.

All live on ``capstan.controllers.metrics.REGISTRY`` (served at /metrics). Label names follow
KEDA's: ``namespace``, ``scaledObject`` (or ``scaledJob`` via ``type``), ``scaler``,
``triggerIndex``, ``metric``.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

from capstan.controllers.autoscaling.cache import Reading
from capstan.controllers.metrics import REGISTRY

_SCALER = ["namespace", "scaledObject", "type", "scaler", "triggerIndex", "metric"]

SCALER_METRICS_VALUE = Gauge(
    "keda_scaler_metrics_value", "The current value of each scaler's metric (as read by the last poll).",
    _SCALER, registry=REGISTRY)
SCALER_ACTIVE = Gauge(
    "keda_scaler_active", "1 when the scaler is active, 0 when it is not.", _SCALER, registry=REGISTRY)
SCALER_ERRORS = Counter(
    "keda_scaler_errors", "Failed reads of a scaler.", _SCALER, registry=REGISTRY)
SCALER_LATENCY = Gauge(
    "keda_scaler_metrics_latency_seconds", "How long the last read of the scaler's metric took.",
    _SCALER, registry=REGISTRY)
SCALED_OBJECT_ERRORS = Counter(
    "keda_scaled_object_errors", "Passes of a ScaledObject that ended with an error.",
    ["namespace", "scaledObject"], registry=REGISTRY)
SCALED_JOB_ERRORS = Counter(
    "keda_scaled_job_errors", "Passes of a ScaledJob that ended with an error.",
    ["namespace", "scaledJob"], registry=REGISTRY)
SCALED_OBJECT_PAUSED = Gauge(
    "keda_scaled_object_paused", "1 when the ScaledObject is paused by an annotation.",
    ["namespace", "scaledObject"], registry=REGISTRY)
SCALE_LOOP_LATENCY = Histogram(
    "keda_internal_scale_loop_latency_seconds",
    "Delay between the time a poll was due and the time it started.", ["type"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30), registry=REGISTRY)
SCALED_OBJECT_REPLICAS = Gauge(
    "capstan_scaled_object_replicas", "The scale target's replica count seen by the last pass.",
    ["namespace", "scaledObject"], registry=REGISTRY)
SCALED_OBJECT_DESIRED = Gauge(
    "capstan_scaled_object_desired_replicas", "The replica count the last decision asked for.",
    ["namespace", "scaledObject"], registry=REGISTRY)


def forget_scaled_object(namespace: str, name: str) -> None:
    """Drop the per-object series of a ScaledObject that went away."""
    for gauge in (SCALED_OBJECT_PAUSED, SCALED_OBJECT_REPLICAS, SCALED_OBJECT_DESIRED):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


def observe_read(labels: tuple[str, ...], read: Reading) -> None:
    """The scaler series (``_SCALER`` labels, in order) for one metric read by a pass."""
    SCALER_LATENCY.labels(*labels).set(read.seconds)
    if read.error is not None:
        SCALER_ERRORS.labels(*labels).inc()
    elif read.result is not None:
        SCALER_METRICS_VALUE.labels(*labels).set(read.result.value)
        SCALER_ACTIVE.labels(*labels).set(1 if read.result.active else 0)
