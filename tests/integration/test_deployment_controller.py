"""The Deployment controller against the real SQLite store, with a simulated kubelet."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.workloads_kit import Kubelet, PodWatcher, condition, eventually, open_store, phase_of, running

from capstan.controllers.deployment import DeploymentController
from capstan.core.workloads.deployment import TEMPLATE_HASH_LABEL
from capstan.store.base import Obj, Store


def manifest(replicas: int, image: str = "v1", strategy: dict[str, Any] | None = None) -> Obj:
    spec: dict[str, Any] = {
        "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "main", "image": image, "command": ["sleep", "60"]}]}},
    }
    if strategy:
        spec["strategy"] = strategy
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": spec}


async def start_pending(kubelet: Kubelet) -> int:
    """Run (ready) every pod the controller created that has not started yet."""
    started = 0
    for pod in await kubelet.pods(selector="app=web"):
        if phase_of(pod) == "Pending" and not pod["metadata"].get("deletionTimestamp"):
            await kubelet.run(pod)
            started += 1
    return started


async def get_deployment(store: Store) -> Obj:
    return await store.get(store.registry.lookup("deployments"), "web", "default")


async def settled(store: Store, kubelet: Kubelet, replicas: int) -> Obj | None:
    await start_pending(kubelet)
    dep = await get_deployment(store)
    status = dep.get("status") or {}
    pods = [p for p in await kubelet.pods(selector="app=web") if phase_of(p) == "Running"]
    current = status.get("observedGeneration") == dep["metadata"]["generation"]
    if current and len(pods) == replicas and status.get("availableReplicas") == replicas \
            and status.get("replicas") == replicas:
        return dep
    return None


async def test_scale_up_and_down_with_status_and_events(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    deployments = store.registry.lookup("deployments")
    async with running(store, DeploymentController):
        await store.create(manifest(3))
        dep = await eventually(lambda: settled(store, kubelet, 3), what="3 available pods")
        status = dep["status"]
        assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"],
                status["availableReplicas"], status["unavailableReplicas"]) == (3, 3, 3, 3, 0)
        assert condition(dep, "Available")["reason"] == "MinimumReplicasAvailable"
        assert condition(dep, "Progressing")["reason"] == "NewPodsAvailable"
        pods = await kubelet.pods(selector="app=web")
        hash_value = pods[0]["metadata"]["labels"][TEMPLATE_HASH_LABEL]
        for pod in pods:
            assert pod["metadata"]["name"].startswith(f"web-{hash_value}-")
            ref = pod["metadata"]["ownerReferences"][0]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == \
                ("Deployment", "web", dep["metadata"]["uid"], True, True)

        await store.update_scale(deployments, "web", "default", 5)
        await eventually(lambda: settled(store, kubelet, 5), what="5 available pods")
        await store.update_scale(deployments, "web", "default", 0)
        dep = await eventually(lambda: settled(store, kubelet, 0), what="no pods")
        assert await kubelet.pods(selector="app=web") == []
        assert dep["status"]["replicas"] == 0

    events = (await store.list(store.registry.lookup("events"), "default")).items
    messages = {(e["reason"], e["message"]) for e in events}
    assert {("ScalingReplicaSet", "Scaled up to 3 pods"), ("ScalingReplicaSet", "Scaled up to 5 pods"),
            ("ScalingReplicaSet", "Scaled down to 0 pods")} <= messages
    await store.close()


async def test_failed_pod_is_replaced(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    async with running(store, DeploymentController):
        await store.create(manifest(2))
        await eventually(lambda: settled(store, kubelet, 2), what="2 available pods")
        victim = (await kubelet.pods(selector="app=web"))[0]
        await kubelet.finish(victim, "Failed")

        async def replaced() -> bool:
            names = {p["metadata"]["name"] for p in await kubelet.pods(selector="app=web")}
            return victim["metadata"]["name"] not in names and len(names) == 2

        await eventually(replaced, what="the failed pod replaced")
        await eventually(lambda: settled(store, kubelet, 2), what="2 available pods again")
    await store.close()


async def test_rolling_update_trajectory_stays_within_surge_and_unavailability(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    replicas = 4
    seen_totals: list[int] = []

    def invariant(pods: dict[str, Obj]) -> None:
        live = [p for p in pods.values() if not p["metadata"].get("deletionTimestamp")
                and phase_of(p) not in ("Succeeded", "Failed")]
        ready = [p for p in live if any(c.get("type") == "Ready" and c.get("status") == "True"
                                        for c in (p.get("status") or {}).get("conditions") or [])]
        seen_totals.append(len(live))
        assert len(live) <= replicas + 1, f"{len(live)} pods exceed replicas + maxSurge"
        if rolling.is_set():
            assert len(ready) >= replicas - 1, f"only {len(ready)} ready pods during the rollout"

    rolling = asyncio.Event()
    async with running(store, DeploymentController):
        await store.create(manifest(replicas, strategy=strategy))
        await eventually(lambda: settled(store, kubelet, replicas), what="first rollout")
        old_hash = (await kubelet.pods(selector="app=web"))[0]["metadata"]["labels"][TEMPLATE_HASH_LABEL]

        async with PodWatcher(store, "default", invariant):
            rolling.set()
            deployments = store.registry.lookup("deployments")
            await store.patch(deployments, "web", "default",
                              {"spec": {"template": {"spec": {"containers": [
                                  {"name": "main", "image": "v2", "command": ["sleep", "60"]}]}}}})
            # The kubelet starts pods one at a time, so every step of the rollout is visible.

            async def step() -> Obj | None:
                pending = [p for p in await kubelet.pods(selector="app=web")
                           if phase_of(p) == "Pending" and not p["metadata"].get("deletionTimestamp")]
                if pending:
                    await kubelet.run(pending[0])
                dep = await get_deployment(store)
                status = dep.get("status") or {}
                current = status.get("observedGeneration") == dep["metadata"]["generation"]
                counts = (status.get("updatedReplicas"), status.get("availableReplicas"), status.get("replicas"))
                done = current and counts == (replicas, replicas, replicas)
                return dep if done else None

            dep = await eventually(step, what="rolled out")
        pods = await kubelet.pods(selector="app=web")
        assert len(pods) == replicas
        assert all(p["metadata"]["labels"][TEMPLATE_HASH_LABEL] != old_hash for p in pods)
        assert condition(dep, "Progressing")["reason"] == "NewPodsAvailable"
        assert max(seen_totals) == replicas + 1  # the surge was used
    await store.close()


async def test_recreate_replaces_all_pods(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    kubelet = Kubelet(store)
    async with running(store, DeploymentController):
        await store.create(manifest(2, strategy={"type": "Recreate"}))
        await eventually(lambda: settled(store, kubelet, 2), what="first rollout")
        before = {p["metadata"]["name"] for p in await kubelet.pods(selector="app=web")}

        def invariant(pods: dict[str, Obj]) -> None:
            hashes = {p["metadata"]["labels"][TEMPLATE_HASH_LABEL] for p in pods.values()}
            assert len(hashes) <= 1, "old and new pods ran together under Recreate"

        async with PodWatcher(store, "default", invariant):
            await store.patch(store.registry.lookup("deployments"), "web", "default",
                              {"spec": {"template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}})
            await eventually(lambda: settled(store, kubelet, 2), what="recreated")
        after = {p["metadata"]["name"] for p in await kubelet.pods(selector="app=web")}
        assert not before & after
    await store.close()
