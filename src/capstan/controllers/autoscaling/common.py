"""Pieces the ScaledObject and ScaledJob controllers share: options, conditions,
per-trigger configs, and the index of scale targets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from capstan.api.keda import ScaleTriggers
from capstan.api.selectors import LabelSelector
from capstan.controllers.autoscaling.triggers import AuthOptions, auth_params, resolved_env
from capstan.core.workloads.pods import format_time
from capstan.scalers.base import PodMetrics, ScalerConfig
from capstan.store.base import Obj, Store


@dataclass(frozen=True)
class AutoscalingOptions:
    auth: AuthOptions = field(default_factory=AuthOptions)
    pod_metrics: PodMetrics | None = None
    status_refresh_seconds: float = 60.0
    """Trigger values, lastActiveTime and HPA histories alone are written at most this often."""
    config_refresh_seconds: float = 300.0
    """Secrets, ConfigMaps and TriggerAuthentications are read again at least this often."""
    concurrency: int = 256
    """Passes running at once (each bounded by its triggers' timeouts)."""
    direct_scale_to_zero: bool = False
    """KEDA's N -> 0 jump after the cooldown instead of Capstan's walk down."""
    scaler_timeout_seconds: float = 3.0


def merge_conditions(existing: Sequence[Mapping[str, Any]] | None, updates: Iterable[Mapping[str, Any]],
                     now: datetime) -> list[dict[str, Any]]:
    """Conditions by type; lastTransitionTime moves only when a condition's status changes."""
    merged = {str(c.get("type")): dict(c) for c in existing or []}
    for update in updates:
        kind = str(update["type"])
        old = merged.get(kind)
        new = {key: value for key, value in update.items() if value is not None}
        if old is not None and old.get("status") == new.get("status") and old.get("lastTransitionTime"):
            new["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            new["lastTransitionTime"] = format_time(now)
        merged[kind] = new
    order = ["Ready", "Active", "Fallback", "Paused"]
    return sorted(merged.values(), key=lambda c: (order.index(c["type"]) if c["type"] in order else 99, c["type"]))


def selector_of(target: Obj) -> str:
    selector = (target.get("spec") or {}).get("selector")
    if not isinstance(selector, dict):
        return ""
    return str(LabelSelector.from_model(selector))


async def trigger_configs(store: Store, namespace: str, scalable: Obj, triggers: Sequence[ScaleTriggers],
                          pod_spec: Obj | None, container: str | None, selector: str,
                          options: AutoscalingOptions) -> list[ScalerConfig]:
    """One ScalerConfig per trigger; TriggerSetupError names what is wrong."""
    env = await resolved_env(store, namespace, pod_spec, container)
    configs = []
    for index, trigger in enumerate(triggers):
        params = await auth_params(store, namespace, index, trigger, pod_spec, options.auth)
        configs.append(ScalerConfig(
            trigger_type=trigger.type, trigger_index=index, metadata=dict(trigger.metadata),
            trigger_name=trigger.name, auth_params=params, resolved_env=env,
            metric_type=trigger.metric_type or ("Utilization" if trigger.is_resource else "AverageValue"),
            namespace=namespace,
            scalable_name=scalable["metadata"]["name"], scalable_kind=str(scalable.get("kind")),
            target_selector=selector, timeout_seconds=options.scaler_timeout_seconds,
            pod_metrics=options.pod_metrics))
    return configs


TargetKey = tuple[str, str, str, str]  # namespace, API group, kind, name


def target_key(namespace: str, api_version: str, kind: str, name: str) -> TargetKey:
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return namespace, group, kind, name


class TargetIndex:
    """Which ScaledObjects point at which scale target (KEDA allows one per target)."""

    def __init__(self) -> None:
        self._by_target: dict[TargetKey, dict[str, str]] = {}
        self._by_object: dict[tuple[str, str], TargetKey] = {}

    @staticmethod
    def key_of(obj: Obj) -> TargetKey | None:
        ref = (obj.get("spec") or {}).get("scaleTargetRef")
        if not isinstance(ref, dict) or not ref.get("name"):
            return None
        return target_key(obj["metadata"].get("namespace") or "default", str(ref.get("apiVersion") or "apps/v1"),
                          str(ref.get("kind") or "Deployment"), str(ref["name"]))

    def update(self, obj: Obj, deleted: bool = False) -> set[TargetKey]:
        """Index ``obj``; returns the targets whose set of claimants changed."""
        meta = obj["metadata"]
        object_key = (meta.get("namespace") or "default", meta["name"])
        changed: set[TargetKey] = set()
        old = self._by_object.pop(object_key, None)
        if old is not None:
            claimants = self._by_target.get(old, {})
            claimants.pop(meta["name"], None)
            if not claimants:
                self._by_target.pop(old, None)
            changed.add(old)
        new = None if deleted else self.key_of(obj)
        if new is not None:
            self._by_object[object_key] = new
            self._by_target.setdefault(new, {})[meta["name"]] = str(meta.get("creationTimestamp") or "")
            changed.add(new)
        return changed if old != new else set()

    def claimants(self, key: TargetKey) -> list[str]:
        """ScaledObject names claiming ``key``, the first (oldest) one owning it."""
        claimants = self._by_target.get(key, {})
        return sorted(claimants, key=lambda name: (claimants[name], name))

    def owner(self, key: TargetKey) -> str | None:
        names = self.claimants(key)
        return names[0] if names else None
