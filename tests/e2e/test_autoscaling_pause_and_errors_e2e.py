"""Pause annotations and bad input end to end: a real ``capstan server``, the real redis scaler on
the shared Redis (tests.services), the CLI a user types."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.autoscaling_kit import (
    ReplicaTrajectory,
    condition_of,
    idle_deployment,
    replicas_of,
    scaled_object,
    status_of,
)
from tests.e2e.harness import CapstanServer, wait_for

pytestmark = pytest.mark.slow

PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
PAUSED = "autoscaling.keda.sh/paused"
PAUSED_SCALE_IN = "autoscaling.keda.sh/paused-scale-in"
FAST_SCALE_DOWN = {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}
HOLD_SECONDS = 5.0
"""How long a held count is watched: several 1 s polls and longer than the 3 s cooldown."""


@pytest.fixture
def redis_client() -> Iterator[tuple[Any, Any]]:
    redis = pytest.importorskip("redis")
    from tests.services import service

    info = service("redis")
    client = redis.Redis.from_url(info.url)
    yield info, client
    client.close()


def _annotate(server: CapstanServer, name: str, annotations: dict[str, str | None]) -> None:
    """A JSON merge patch of the annotations (None removes one), as ``kubectl annotate`` sends."""
    response = httpx.patch(f"{server.url}/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects/{name}",
                           content=json.dumps({"metadata": {"annotations": annotations}}), timeout=30,
                           headers={"Authorization": f"Bearer {server.token}",
                                    "Content-Type": "application/merge-patch+json"})
    response.raise_for_status()


def _fill(client: Any, key: str, length: int) -> None:
    client.delete(key)
    if length:
        client.rpush(key, *[f"m{i}" for i in range(length)])


def _holds(server: CapstanServer, deployment: str, replicas: int) -> None:
    """The count stays put for HOLD_SECONDS (a hold cannot be shown without watching it)."""
    end = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < end:
        assert replicas_of(server, deployment) == replicas
        time.sleep(0.25)


def _paused_condition(server: CapstanServer, name: str) -> dict[str, Any]:
    paused = condition_of(server, name, "Paused")
    assert paused is not None
    return paused


def test_pause_annotations_as_keda_documents_them(server: CapstanServer, redis_client: tuple[Any, Any]) -> None:
    info, client = redis_client
    key = f"e2e-pause-{uuid.uuid4().hex[:8]}"
    _fill(client, key, 10)  # listLength 2: the metrics want 5
    server.apply(idle_deployment("pz-worker"))
    with ReplicaTrajectory(server, "pz-worker") as trajectory:
        manifest = scaled_object("pz", "pz-worker", [
            {"type": "redis", "metadata": {"address": f"{info.host}:{info.port}", "listName": key,
                                           "listLength": "2"}}], maxReplicaCount=10, advanced=FAST_SCALE_DOWN)
        manifest["metadata"]["annotations"] = {PAUSED_REPLICAS: "3"}
        server.apply(manifest)

        # paused-replicas: "3" sets 3 and holds it whatever the metrics say.
        wait_for(lambda: replicas_of(server, "pz-worker") == 3, timeout=60, message="paused at 3")
        _fill(client, key, 16)
        _holds(server, "pz-worker", 3)
        assert status_of(server, "pz")["pausedReplicaCount"] == 3
        paused = _paused_condition(server, "pz")
        assert (paused["status"], paused["message"]) == (
            "True", f"paused by {PAUSED_REPLICAS}=3: holding 3 replicas")

        # Removing it resumes scaling: 16 / 2 = 8.
        _fill(client, key, 10)
        _annotate(server, "pz", {PAUSED_REPLICAS: None})
        wait_for(lambda: replicas_of(server, "pz-worker") == 5, timeout=60, message="5 replicas after resuming")
        wait_for(lambda: _paused_condition(server, "pz")["status"] == "False", timeout=30, message="Paused False")
        assert "pausedReplicaCount" not in status_of(server, "pz")

        # paused: "true" holds the current count, even with an empty list past the cooldown.
        _annotate(server, "pz", {PAUSED: "true"})
        wait_for(lambda: _paused_condition(server, "pz")["status"] == "True", timeout=30, message="Paused True")
        _fill(client, key, 0)
        _holds(server, "pz-worker", 5)

        # paused-scale-in: scaling out still works, scaling in does not.
        _annotate(server, "pz", {PAUSED: None, PAUSED_SCALE_IN: "true"})
        _fill(client, key, 16)
        wait_for(lambda: replicas_of(server, "pz-worker") == 8, timeout=60, message="scale-out to 8")
        _fill(client, key, 0)
        _holds(server, "pz-worker", 8)
        decision = status_of(server, "pz")["capstanLastDecision"]
        assert f"inactive, but scale-in is paused by {PAUSED_SCALE_IN}" in decision["reason"], decision
        assert (decision["currentReplicas"], decision["desiredReplicas"]) == (8, 8), decision

        # And without it the count comes down.
        _annotate(server, "pz", {PAUSED_SCALE_IN: None})
        wait_for(lambda: replicas_of(server, "pz-worker") == 0, timeout=120, message=f"to 0: {trajectory.values}")
    values = trajectory.values
    assert values[:3] == [0, 3, 5], values  # paused-replicas jumps straight to 3
    peak = values.index(8)
    assert values[2:peak + 1] == sorted(values[2:peak + 1]), values  # 5 -> 8 at the HPA's scale-up pace
    assert values[peak:] == sorted(values[peak:], reverse=True) and values[-1] == 0, values
    client.delete(key)


# ---- bad input ------------------------------------------------------------------------------------

def _good_keeps_scaling(server: CapstanServer, client: Any, key: str, length: int) -> None:
    _fill(client, key, length)
    expected = (length + 1) // 2
    wait_for(lambda: replicas_of(server, "good-worker") == expected, timeout=30,
             message=f"the valid ScaledObject to scale to {expected}")


def test_bad_input_is_rejected_or_not_ready_and_a_valid_object_keeps_scaling(
        server: CapstanServer, redis_client: tuple[Any, Any]) -> None:
    info, client = redis_client
    address = f"{info.host}:{info.port}"
    good_key = f"e2e-good-{uuid.uuid4().hex[:8]}"
    server.apply(idle_deployment("good-worker"))
    server.apply(idle_deployment("bad-worker"))
    server.apply(scaled_object("good", "good-worker", [
        {"type": "redis", "metadata": {"address": address, "listName": good_key, "listLength": "2"}}],
        maxReplicaCount=10))
    wait_for(lambda: (condition_of(server, "good", "Ready") or {}).get("status") == "True", timeout=60,
             message="the valid ScaledObject Ready")

    def redis_trigger(**metadata: str) -> dict[str, Any]:
        return {"type": "redis", "metadata": {"address": address, "listName": "x", **metadata}}

    # Rejected when applied: the CLI prints the server's reason, nothing is stored.
    rejected = {
        "bounds": (scaled_object("bounds", "bad-worker", [redis_trigger()], minReplicaCount=5, maxReplicaCount=3),
                   'error: <stdin>: document 1 (ScaledObject "bounds"): spec.minReplicaCount: Invalid value: '
                   "minReplicaCount (5) must not be greater than maxReplicaCount (3)"),
        "formula": (scaled_object("formula", "bad-worker", [{**redis_trigger(), "name": "queue"}], advanced={
                        "scalingModifiers": {"formula": "queue +", "target": "2"}}),
                    'error: <stdin>: document 1 (ScaledObject "formula"): spec.advanced.scalingModifiers.formula: '
                    "the formula ends where an operand was expected at position 7 in 'queue +'"),
    }
    for step, (name, (manifest, line)) in enumerate(rejected.items()):
        result = server.cli("apply", "-f", "-", stdin=json.dumps(manifest), check=False)
        assert result.returncode == 1, result
        assert result.stderr.strip().splitlines() == [line], result.stderr
        assert server.api("GET", f"/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects/{name}").status_code \
            == 404
        _good_keeps_scaling(server, client, good_key, 2 * (step + 1))

    # Accepted, then Ready=False with the reason; `capstan describe` shows it.
    not_ready = [
        ([{"type": "no-such-scaler", "metadata": {}}], "ScalerConfigError",
         'triggers[0].type: unknown trigger type "no-such-scaler"; supported: '),
        ([{"type": "redis", "metadata": {"address": address}}], "ScalerConfigError",
         "redis trigger (triggers[0]): metadata.listName is required"),
        ([{**redis_trigger(), "authenticationRef": {"name": "missing"}}], "TriggerAuthenticationNotFound",
         'triggers[0].authenticationRef: TriggerAuthentication "missing" not found in namespace "default"'),
    ]
    for step, (triggers, reason, message) in enumerate(not_ready):
        server.apply(scaled_object("bad", "bad-worker", triggers))
        wait_for(lambda r=reason: (condition_of(server, "bad", "Ready") or {}).get("reason") == r,  # type: ignore[misc]
                 timeout=60, message=f"Ready False {reason}")
        ready = condition_of(server, "bad", "Ready")
        assert ready is not None and ready["status"] == "False" and ready["message"].startswith(message), ready
        described = server.cli("describe", "scaledobject", "bad").stdout
        assert reason in described and message in " ".join(described.split()), described
        events = server.cli("events").stdout
        assert reason in events
        _good_keeps_scaling(server, client, good_key, 6 + 2 * (step + 1))
        server.cli("delete", "scaledobject", "bad")
        wait_for(lambda: server.api("GET", "/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects/bad")
                 .status_code == 404, timeout=30, message="bad deleted")
    assert replicas_of(server, "bad-worker") == 0
    assert server.process is not None and server.process.poll() is None, "the server is still running"
    assert "Traceback" not in server.log_path.read_text()
    client.delete(good_key)
