"""The ScaledObject controller: KEDA's operator and its HPA in one loop, no HPA object.

Per ScaledObject, a pass every ``pollingInterval`` (one timer heap for all objects, see
``schedule.py``), or at once when the spec or annotations change or a push scaler wakes it:

1. finalizer and the ``scaledobject.keda.sh/name`` label;
2. the scale target must exist and have a scale subresource, and be claimed by no older
   ScaledObject (else ``Ready=False``: ScaleTargetNotFound, ScaleTargetNotScalable,
   ScaleTargetAlreadyManaged);
3. the scalers (cached per generation; bad metadata or authentication is ``Ready=False``);
4. every trigger read concurrently, each bounded by its timeout;
5. ``decide_scaled_object`` with the remembered state; the target's replicas set through the
   scale subresource; an Event for every change, carrying the decision's reason;
6. status written when it changed (KEDA's fields plus ``capstanLastDecision`` and
   ``capstanState``, the HPA histories).

State that must survive a restart lives in the status: ``lastActiveTime`` and ``health`` (KEDA's
fields) and ``capstanState`` (stabilization recommendations and scale events). The controller's
memory is authoritative while it runs; fields that only move with time (trigger values,
lastActiveTime, history timestamps) are written at most every ``status_refresh_seconds`` unless
something else changed, so an idle fleet costs no writes. After a restart the cooldown and
stabilization windows may therefore end up to that long early.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from capstan.api.errors import Cause, InvalidError, NotFoundError
from capstan.api.keda import (
    COMPOSITE_METRIC_NAME,
    SCALED_OBJECT_NAME_LABEL,
    ScaledObject,
)
from capstan.api.registry import ResourceType
from capstan.controllers.autoscaling import metrics as m
from capstan.controllers.autoscaling.cache import Reading, ScalerSet
from capstan.controllers.autoscaling.common import (
    AutoscalingOptions,
    TargetIndex,
    merge_conditions,
    selector_of,
    trigger_configs,
)
from capstan.controllers.autoscaling.polling import Key, NotReadyError, PollingController, validated
from capstan.controllers.autoscaling.triggers import TriggerSetupError, pod_template_spec
from capstan.controllers.events import EventRecorder, utcnow
from capstan.controllers.informer import ChangeType, InformerFactory
from capstan.core.autoscaling.hpa import Recommendation, ScaleEvent
from capstan.core.autoscaling.keda import (
    PauseState,
    ScaledObjectDecision,
    ScaledObjectSettings,
    ScaledObjectState,
    TriggerReading,
    decide_scaled_object,
)
from capstan.core.workloads.pods import format_time, parse_time
from capstan.scalers.base import ScalerError
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

FINALIZER = "finalizer.keda.sh"
LAST_DECISION = "capstanLastDecision"
STATE = "capstanState"
COSMETIC_FIELDS = (LAST_DECISION, STATE, "lastActiveTime")


# ---- state kept in status -------------------------------------------------------------------------

def histories_from_status(status: Mapping[str, Any]) -> tuple[tuple[Recommendation, ...], tuple[ScaleEvent, ...]]:
    saved = status.get(STATE) or {}
    recommendations = []
    for item in saved.get("recommendations") or []:
        moment = parse_time(item.get("time"))
        if moment is not None:
            recommendations.append(Recommendation(int(item.get("replicas", 0)), moment))
    events = []
    for item in saved.get("scaleEvents") or []:
        moment = parse_time(item.get("time"))
        direction = item.get("direction")
        if moment is not None and direction in ("up", "down"):
            events.append(ScaleEvent(direction, int(item.get("replicas", 0)), moment))
    return tuple(recommendations), tuple(events)


def histories_to_status(recommendations: Sequence[Recommendation], events: Sequence[ScaleEvent]) -> dict[str, Any]:
    # Equal recommendations: only the newest matters to a max/min over a window.
    newest: dict[int, datetime] = {}
    for rec in recommendations:
        newest[rec.replicas] = max(rec.timestamp, newest.get(rec.replicas, rec.timestamp))
    return {"recommendations": [{"replicas": r, "time": format_time(t)} for r, t in sorted(newest.items())],
            "scaleEvents": [{"direction": e.direction, "replicas": e.replicas, "time": format_time(e.timestamp)}
                            for e in events]}


def failures_from_status(status: Mapping[str, Any]) -> dict[str, int]:
    return {name: int((health or {}).get("numberOfFailures") or 0)
            for name, health in (status.get("health") or {}).items()}


def replicas_of(rt: ResourceType, target: Obj) -> tuple[int, int | None]:
    """(spec replicas, ready replicas or None) of a scale target, by its scale subresource paths."""
    assert rt.scale is not None
    spec_value = _path(target, rt.scale.spec_replicas_path)
    status = target.get("status") or {}
    ready = status.get("readyReplicas")
    if ready is None:
        ready = _path(target, rt.scale.status_replicas_path)
    return int(spec_value or 0), (int(ready) if ready is not None else None)


def _path(obj: Obj, dotted: str) -> Any:
    current: Any = obj
    for part in dotted.split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def trigger_reading(trigger_type: str, trigger_name: str | None, metric_type: str | None,
                    reading: Reading) -> TriggerReading:
    spec = reading.spec
    kind = metric_type or spec.target_type
    return TriggerReading(
        metric_name=spec.name, value=reading.result.value if reading.result else None, target=spec.target,
        activation_target=spec.activation_target, metric_type=kind,  # type: ignore[arg-type]
        trigger_name=trigger_name, trigger_type=trigger_type,
        active=reading.result.active if reading.result else None, error=reading.error)


def readings_to_status(readings: Sequence[TriggerReading], decision: ScaledObjectDecision) -> list[dict[str, Any]]:
    rows = []
    for reading in readings:
        row: dict[str, Any] = {"metricName": reading.metric_name, "type": reading.trigger_type,
                               "target": reading.target, "activationTarget": reading.activation_target,
                               "metricType": reading.metric_type,
                               "active": bool(decision.triggers_activity.get(reading.metric_name, False))}
        if reading.trigger_name:
            row["name"] = reading.trigger_name
        if reading.value is not None:
            row["value"] = reading.value
        if reading.error is not None:
            row["error"] = reading.error
        rows.append(row)
    return rows


def readings_from_status(status: Mapping[str, Any]) -> list[TriggerReading]:
    """The last pass's readings, as ``capstanLastDecision.triggers`` keeps them (for explain)."""
    rows = (status.get(LAST_DECISION) or {}).get("triggers") or []
    return [TriggerReading(metric_name=row["metricName"], value=row.get("value"), target=float(row["target"]),
                           activation_target=float(row.get("activationTarget") or 0),
                           metric_type=row.get("metricType") or "AverageValue", trigger_name=row.get("name"),
                           trigger_type=row.get("type") or "", error=row.get("error"))
            for row in rows if "metricName" in row and "target" in row]


