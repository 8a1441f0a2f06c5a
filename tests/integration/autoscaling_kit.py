"""Helpers for the autoscaling controller integration tests: a settable test scaler (a real
``Scaler`` implementation whose values the test sets; registered only by these tests), a real
SqliteStore with the embedded Deployment/Job controllers and the KEDA controllers, and a
recorder of a Deployment's replica trajectory (from a watch, not from sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capstan.api.registry import default_registry
from capstan.controllers.autoscaling import AutoscalingOptions, add_autoscaling
from capstan.controllers.autoscaling.scaledjob import ScaledJobController
from capstan.controllers.autoscaling.scaledobject import ScaledObjectController
from capstan.controllers.deployment import DeploymentController
from capstan.controllers.events import EventRecorder
from capstan.controllers.informer import InformerFactory
from capstan.controllers.job import JobController
from capstan.controllers.runtime import Manager
from capstan.scalers import _metadata as md
from capstan.scalers.base import MetricResult, MetricSpec, PushScaler, Scaler, ScalerError, WakeCallback
from capstan.scalers.registry import register
from capstan.store.base import Obj, Store
from capstan.store.sqlite import SqliteStore

HANG = "hang"
VALUES: dict[str, Any] = {}
"""key -> value (a number), an Exception (the read fails) or HANG (the read never answers)."""
WAKERS: dict[str, list[WakeCallback]] = {}


@register("capstan-test")
class SettableScaler(Scaler):
    """Reads ``VALUES[metadata.key]``; target ``metadata.value`` (default 10), activation
    ``metadata.activationValue`` (default 0)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.key = md.required(config, "key")
        self.target = md.number(config, "value", 10.0)
        self.activation = md.number(config, "activationValue", 0.0)

    def metric_specs(self) -> list[MetricSpec]:
        return [MetricSpec(md.metric_name(self.config, self.key), self.target, self.activation)]

    async def get_metrics_and_activity(self, metric_name: str) -> MetricResult:
        value = VALUES.get(self.key, 0)
        if value == HANG:
            await asyncio.sleep(3600)
        if isinstance(value, Exception):
            raise ScalerError(str(value))
        return MetricResult(float(value), float(value) > self.activation)


@register("capstan-test-push")
class SettablePushScaler(SettableScaler, PushScaler):
    async def run(self, wake: WakeCallback) -> None:
        WAKERS.setdefault(self.key, []).append(wake)
        try:
            await asyncio.Event().wait()
        finally:
            WAKERS[self.key].remove(wake)


def push(key: str, value: float) -> None:
    VALUES[key] = value
    for wake in list(WAKERS.get(key, [])):
        wake(value > 0)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Cluster:
    store: SqliteStore
    scaled_objects: ScaledObjectController
    scaled_jobs: ScaledJobController
    rts: dict[str, Any] = field(default_factory=dict)

    def rt(self, name: str) -> Any:
        return self.store.registry.lookup(name)

    async def get(self, kind: str, name: str, namespace: str = "default") -> Obj:
        return await self.store.get(self.rt(kind), name, namespace)

    async def replicas(self, name: str) -> int:
        return int((await self.get("deployments", name))["spec"].get("replicas") or 0)

    async def condition(self, kind: str, name: str, cond: str) -> dict[str, Any] | None:
        obj = await self.get(kind, name)
        for found in (obj.get("status") or {}).get("conditions") or []:
            if found.get("type") == cond:
                return dict(found)
        return None

    async def events_for(self, name: str) -> list[Obj]:
        items = (await self.store.list(self.rt("events"), "default")).items
        return [e for e in items if e["involvedObject"].get("name") == name]


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, options: AutoscalingOptions | None = None) -> AsyncIterator[Cluster]:
    store = await SqliteStore.open(tmp_path / "state.db", default_registry())
    informers = InformerFactory(store)
    manager = Manager(informers)

    def recorder(component: str) -> EventRecorder:
        return EventRecorder(store, component)

    manager.add(DeploymentController(informers, store, recorder("deployment-controller")))
    manager.add(JobController(informers, store, recorder("job-controller")))
    scaled_objects, scaled_jobs = add_autoscaling(manager, informers, store, recorder, options)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        yield Cluster(store, scaled_objects, scaled_jobs)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
        await store.close()


def deployment(name: str, replicas: int = 0, env: list[dict[str, Any]] | None = None) -> Obj:
    container: dict[str, Any] = {"name": "main", "image": "python", "command": ["sleep", "3600"]}
    if env:
        container["env"] = env
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}}}


def scaled_object(name: str, target: str, triggers: list[dict[str, Any]], **spec: Any) -> Obj:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": "default", **spec.pop("metadata", {})},
            "spec": {"scaleTargetRef": {"name": target}, "pollingInterval": 1, "cooldownPeriod": 2,
                     "triggers": triggers, **spec}}


def trigger(key: str, **metadata: str) -> dict[str, Any]:
    return {"type": "capstan-test", "name": key, "metadata": {"key": key, **metadata}}


class Trajectory:
    """The distinct successive spec.replicas of one Deployment, from a store watch."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.values: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Trajectory:
        rt = self.store.registry.lookup("deployments")
        listed = await self.store.list(rt, "default", field_selector=f"metadata.name={self.name}")
        for obj in listed.items:
            self._add(obj)
        self._task = asyncio.create_task(self._follow(rt, listed.resource_version))
        return self

    def _add(self, obj: Obj) -> None:
        replicas = int(obj["spec"].get("replicas") or 0)
        if not self.values or self.values[-1] != replicas:
            self.values.append(replicas)

    async def _follow(self, rt: Any, rv: str) -> None:
        async for event in self.store.watch(rt, "default", resource_version=rv,
                                            field_selector=f"metadata.name={self.name}"):
            if event.type in ("ADDED", "MODIFIED"):
                self._add(event.object)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
