"""Autoscaling end to end: a real ``capstan server``, the real redis scaler and real worker
processes that consume a real Redis list."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from tests.e2e.autoscaling_kit import ReplicaTrajectory, drain_job, scaled_object, worker_deployment
from tests.e2e.harness import CapstanServer, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_client() -> Any:
    redis = pytest.importorskip("redis")
    from tests.services import service

    info = service("redis")
    client = redis.Redis.from_url(info.url)
    yield info, client
    client.close()


def test_worker_deployment_follows_a_redis_list_from_zero_to_n_and_back(server: CapstanServer,
                                                                         redis_client: Any) -> None:
    info, client = redis_client
    queue, done = f"e2e-jobs-{uuid.uuid4().hex[:8]}", f"e2e-done-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": info.url, "LIST": queue, "DONE": done, "HOLD": "2"}
    server.apply(worker_deployment("worker", env))
    messages, list_length, maximum = 6, 2, 4
    with ReplicaTrajectory(server, "worker") as trajectory:
        server.apply(scaled_object("worker", "worker", [
            {"type": "redis", "metadata": {"address": f"{info.host}:{info.port}", "listName": queue,
                                           "listLength": str(list_length)}}], maxReplicaCount=maximum,
            cooldownPeriod=8))  # longer than a worker holds a message: in-flight work is invisible to the list
        wait_for(lambda: _condition(server, "worker", "Ready") == "True", timeout=60, message="Ready")
        client.rpush(queue, *[f"m{i}" for i in range(messages)])
        expected_peak = min(math.ceil(messages / list_length), maximum)
        wait_for(lambda: expected_peak in trajectory.values, timeout=60,
                 message=f"{expected_peak} replicas; trajectory {trajectory.values}")
        wait_for(lambda: client.llen(done) == messages, timeout=120, message="the workers to drain the list")
        wait_for(lambda: trajectory.values[-1] == 0, timeout=120, message=f"back to 0: {trajectory.values}")
    values = trajectory.values
    assert values[0] == 0 and values[-1] == 0
    assert max(values) == expected_peak, values
    assert values[1] == 1, values  # activation first, then the HPA rules
    assert sorted(x.decode() for x in client.lrange(done, 0, -1)) == sorted(f"m{i}" for i in range(messages))
    described = server.cli("describe", "scaledobject", "worker").stdout
    assert "Last Decision:" in described and "Triggers:" in described
    table = server.cli("get", "scaledobjects").stdout
    assert table.split("\n")[0].split() == ["NAME", "SCALETARGETKIND", "SCALETARGETNAME", "MIN", "MAX", "READY",
                                            "ACTIVE", "FALLBACK", "PAUSED", "TRIGGERS", "AGE"]
    explained = server.cli("scaledobject", "explain", "worker", "--value", f"s0-redis-{queue}=10").stdout
    assert "Dry run: 0 -> 1 replicas (activate)" in explained, explained


def test_scaled_job_drains_a_redis_list_one_job_per_batch(server: CapstanServer, redis_client: Any) -> None:
    info, client = redis_client
    queue, done = f"e2e-batch-{uuid.uuid4().hex[:8]}", f"e2e-bdone-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": info.url, "LIST": queue, "DONE": done, "BATCH": "2"}
    server.apply(drain_job("drain", env, [
        {"type": "redis", "metadata": {"address": f"{info.host}:{info.port}", "listName": queue,
                                       "listLength": "2"}}]))
    client.rpush(queue, *[f"b{i}" for i in range(6)])
    wait_for(lambda: client.llen(done) == 6, timeout=120, message="the jobs to drain the list")
    jobs = server.get_json("/apis/batch/v1/namespaces/default/jobs?labelSelector=scaledjob.keda.sh/name=drain")
    assert len(jobs["items"]) >= 3  # ceil(6 / 2) batches
    assert all(j["metadata"]["ownerReferences"][0]["name"] == "drain" for j in jobs["items"])


def _condition(server: CapstanServer, name: str, kind: str) -> str | None:
    obj = server.get_json(f"/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects/{name}")
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None
