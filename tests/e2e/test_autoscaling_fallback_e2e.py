"""Fallback end to end: a real ``capstan server``, a redis trigger on a Redis the test stops and
starts again, and a second ScaledObject on the shared Redis that must keep scaling on time."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.autoscaling_kit import (
    PrivateRedis,
    ReplicaTrajectory,
    condition_of,
    first_change_after,
    idle_deployment,
    scaled_object,
    status_of,
    subscribed,
)
from tests.e2e.harness import CapstanServer, wait_for

pytestmark = pytest.mark.slow

FAILURE_THRESHOLD, FALLBACK_REPLICAS, LIST_LENGTH = 3, 2, 2


@pytest.fixture
def shared_redis() -> Iterator[tuple[Any, Any]]:
    redis = pytest.importorskip("redis")
    from tests.services import service

    info = service("redis")
    client = redis.Redis.from_url(info.url)
    yield info, client
    client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis") as server:
        yield server


def _health(server: CapstanServer, name: str) -> dict[str, Any]:
    health = status_of(server, name).get("health") or {}
    assert len(health) == 1, health
    return dict(next(iter(health.values())))


def test_fallback_while_redis_is_down_and_recovery_while_another_object_keeps_scaling(
        server: CapstanServer, shared_redis: tuple[Any, Any], private_redis: PrivateRedis) -> None:
    import redis

    info, shared = shared_redis
    private = redis.Redis.from_url(private_redis.url)
    own_list, steady_list = f"e2e-fb-{uuid.uuid4().hex[:8]}", f"e2e-steady-{uuid.uuid4().hex[:8]}"
    server.apply(idle_deployment("fb-worker"))
    server.apply(idle_deployment("steady-worker"))
    with ReplicaTrajectory(server, "fb-worker") as failing, ReplicaTrajectory(server, "steady-worker") as steady:
        server.apply(scaled_object("fb", "fb-worker", [
            {"type": "redis", "metadata": {"address": private_redis.address, "listName": own_list,
                                           "listLength": str(LIST_LENGTH)}}],
            maxReplicaCount=5, cooldownPeriod=300,
            fallback={"failureThreshold": FAILURE_THRESHOLD, "replicas": FALLBACK_REPLICAS}))
        # pollingInterval 30: the steady object's reactions below come from its push follower.
        server.apply(scaled_object("steady", "steady-worker", [
            {"type": "redis", "metadata": {"address": f"{info.host}:{info.port}", "listName": steady_list,
                                           "listLength": str(LIST_LENGTH)}}],
            maxReplicaCount=5, pollingInterval=30, cooldownPeriod=300))
        for name in ("fb", "steady"):
            wait_for(lambda n=name: (condition_of(server, n, "Ready") or {}).get("status") == "True",  # type: ignore[misc]
                     timeout=60, message=f"{name} Ready")
        wait_for(lambda: subscribed(shared, steady_list), timeout=30, message="the steady object's push follower")
        assert _health(server, "fb") == {"numberOfFailures": 0, "status": "Happy"}

        # -- Redis goes away: after more than failureThreshold failed polls, the fallback's replicas.
        stopped = time.monotonic()
        private_redis.stop()
        wait_for(lambda: 2 in failing.values, timeout=60,
                 message=f"fallback to {FALLBACK_REPLICAS} replicas; trajectory {failing.values}")
        to_fallback = first_change_after(failing, stopped, FALLBACK_REPLICAS)
        assert to_fallback is not None and to_fallback >= 2.0, to_fallback  # 1 s polls: not before the 4th
        health = _health(server, "fb")
        assert health["status"] == "Failing" and health["numberOfFailures"] > FAILURE_THRESHOLD, health
        fallback = condition_of(server, "fb", "Fallback")
        assert fallback is not None and fallback["status"] == "True", fallback
        decision = status_of(server, "fb")["capstanLastDecision"]
        assert decision["action"] == "fallback" and decision["desiredReplicas"] == FALLBACK_REPLICAS, decision
        [reading] = decision["triggers"]
        assert f"cannot reach Redis at {private_redis.address}" in reading["error"], reading
        described = server.cli("describe", "scaledobject", "fb").stdout
        assert "Failing" in described and "fallback" in described

        # -- Meanwhile the other ScaledObject reacts to its pushes at once.
        reactions = []
        for total, replicas in ((1, 1), (5, math.ceil(5 / LIST_LENGTH))):
            pushed = time.monotonic()
            shared.rpush(steady_list, *[f"m{i}" for i in range(total - shared.llen(steady_list))])
            wait_for(lambda r=replicas, p=pushed: first_change_after(steady, p, r) is not None,  # type: ignore[misc]
                     timeout=30, message=f"steady at {replicas}; trajectory {steady.values}")
            reactions.append(first_change_after(steady, pushed, replicas))
            assert (condition_of(server, "fb", "Fallback") or {}).get("status") == "True"  # still failing
        assert all(r is not None and r < 2.0 for r in reactions), reactions
        assert steady.values == [0, 1, 3], steady.values

        # -- Redis is back on the same port: normal scaling resumes from the HPA math.
        private_redis.start()
        items = 6
        private.rpush(own_list, *[f"j{i}" for i in range(items)])
        expected = math.ceil(items / LIST_LENGTH)
        wait_for(lambda: failing.values[-1] == expected, timeout=60,
                 message=f"{expected} replicas after recovery; trajectory {failing.values}")
        wait_for(lambda: (condition_of(server, "fb", "Fallback") or {}).get("status") == "False", timeout=30,
                 message="Fallback False")
        wait_for(lambda: _health(server, "fb") == {"numberOfFailures": 0, "status": "Happy"}, timeout=30,
                 message="health Happy again")
        assert (condition_of(server, "fb", "Ready") or {}).get("status") == "True"
        decision = status_of(server, "fb")["capstanLastDecision"]
        assert decision["desiredReplicas"] == expected
    trajectory = failing.values
    assert trajectory[:2] == [0, FALLBACK_REPLICAS], trajectory  # straight from 0 to the fallback
    assert trajectory[-1] == expected and max(trajectory) == expected, trajectory
    private.close()