def decision_summary(decision: ScaledObjectDecision, now: datetime) -> dict[str, Any]:
    summary: dict[str, Any] = {"time": format_time(now), "action": decision.action,
                               "currentReplicas": decision.current_replicas,
                               "desiredReplicas": decision.desired_replicas, "reason": decision.reason,
                               "active": decision.is_active}
    if decision.composite_value is not None:
        summary["compositeValue"] = decision.composite_value
    if decision.hpa is not None:
        summary["hpaCondition"] = decision.hpa.condition
        if decision.hpa.stabilization:
            summary["hpaStabilization"] = decision.hpa.stabilization
    return summary


# ---- the controller ------------------------------------------------------------------------------

@dataclass
class _Memory:
    uid: str
    last_active: datetime | None
    recommendations: tuple[Recommendation, ...]
    scale_events: tuple[ScaleEvent, ...]
    failures: dict[str, int] = field(default_factory=dict)
    original: int | None = None
    written_at: float = 0.0
    config_epoch: int = 0
    configured_at: float = field(default_factory=time.monotonic)
    paused: bool = False


class ScaledObjectController(PollingController):
    name = "scaledobject"
    resource = "scaledobjects"
    kind = "ScaledObject"
    errors = m.SCALED_OBJECT_ERRORS

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder, *,
                 options: AutoscalingOptions | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.targets = TargetIndex()
        self._memory: dict[Key, _Memory] = {}
        super().__init__(informers, store, recorder, options=options, clock=clock)

    # ---- wiring ----------------------------------------------------------------------------

    def install_validator(self) -> bool:
        """Reject a second ScaledObject for a scale target at admission, where the store allows
        validators (the embedded SqliteStore). Returns whether it was installed."""
        add = getattr(self.store, "add_validator", None)
        if add is None:
            return False
        add("ScaledObject", self._validate)
        return True

    def _validate(self, new: Obj, old: Obj | None) -> None:
        check_one_per_target(self.targets, new, old)

    def _on_change(self, change: ChangeType, obj: Obj, old: Obj | None) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace") or "default", meta["name"])
        for target in self.targets.update(obj, deleted=change == "DELETED"):
            for claimant in self.targets.claimants(target):
                if claimant != meta["name"]:
                    self.scheduler.wake((key[0], claimant))
        if change == "DELETED":
            self._forget(key)
            return
        if change == "ADDED" or old is None or _needs_pass(obj, old):
            self.scheduler.wake(key)

    def _forget(self, key: Key) -> None:
        self.scheduler.remove(key)
        self._memory.pop(key, None)
        m.forget_scaled_object(*key)
        self._drop_scalers_soon(key)

    # ---- one pass -----------------------------------------------------------------------------

    async def _pass(self, key: Key) -> float | None:
        namespace, name = key
        obj = self.informer.get(name, namespace)
        if obj is None:
            return None
        if obj["metadata"].get("deletionTimestamp"):
            await self._finalize(obj)
            return None
        return await self._poll(obj)

    async def reconcile(self, obj: Obj) -> ScaledObjectDecision | None:
        """One pass over a live (not deleting) ScaledObject; raises NotReadyError for bad input."""
        obj = await self._ensure_finalizer(obj)
        meta = obj["metadata"]
        namespace, name = meta.get("namespace") or "default", meta["name"]
        key = (namespace, name)
        model = validated(ScaledObject, obj, "ScaledObjectCheckFailed")
        spec = model.spec
        target_rt, target = await self._target(obj)
        scaler_set = await self._scalers(key, obj, model, target)
        reads = await scaler_set.read_all()
        readings = self._readings(model, reads, namespace, name)
        current, ready = replicas_of(target_rt, target)
        memory = self._remember(key, obj)
        now = self.clock()
        state = ScaledObjectState(
            current_replicas=current, ready_replicas=ready, created_at=parse_time(meta.get("creationTimestamp")) or now,
            last_active_time=memory.last_active, failures=dict(memory.failures),
            recommendations=memory.recommendations, scale_events=memory.scale_events)
        settings = ScaledObjectSettings.from_spec(spec, direct_scale_to_zero=self.options.direct_scale_to_zero)
        pause = PauseState.from_annotations(meta.get("annotations"))
        decision = decide_scaled_object(settings, pause, tuple(readings), state, now)
        if memory.original is None:
            memory.original = current
        if decision.scale:
            await self.store.update_scale(target_rt, target["metadata"]["name"], namespace, decision.desired_replicas)
            await self._record_scale(obj, target, decision)
        if decision.action == "pause" and not memory.paused:
            await self.recorder.record(obj, "Normal", "ScaledObjectPaused", decision.reason)
        memory.paused = decision.action == "pause"
        memory.last_active = decision.last_active_time
        memory.recommendations, memory.scale_events = decision.recommendations, decision.scale_events
        memory.failures = {name: health.number_of_failures for name, health in decision.health.items()}
        m.SCALED_OBJECT_PAUSED.labels(namespace, name).set(1 if decision.action == "pause" else 0)
        m.SCALED_OBJECT_REPLICAS.labels(namespace, name).set(decision.desired_replicas)
        m.SCALED_OBJECT_DESIRED.labels(namespace, name).set(decision.desired_replicas)
        wanted = self._status(obj, model, target_rt, target, readings, decision, memory, now, memory.original)
        await self._write_status(obj, wanted, memory, force=decision.scale)
        return decision

    # ---- steps -----------------------------------------------------------------------------

    async def _ensure_finalizer(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        labels = meta.get("labels") or {}
        if FINALIZER in finalizers and labels.get(SCALED_OBJECT_NAME_LABEL) == meta["name"]:
            return obj
        if FINALIZER not in finalizers:
            finalizers.append(FINALIZER)
        return await self.store.patch(self.rt, meta["name"], meta.get("namespace"), {
            "metadata": {"finalizers": finalizers, "labels": {SCALED_OBJECT_NAME_LABEL: meta["name"]}}})

    async def _target(self, obj: Obj) -> tuple[ResourceType, Obj]:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        ref = obj["spec"]["scaleTargetRef"]
        api_version, kind, name = ref.get("apiVersion") or "apps/v1", ref.get("kind") or "Deployment", ref["name"]
        try:
            rt = self.store.registry.for_object({"apiVersion": api_version, "kind": kind})
        except (NotFoundError, InvalidError):
            raise NotReadyError("ScaleTargetNotFound", f'scaleTargetRef: kind "{kind}" in version "{api_version}" '
                           "is not served") from None
        if rt.scale is None:
            raise NotReadyError("ScaleTargetNotScalable", f'scaleTargetRef: {kind} "{name}" has no scale subresource')
        try:
            target = await self.store.get(rt, name, namespace)
        except NotFoundError:
            raise NotReadyError("ScaleTargetNotFound", f'scaleTargetRef: {kind} "{name}" not found in namespace '
                           f'"{namespace}"') from None
        key = TargetIndex.key_of(obj)
        owner = self.targets.owner(key) if key is not None else None
        if owner is not None and owner != meta["name"]:
            raise NotReadyError("ScaleTargetAlreadyManaged", f"the workload '{name}' of type '{kind}' is already "
                                f"managed by the ScaledObject '{owner}'")
        return rt, target

    async def _scalers(self, key: Key, obj: Obj, model: ScaledObject, target: Obj) -> ScalerSet:
        memory = self._remember(key, obj)
        if time.monotonic() - memory.configured_at > self.options.config_refresh_seconds:
            memory.config_epoch += 1
            memory.configured_at = time.monotonic()
        # The target's pod template and selector feed the configs (env, selector); its replicas do not,
        # so scaling the target does not rebuild the scalers.
        target_spec = target.get("spec") or {}
        template = json.dumps([target_spec.get("template"), target_spec.get("selector")], sort_keys=True)
        fingerprint = (obj["metadata"].get("uid"), obj["metadata"].get("generation"),
                       target["metadata"].get("uid"), hash(template), memory.config_epoch)
        found = self.cache.get(key, fingerprint)
        if found is not None:
            return found
        namespace = key[0]
        ref = model.spec.scale_target_ref
        try:
            configs = await trigger_configs(self.store, namespace, obj, model.spec.triggers, pod_template_spec(target),
                                            ref.env_source_container_name, selector_of(target), self.options)
            built = ScalerSet.build(fingerprint, configs, lambda active: self.scheduler.wake(key))
        except TriggerSetupError as exc:
            await self.cache.drop(key)
            raise NotReadyError(exc.reason, str(exc)) from None
        except ScalerError as exc:
            await self.cache.drop(key)
            raise NotReadyError("ScalerConfigError", str(exc)) from None
        await self.cache.put(key, built)
        return built

    def _readings(self, model: ScaledObject, reads: Sequence[Reading], namespace: str,
                  name: str) -> list[TriggerReading]:
        readings = []
        for read in reads:
            trigger = model.spec.triggers[read.index]
            reading = trigger_reading(trigger.type, trigger.name, trigger.metric_type, read)
            readings.append(reading)
            m.observe_read((namespace, name, "scaledobject", trigger.type, str(read.index), read.spec.name), read)
        return readings

    def _remember(self, key: Key, obj: Obj) -> _Memory:
        uid = str(obj["metadata"].get("uid"))
        memory = self._memory.get(key)
        if memory is None or memory.uid != uid:
            status = obj.get("status") or {}
            recommendations, events = histories_from_status(status)
            original = status.get("originalReplicaCount")
            memory = _Memory(uid, parse_time(status.get("lastActiveTime")), recommendations, events,
                             failures=failures_from_status(status),
                             original=int(original) if original is not None else None,
                             paused=any(c.get("type") == "Paused" and c.get("status") == "True"
                                        for c in status.get("conditions") or []))
            self._memory[key] = memory
        return memory

    async def _record_scale(self, obj: Obj, target: Obj, decision: ScaledObjectDecision) -> None:
        reason = {"activate": "KEDAScaleTargetActivated", "deactivate": "KEDAScaleTargetDeactivated",
                  "pause": "ScaledObjectPaused"}.get(decision.action, "SuccessfulRescale")
        what = f"{target.get('kind')}/{target['metadata']['name']}"
        await self.recorder.record(obj, "Normal", reason, f"Scaled {what} from {decision.current_replicas} to "
                                   f"{decision.desired_replicas}: {decision.reason}")

    def _status(self, obj: Obj, model: ScaledObject, rt: ResourceType, target: Obj,
                readings: Sequence[TriggerReading], decision: ScaledObjectDecision, memory: _Memory,
                now: datetime, original: int) -> dict[str, Any]:
        status = dict(obj.get("status") or {})
        spec = model.spec
        status["scaleTargetKind"] = f"{rt.api_version}.{rt.kind}"
        status["scaleTargetGVKR"] = {"group": rt.group, "version": rt.version, "kind": rt.kind,
                                     "resource": rt.plural}
        status["originalReplicaCount"] = original
        external = [r.metric_name for r in readings if not r.is_resource]
        resource = [r.metric_name for r in readings if r.is_resource]
        if spec.scaling_modifiers is not None:
            status["compositeScalerName"] = COMPOSITE_METRIC_NAME
            external = [COMPOSITE_METRIC_NAME]
        _set(status, "externalMetricNames", external or None)
        _set(status, "resourceMetricNames", resource or None)
        status["triggersTypes"] = ",".join(dict.fromkeys(t.type for t in spec.triggers))
        auths = [t.authentication_ref.name for t in spec.triggers if t.authentication_ref]
        _set(status, "authenticationsTypes", ",".join(dict.fromkeys(auths)) or None)
        if decision.action != "pause":
            status["health"] = {name: {"numberOfFailures": h.number_of_failures, "status": h.status}
                                for name, h in decision.health.items()}
            status["triggersActivity"] = {name: {"isActive": active}
                                          for name, active in decision.triggers_activity.items()}
        _set(status, "pausedReplicaCount", decision.paused_replica_count)
        _set(status, "lastActiveTime", format_time(memory.last_active) if memory.last_active else None)
        updates: list[dict[str, Any]] = [{"type": c.type, "status": c.status, "reason": c.reason,
                                          "message": c.message} for c in decision.conditions]
        status["conditions"] = merge_conditions(status.get("conditions"), updates, now)
        status[LAST_DECISION] = {**decision_summary(decision, now),
                                 "triggers": readings_to_status(readings, decision)}
        status[STATE] = histories_to_status(memory.recommendations, memory.scale_events)
        return status

    async def _write_status(self, obj: Obj, wanted: dict[str, Any], memory: _Memory, *, force: bool) -> None:
        current = obj.get("status") or {}
        if wanted == current:
            return
        significant = _without(wanted, COSMETIC_FIELDS) != _without(current, COSMETIC_FIELDS)
        last = (current.get(LAST_DECISION) or {})
        new = wanted.get(LAST_DECISION) or {}
        decision_changed = any(last.get(k) != new.get(k) for k in ("action", "desiredReplicas", "currentReplicas",
                                                                    "active"))
        due = time.monotonic() - memory.written_at >= self.options.status_refresh_seconds
        if not (force or significant or decision_changed or due):
            return
        meta = obj["metadata"]
        patch_status = {k: v for k, v in wanted.items()}
        for gone in set(current) - set(wanted):
            patch_status[gone] = None
        await self.store.patch(self.rt, meta["name"], meta.get("namespace"), {"status": patch_status},
                               subresource="status")
        memory.written_at = time.monotonic()

    def _not_ready_conditions(self, exc: NotReadyError) -> list[Mapping[str, Any]]:
        return [*super()._not_ready_conditions(exc),
                {"type": "Active", "status": "False", "reason": exc.reason,
                 "message": "scaling is not performed: the ScaledObject is not ready"}]

    async def _finalize(self, obj: Obj) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (namespace, meta["name"])
        await self.cache.drop(key)
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        await self._restore(obj)
        finalizers.remove(FINALIZER)
        with contextlib.suppress(NotFoundError):
            await self.store.patch(self.rt, meta["name"], namespace, {"metadata": {"finalizers": finalizers}})

    async def _restore(self, obj: Obj) -> None:
        """restoreToOriginalReplicaCount: put the target back where it was before autoscaling."""
        advanced = (obj.get("spec") or {}).get("advanced") or {}
        original = (obj.get("status") or {}).get("originalReplicaCount")
        if not advanced.get("restoreToOriginalReplicaCount") or original is None:
            return
        ref = obj["spec"]["scaleTargetRef"]
        try:
            rt = self.store.registry.for_object({"apiVersion": ref.get("apiVersion") or "apps/v1",
                                                 "kind": ref.get("kind") or "Deployment"})
            await self.store.update_scale(rt, ref["name"], obj["metadata"].get("namespace"), int(original))
        except (NotFoundError, InvalidError):
            return
        await self.recorder.record(obj, "Normal", "KEDAScaleTargetRestored",
                                   f"Restored {ref.get('kind') or 'Deployment'}/{ref['name']} to its original "
                                   f"{original} replicas")


def _needs_pass(obj: Obj, old: Obj) -> bool:
    """Spec, annotation, label and deletion changes need a pass now; our own status writes do not."""
    new_meta, old_meta = obj["metadata"], old["metadata"]
    return bool(new_meta.get("generation") != old_meta.get("generation")
            or new_meta.get("annotations") != old_meta.get("annotations")
            or new_meta.get("deletionTimestamp") != old_meta.get("deletionTimestamp")
            or new_meta.get("labels") != old_meta.get("labels"))


def _set(status: dict[str, Any], name: str, value: Any) -> None:
    if value is None:
        status.pop(name, None)
    else:
        status[name] = value


def _without(status: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in names}


def check_one_per_target(targets: TargetIndex, new: Obj, old: Obj | None) -> None:
    """Reject ``new`` (InvalidError) when another ScaledObject in ``targets`` already claims its scale
    target: the embedded store's validator, and the admission webhook's on Kubernetes."""
    key = TargetIndex.key_of(new)
    if key is None or (old is not None and TargetIndex.key_of(old) == key):
        return
    name = new["metadata"].get("name") or ""
    others = [other for other in targets.claimants(key) if other != name]
    if others:
        raise InvalidError.from_causes("ScaledObject", name, [Cause(
            "spec.scaleTargetRef", "FieldValueInvalid",
            f"the workload '{key[3]}' of type '{key[2]}' is already managed by the ScaledObject '{others[0]}'")])
