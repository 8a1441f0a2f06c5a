"""``capstan scaledobject explain``: what the decision would be with given metric values.

A dry run with the controller's own core (``decide_scaled_object``) and the ScaledObject's
remembered state (its status: lastActiveTime, health, HPA histories) and the target's current
replicas. Triggers not given a value keep the value of the last pass. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from capstan.api.errors import BadRequestError, NotFoundError
from capstan.api.keda import ScaledObject
from capstan.controllers.autoscaling.common import AutoscalingOptions, selector_of, trigger_configs
from capstan.controllers.autoscaling.scaledobject import (
    decision_summary,
    failures_from_status,
    histories_from_status,
    readings_from_status,
    readings_to_status,
    replicas_of,
)
from capstan.controllers.autoscaling.triggers import TriggerSetupError, pod_template_spec
from capstan.core.autoscaling.keda import (
    PauseState,
    ScaledObjectSettings,
    ScaledObjectState,
    TriggerReading,
    decide_scaled_object,
)
from capstan.core.workloads.pods import parse_time
from capstan.scalers.base import ScalerError
from capstan.scalers.registry import build_scaler
from capstan.store.base import Obj, Store


async def _spec_readings(store: Store, obj: Obj, model: ScaledObject, target: Obj,
                         options: AutoscalingOptions) -> list[TriggerReading]:
    """Readings without values, from the scalers' metric specs (before the first pass)."""
    namespace = obj["metadata"].get("namespace") or "default"
    ref = model.spec.scale_target_ref
    try:
        configs = await trigger_configs(store, namespace, obj, model.spec.triggers, pod_template_spec(target),
                                        ref.env_source_container_name, selector_of(target), options)
    except TriggerSetupError as exc:
        raise BadRequestError(str(exc)) from None
    readings = []
    for config, trigger in zip(configs, model.spec.triggers, strict=True):
        try:
            scaler = build_scaler(config)
        except ScalerError as exc:
            raise BadRequestError(str(exc)) from None
        try:
            await scaler.prepare()  # e.g. the external scaler's GetMetricSpec, off the loop's thread
            for spec in scaler.metric_specs():
                readings.append(TriggerReading(spec.name, None, spec.target, spec.activation_target,
                                               trigger.metric_type or spec.target_type, trigger.name, trigger.type,
                                               error="not read yet"))
        finally:
            await scaler.aclose()
    return readings


def _apply_values(readings: list[TriggerReading], values: Mapping[str, float]) -> list[TriggerReading]:
    names: dict[str, int] = {}
    for index, reading in enumerate(readings):
        names[reading.metric_name] = index
        if reading.trigger_name:
            names.setdefault(reading.trigger_name, index)
    result = list(readings)
    for name, value in values.items():
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise BadRequestError(f"no trigger or metric named {name!r} (known: {known})")
        index = names[name]
        result[index] = replace(result[index], value=float(value), error=None, active=None)
    return result


async def explain_scaled_object(store: Store, namespace: str, name: str, values: Mapping[str, float], now: datetime,
                                options: AutoscalingOptions | None = None) -> dict[str, Any]:
    options = options or AutoscalingOptions()
    rt = store.registry.lookup("scaledobjects")
    obj = await store.get(rt, name, namespace)
    model = ScaledObject.model_validate(obj)
    ref = model.spec.scale_target_ref
    target_rt = store.registry.for_object({"apiVersion": ref.api_version, "kind": ref.kind})
    if target_rt.scale is None:
        raise BadRequestError(f'{ref.kind} "{ref.name}" has no scale subresource')
    try:
        target = await store.get(target_rt, ref.name, namespace)
    except NotFoundError:
        raise BadRequestError(f'scaleTargetRef: {ref.kind} "{ref.name}" not found in namespace "{namespace}"') \
            from None
    status = obj.get("status") or {}
    readings = readings_from_status(status)
    if len({r.trigger_type for r in readings}) == 0 or len(readings) < len(model.spec.triggers):
        readings = await _spec_readings(store, obj, model, target, options)
        previous = {r.metric_name: r for r in readings_from_status(status)}
        readings = [previous.get(r.metric_name, r) for r in readings]
    readings = _apply_values(readings, values)
    current, ready = replicas_of(target_rt, target)
    recommendations, events = histories_from_status(status)
    meta = obj["metadata"]
    state = ScaledObjectState(current_replicas=current, ready_replicas=ready,
                              created_at=parse_time(meta.get("creationTimestamp")) or now,
                              last_active_time=parse_time(status.get("lastActiveTime")),
                              failures=failures_from_status(status), recommendations=recommendations,
                              scale_events=events)
    settings = ScaledObjectSettings.from_spec(model.spec, direct_scale_to_zero=options.direct_scale_to_zero)
    decision = decide_scaled_object(settings, PauseState.from_annotations(meta.get("annotations")),
                                    tuple(readings), state, now)
    return {**decision_summary(decision, now), "dryRun": True,
            "triggers": readings_to_status(readings, decision),
            "conditions": [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                           for c in decision.conditions]}
