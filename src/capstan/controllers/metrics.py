"""The process's Prometheus registry. Controllers define their metrics on ``REGISTRY`` (with
KEDA's and Kueue's metric names where those projects have one); the API serves ``render()`` at
/metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

BUILD_INFO = Gauge("capstan_build_info", "Capstan build information.", ["version"], registry=REGISTRY)


def render() -> bytes:
    """The text exposition format of every metric in ``REGISTRY``."""
    return generate_latest(REGISTRY)
