"""The ScaledObject controller on a real SqliteStore with the embedded controllers, driven by a
test scaler whose values the test sets (tests/integration/autoscaling_kit.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.integration.autoscaling_kit import (
    HANG,
    VALUES,
    Trajectory,
    cluster,
    deployment,
    push,
    scaled_object,
    trigger,
    unique,
)
from tests.integration.workloads_kit import eventually

from capstan.api.errors import InvalidError
from capstan.controllers.autoscaling import AutoscalingOptions
from capstan.controllers.autoscaling.explain import explain_scaled_object
from capstan.controllers.events import utcnow


async def test_replicas_rise_with_the_metric_and_return_to_zero_after_the_cooldown(tmp_path: Path) -> None:
    key = unique("queue")
    VALUES[key] = 0
    async with cluster(tmp_path) as c:
        await c.store.create(deployment("worker"))
        async with Trajectory(c.store, "worker") as trajectory:
            await c.store.create(scaled_object("worker-so", "worker", [trigger(key)], maxReplicaCount=5))
            await eventually(lambda: c.condition("scaledobjects", "worker-so", "Ready"), what="first pass")
            VALUES[key] = 30  # target 10 per replica -> 3
            await eventually(lambda: _equals(c.replicas("worker"), 3), what="3 replicas")
            VALUES[key] = 0
            await eventually(lambda: _equals(c.replicas("worker"), 0), what="back to 0")
        # 0 -> 1 (activation) -> 3 (HPA) -> 1 (walk down after the cooldown) -> 0
        assert trajectory.values == [0, 1, 3, 1, 0]
        so = await c.get("scaledobjects", "worker-so")
        status = so["status"]
        assert status["originalReplicaCount"] == 0
        assert status["externalMetricNames"] == [f"s0-capstan-test-{key}"]
        assert status["scaleTargetKind"] == "apps/v1.Deployment"
        assert status["capstanLastDecision"]["desiredReplicas"] == 0
        assert so["metadata"]["finalizers"] == ["finalizer.keda.sh"]
        reasons = [(e["reason"], e["message"]) for e in await c.events_for("worker-so")]
        activated = [m for r, m in reasons if r == "KEDAScaleTargetActivated"]
        assert activated and activated[0].startswith("Scaled Deployment/worker from 0 to 1: activated by "
                                                     f"s0-capstan-test-{key}")
        rescaled = [m for r, m in reasons if r == "SuccessfulRescale"]
        assert any("from 1 to 3" in m and "value 30 / target 10" in m for m in rescaled), rescaled
        assert any(r == "KEDAScaleTargetDeactivated" and "from 1 to 0" in m for r, m in reasons), reasons


async def _equals(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_paused_replicas_sets_and_holds_the_count_and_paused_holds(tmp_path: Path) -> None:
    key = unique("queue")
    VALUES[key] = 0
    async with cluster(tmp_path) as c:
        await c.store.create(deployment("web"))
        await c.store.create(scaled_object("web-so", "web", [trigger(key)], metadata={
            "annotations": {"autoscaling.keda.sh/paused-replicas": "2"}}))
        await eventually(lambda: _equals(c.replicas("web"), 2), what="paused at 2")
        VALUES[key] = 90
        await asyncio.sleep(2.5)  # a few polls: the annotation holds the count
        assert await c.replicas("web") == 2
        so = await c.get("scaledobjects", "web-so")
        assert so["status"]["pausedReplicaCount"] == 2
        paused = await c.condition("scaledobjects", "web-so", "Paused")
        assert paused is not None and paused["status"] == "True"
        assert paused["message"] == "paused by autoscaling.keda.sh/paused-replicas=2: holding 2 replicas"

        # Replace it with paused: true: the count is held where it is.
        so["metadata"]["annotations"] = {"autoscaling.keda.sh/paused": "true"}
        await c.store.update(so)
        await asyncio.sleep(2.5)
        assert await c.replicas("web") == 2
        # Unpause: scaling resumes (90 / 10 = 9, in HPA steps).
        so = await c.get("scaledobjects", "web-so")
        so["metadata"]["annotations"] = {}
        await c.store.update(so)
        await eventually(lambda: _equals(c.replicas("web"), 9), what="9 replicas after unpausing")
        unpaused = await c.condition("scaledobjects", "web-so", "Paused")
        assert unpaused is not None and unpaused["status"] == "False"
        assert "pausedReplicaCount" not in (await c.get("scaledobjects", "web-so"))["status"]


async def test_fallback_after_the_failure_threshold_and_recovery(tmp_path: Path) -> None:
    key = unique("queue")
    VALUES[key] = 20
    async with cluster(tmp_path) as c:
        await c.store.create(deployment("api"))
        await c.store.create(scaled_object("api-so", "api", [trigger(key)],
                                           fallback={"failureThreshold": 2, "replicas": 4}))
        await eventually(lambda: _equals(c.replicas("api"), 2), what="2 replicas from the metric")
        VALUES[key] = RuntimeError("broker unreachable")
        await eventually(lambda: _equals(c.replicas("api"), 4), what="the fallback's 4 replicas")

        async def failing_health() -> dict | None:  # type: ignore[type-arg]
            # The status write may trail the scale write that used the same decision.
            so = await c.get("scaledobjects", "api-so")
            health = so["status"]["health"][f"s0-capstan-test-{key}"]
            return health if health["numberOfFailures"] > 2 else None

        health = await eventually(failing_health, what="the failures counted in status.health")
        assert health["status"] == "Failing" and health["numberOfFailures"] > 2
        fallback = await c.condition("scaledobjects", "api-so", "Fallback")
        assert fallback is not None and fallback["status"] == "True"
        VALUES[key] = 20

        async def recovered() -> bool:
            obj = await c.get("scaledobjects", "api-so")
            return obj["status"]["health"][f"s0-capstan-test-{key}"] == {"numberOfFailures": 0, "status": "Happy"}

        await eventually(recovered, what="health back to Happy")
        fallback = await c.condition("scaledobjects", "api-so", "Fallback")
        assert fallback is not None and fallback["status"] == "False"


async def test_a_hung_scaler_does_not_delay_another_scaled_object(tmp_path: Path) -> None:
    stuck, healthy = unique("stuck"), unique("healthy")
    VALUES[stuck] = HANG
    VALUES[healthy] = 0
    async with cluster(tmp_path, AutoscalingOptions(scaler_timeout_seconds=60)) as c:
        await c.store.create(deployment("slow"))
        await c.store.create(deployment("fast"))
        await c.store.create(scaled_object("slow-so", "slow", [trigger(stuck)]))
        await c.store.create(scaled_object("fast-so", "fast", [trigger(healthy)]))
        await eventually(lambda: c.condition("scaledobjects", "fast-so", "Ready"), what="fast-so's first pass")
        started = time.monotonic()
        VALUES[healthy] = 20
        await eventually(lambda: _equals(c.replicas("fast"), 2), what="fast scaled while slow hangs")
        # The stuck object's read is bounded only at 61 s: it is still hanging now.
        assert time.monotonic() - started < 60
        assert (await c.get("scaledobjects", "slow-so")).get("status", {}).get("capstanLastDecision") is None


async def test_push_wake_up_reacts_without_waiting_for_the_poll(tmp_path: Path) -> None:
    key = unique("pushed")
    VALUES[key] = 0
    async with cluster(tmp_path) as c:
        await c.store.create(deployment("pusher"))
        await c.store.create(scaled_object("pusher-so", "pusher", [
            {"type": "capstan-test-push", "name": "q", "metadata": {"key": key}}], pollingInterval=30))
        await eventually(lambda: c.condition("scaledobjects", "pusher-so", "Ready"), what="first pass")
        await asyncio.sleep(0.5)  # the push follower is subscribed after the first pass
        started = time.monotonic()
        push(key, 5)
        await eventually(lambda: _equals(c.replicas("pusher"), 1), within=10, what="activation by push")
        reaction = time.monotonic() - started
        assert reaction < 1.0, f"reacted after {reaction:.2f}s"


@pytest.mark.parametrize(("case", "reason", "message"), [
    ("unknown-type", "ScalerConfigError", 'triggers[0].type: unknown trigger type "no-such-scaler"; supported: '),
    ("missing-metadata", "ScalerConfigError", 'capstan-test trigger "q" (triggers[0]): metadata.key is required'),
    ("bad-auth", "TriggerAuthenticationNotFound",
     'triggers[0].authenticationRef: TriggerAuthentication "missing" not found in namespace "default"'),
    ("no-target", "ScaleTargetNotFound", 'scaleTargetRef: Deployment "ghost" not found in namespace "default"'),
    ("not-scalable", "ScaleTargetNotScalable", 'scaleTargetRef: ConfigMap "settings" has no scale subresource'),
])
async def test_bad_input_is_not_ready_with_a_clear_message_and_others_keep_scaling(
        tmp_path: Path, case: str, reason: str, message: str) -> None:
    good = unique("good")
    VALUES[good] = 0
    async with cluster(tmp_path) as c:
        await c.store.create(deployment("target"))
        await c.store.create(deployment("other"))
        await c.store.create({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "settings", "namespace": "default"}, "data": {}})
        bad = {
            "unknown-type": scaled_object("bad", "target", [{"type": "no-such-scaler", "metadata": {}}]),
            "missing-metadata": scaled_object("bad", "target", [{"type": "capstan-test", "name": "q"}]),
            "bad-auth": scaled_object("bad", "target", [{**trigger(unique("k")),
                                                        "authenticationRef": {"name": "missing"}}]),
            "no-target": scaled_object("bad", "ghost", [trigger(unique("k"))]),
            "not-scalable": scaled_object("bad", "settings", [trigger(unique("k"))]),
        }[case]
        if case == "not-scalable":
            bad["spec"]["scaleTargetRef"].update(apiVersion="v1", kind="ConfigMap")
        await c.store.create(bad)
        await c.store.create(scaled_object("good", "other", [trigger(good)]))
        ready = await eventually(lambda: c.condition("scaledobjects", "bad", "Ready"), what="bad's Ready condition")
        assert ready["status"] == "False"
        assert ready["reason"] == reason
        assert ready["message"].startswith(message), ready["message"]
        warnings = [e for e in await c.events_for("bad") if e["type"] == "Warning"]
        assert warnings and warnings[0]["reason"] == reason
        VALUES[good] = 30
        await eventually(lambda: _equals(c.replicas("other"), 3), what="the good object keeps scaling")


async def test_apply_time_rejections_name_the_field(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.store.create(deployment("web"))
        with pytest.raises(InvalidError) as bounds:
            await c.store.create(scaled_object("bounds", "web", [trigger("x")], minReplicaCount=5, maxReplicaCount=3))
        assert ("spec.minReplicaCount: Invalid value: minReplicaCount (5) must not be greater than "
                "maxReplicaCount (3)" in bounds.value.message)
        with pytest.raises(InvalidError) as formula:
            await c.store.create(scaled_object("formula", "web", [trigger("x")], advanced={
                "scalingModifiers": {"formula": "x +", "target": "2"}}))
        assert "spec.advanced.scalingModifiers.formula: " in formula.value.message
        assert "'x +'" in formula.value.message

        await c.store.create(scaled_object("first", "web", [trigger("x")]))
        await eventually(lambda: c.condition("scaledobjects", "first", "Ready"), what="first's pass")
        with pytest.raises(InvalidError) as second:
            await c.store.create(scaled_object("second", "web", [trigger("y")]))
        assert second.value.message == ('ScaledObject "second" is invalid: spec.scaleTargetRef: the workload '
                                        "'web' of type 'Deployment' is already managed by the ScaledObject 'first'")


async def test_restore_to_original_replica_count_on_delete(tmp_path: Path) -> None:
    key = unique("q")
    VALUES[key] = 40
    async with cluster(tmp_path) as c:
        await c.store.create(deployment("keep", replicas=2))
        await c.store.create(scaled_object("keep-so", "keep", [trigger(key)],
                                           advanced={"restoreToOriginalReplicaCount": True}))
        await eventually(lambda: _equals(c.replicas("keep"), 4), what="4 replicas")
        await c.store.delete(c.rt("scaledobjects"), "keep-so", "default")

        async def gone() -> bool:
            items = (await c.store.list(c.rt("scaledobjects"), "default")).items
            return not items

        await eventually(gone, what="the ScaledObject to go")
        assert await c.replicas("keep") == 2


async def test_explain_is_a_dry_run_with_the_same_core(tmp_path: Path) -> None:
    key = unique("q")
    VALUES[key] = 0
    async with cluster(tmp_path) as c:
        await c.store.create(deployment("x"))
        await c.store.create(scaled_object("x-so", "x", [trigger(key)], maxReplicaCount=10))
        await eventually(lambda: c.condition("scaledobjects", "x-so", "Ready"), what="first pass")
        answer = await explain_scaled_object(c.store, "default", "x-so", {key: 45}, utcnow())
        assert answer["dryRun"] is True
        assert answer["desiredReplicas"] == 1 and answer["currentReplicas"] == 0
        assert answer["reason"].startswith(f"activated by s0-capstan-test-{key}: scaling from 0 to 1")
        assert answer["triggers"][0]["value"] == 45 and answer["triggers"][0]["active"] is True
        assert await c.replicas("x") == 0  # nothing was touched
