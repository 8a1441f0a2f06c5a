"""keda.sh/v1alpha1: ScaledObject, ScaledJob, TriggerAuthentication, ClusterTriggerAuthentication.

Field names and defaults are KEDA's, so a manifest written for KEDA applies unchanged. The models
also perform the checks KEDA's admission webhook performs (replica bounds, unique trigger names,
fallback and scalingModifiers rules); each failure names the field it is about, for example
``spec.minReplicaCount: Invalid value: minReplicaCount (5) must not be greater than maxReplicaCount (3)``

Authentication providers Capstan does not implement (``podIdentity``, ``hashiCorpVault``,
``azureKeyVault``, ``gcpSecretManager``, ``awsSecretManager``, ``boundServiceAccountToken``,
``oauth2``) are accepted and kept as unknown fields, and reported by
``TriggerAuthenticationSpec.unsupported_sources()`` so a controller can say so.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from capstan.api.base import Condition, KubeModel, Resource
from capstan.api.batchv1 import JobSpec
from capstan.api.celrules import CrossFieldRule, cel_validations
from capstan.api.formula import FormulaError, compile_formula
from capstan.api.registry import ResourceType

GROUP = "keda.sh"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Annotations KEDA reads on a ScaledObject (and, for ``paused``, on a ScaledJob).
PAUSED_ANNOTATION = "autoscaling.keda.sh/paused"
PAUSED_REPLICAS_ANNOTATION = "autoscaling.keda.sh/paused-replicas"
PAUSED_SCALE_IN_ANNOTATION = "autoscaling.keda.sh/paused-scale-in"
PAUSED_SCALE_OUT_ANNOTATION = "autoscaling.keda.sh/paused-scale-out"
FORCE_ACTIVATION_ANNOTATION = "autoscaling.keda.sh/force-activation"
SCALED_OBJECT_NAME_LABEL = "scaledobject.keda.sh/name"
SCALED_JOB_NAME_LABEL = "scaledjob.keda.sh/name"
COMPOSITE_METRIC_NAME = "composite-metric"

RESOURCE_TRIGGER_TYPES = frozenset({"cpu", "memory"})
"""Trigger types whose metrics come from pod resource usage; they are always active."""

MetricType = Literal["AverageValue", "Value", "Utilization"]


# ---- autoscaling/v2 HPA behavior ------------------------------------------------------------------

class HPAScalingPolicy(KubeModel):
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(gt=0, le=1800)


class HPAScalingRules(KubeModel):
    stabilization_window_seconds: int | None = Field(default=None, ge=0, le=3600)
    select_policy: Literal["Max", "Min", "Disabled"] | None = None
    policies: list[HPAScalingPolicy] | None = None
    tolerance: str | float | None = None
    """Per-direction tolerance (Kubernetes 1.33+ ``HPAConfigurableTolerance``), e.g. ``"0.05"``."""


class HorizontalPodAutoscalerBehavior(KubeModel):
    scale_up: HPAScalingRules | None = None
    scale_down: HPAScalingRules | None = None


# ---- ScaledObject ---------------------------------------------------------------------------------

class ScaleTarget(KubeModel):
    name: str
    api_version: str = "apps/v1"
    kind: str = "Deployment"
    env_source_container_name: str | None = None


class HorizontalPodAutoscalerConfig(KubeModel):
    name: str | None = None
    """Accepted for compatibility; Capstan runs no HPA object (see docs/autoscaling-semantics.md)."""
    behavior: HorizontalPodAutoscalerBehavior | None = None


class ScalingModifiers(KubeModel):
    formula: str | None = None
    target: str | None = None
    activation_target: str | None = None
    metric_type: Literal["AverageValue", "Value", "Utilization"] | None = None


class AdvancedConfig(KubeModel):
    horizontal_pod_autoscaler_config: HorizontalPodAutoscalerConfig | None = None
    restore_to_original_replica_count: bool = False
    scaling_modifiers: ScalingModifiers | None = None


class Fallback(KubeModel):
    failure_threshold: int = Field(ge=0)
    replicas: int = Field(ge=0)
    behavior: Literal["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower",
                      "scalingModifiers"] = "static"


class AuthenticationRef(KubeModel):
    name: str
    kind: Literal["TriggerAuthentication", "ClusterTriggerAuthentication"] = "TriggerAuthentication"


class ScaleTriggers(KubeModel):
    type: str = Field(min_length=1)
    name: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    authentication_ref: AuthenticationRef | None = None
    metric_type: MetricType | None = None
    """Unset means ``AverageValue`` (``Utilization`` only for cpu/memory)."""
    use_cached_metrics: bool = False

    @property
    def effective_metric_type(self) -> MetricType:
        return self.metric_type or "AverageValue"

    @property
    def is_resource(self) -> bool:
        return self.type in RESOURCE_TRIGGER_TYPES


MIN_NOT_OVER_MAX = CrossFieldRule(
    "self.minReplicaCount <= self.maxReplicaCount",
    "minReplicaCount (%d) must not be greater than maxReplicaCount (%d)",
    ("self.minReplicaCount", "self.maxReplicaCount"), ".minReplicaCount")
IDLE_UNDER_MIN = CrossFieldRule(
    "!has(self.idleReplicaCount) || self.idleReplicaCount < self.minReplicaCount",
    "idleReplicaCount (%d) must be less than minReplicaCount (%d)",
    ("self.idleReplicaCount", "self.minReplicaCount"), ".idleReplicaCount")


class ScaledObjectSpec(KubeModel):
    model_config = ConfigDict(json_schema_extra=cel_validations(MIN_NOT_OVER_MAX, IDLE_UNDER_MIN))

    scale_target_ref: ScaleTarget
    polling_interval: int = Field(default=30, ge=1)
    cooldown_period: int = Field(default=300, ge=0)
    initial_cooldown_period: int = Field(default=0, ge=0)
    idle_replica_count: int | None = Field(default=None, ge=0)
    min_replica_count: int = Field(default=0, ge=0)
    max_replica_count: int = Field(default=100, ge=0)
    advanced: AdvancedConfig | None = None
    fallback: Fallback | None = None
    triggers: list[ScaleTriggers] = Field(min_length=1)

    @model_validator(mode="after")
    def _webhook_checks(self) -> ScaledObjectSpec:
        problems = scaled_object_spec_problems(self)
        if problems:
            raise _field_errors("ScaledObjectSpec", problems, self)
        return self

    @property
    def behavior(self) -> HorizontalPodAutoscalerBehavior | None:
        config = self.advanced.horizontal_pod_autoscaler_config if self.advanced else None
        return config.behavior if config else None

    @property
    def scaling_modifiers(self) -> ScalingModifiers | None:
        modifiers = self.advanced.scaling_modifiers if self.advanced else None
        return modifiers if modifiers is not None and modifiers.formula else None


class HealthStatus(KubeModel):
    number_of_failures: int = 0
    status: Literal["Happy", "Failing"] = "Happy"


class TriggerActivity(KubeModel):
    is_active: bool = False


class GroupVersionKindResource(KubeModel):
    group: str = ""
    version: str = ""
    kind: str = ""
    resource: str = ""


class ScaledObjectStatus(KubeModel):
    scale_target_kind: str | None = None
    scale_target_gvkr: GroupVersionKindResource | None = Field(default=None, alias="scaleTargetGVKR")
    original_replica_count: int | None = None
    last_active_time: str | None = None
    external_metric_names: list[str] | None = None
    resource_metric_names: list[str] | None = None
    composite_scaler_name: str | None = None
    conditions: list[Condition] | None = None
    health: dict[str, HealthStatus] | None = None
    triggers_activity: dict[str, TriggerActivity] | None = None
    paused_replica_count: int | None = None
    hpa_name: str | None = None
    triggers_types: str | None = None
    authentications_types: str | None = None


class ScaledObject(Resource):
    api_version: Literal["keda.sh/v1alpha1"] = "keda.sh/v1alpha1"
    kind: Literal["ScaledObject"] = "ScaledObject"
    spec: ScaledObjectSpec
    status: ScaledObjectStatus | None = None


# ---- ScaledJob ------------------------------------------------------------------------------------

class Rollout(KubeModel):
    strategy: Literal["default", "gradual", "immediate"] = "default"
    propagation_policy: Literal["foreground", "background"] = "background"


class ScalingStrategy(KubeModel):
    strategy: Literal["default", "custom", "accurate", "eager"] = "default"
    custom_scaling_queue_length_deduction: int | None = None
    custom_scaling_running_job_percentage: str | None = None
    """A decimal fraction as a string, e.g. ``"0.5"``; when it does not parse, ``default`` applies."""
    pending_pod_conditions: list[str] | None = None
    multiple_scalers_calculation: Literal["max", "min", "avg", "sum"] = "max"


class ScaledJobSpec(KubeModel):
    job_target_ref: JobSpec
    polling_interval: int = Field(default=30, ge=1)
    successful_jobs_history_limit: int = Field(default=100, ge=0)
    failed_jobs_history_limit: int = Field(default=100, ge=0)
    env_source_container_name: str | None = None
    min_replica_count: int = Field(default=0, ge=0)
    """When greater than maxReplicaCount, maxReplicaCount is used (as KEDA)."""
    max_replica_count: int = Field(default=100, ge=0)
    rollout_strategy: str | None = None
    """Deprecated by KEDA in favour of ``rollout.strategy``; still honoured when ``rollout`` is unset."""
    rollout: Rollout | None = None
    scaling_strategy: ScalingStrategy = Field(default_factory=ScalingStrategy)
    triggers: list[ScaleTriggers] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _default_restart_policy(cls, data: Any) -> Any:
        """As KEDA: a Job template without restartPolicy gets ``OnFailure``."""
        if not isinstance(data, dict):
            return data
        key = "jobTargetRef" if "jobTargetRef" in data else "job_target_ref"
        job = data.get(key)
        template = job.get("template") if isinstance(job, dict) else None
        pod_spec = template.get("spec") if isinstance(template, dict) else None
        if isinstance(pod_spec, dict) and not (pod_spec.get("restartPolicy") or pod_spec.get("restart_policy")):
            pod_spec = {**pod_spec, "restartPolicy": "OnFailure"}
            data = {**data, key: {**job, "template": {**template, "spec": pod_spec}}}  # type: ignore[dict-item]
        return data

    @model_validator(mode="after")
    def _webhook_checks(self) -> ScaledJobSpec:
        problems = _unique_trigger_names(self.triggers)
        for index, trigger in enumerate(self.triggers):
            if trigger.metric_type is not None:
                problems.append((("triggers", index, "metricType"),
                                 "metricType is not supported for ScaledJob triggers"))
        if problems:
            raise _field_errors("ScaledJobSpec", problems, self)
        return self


class ScaledJobStatus(KubeModel):
    last_active_time: str | None = None
    conditions: list[Condition] | None = None
    paused: str | None = Field(default=None, alias="Paused")
    triggers_types: str | None = None
    authentications_types: str | None = None


class ScaledJob(Resource):
    api_version: Literal["keda.sh/v1alpha1"] = "keda.sh/v1alpha1"
    kind: Literal["ScaledJob"] = "ScaledJob"
    spec: ScaledJobSpec
    status: ScaledJobStatus | None = None


# ---- TriggerAuthentication ------------------------------------------------------------------------

class AuthSecretTargetRef(KubeModel):
    parameter: str
    name: str
    key: str


class AuthConfigMapTargetRef(KubeModel):
    parameter: str
    name: str
    key: str


class AuthEnvironment(KubeModel):
    parameter: str
    name: str
    container_name: str | None = None


UNSUPPORTED_AUTH_SOURCES = ("podIdentity", "hashiCorpVault", "azureKeyVault", "gcpSecretManager",
                            "awsSecretManager", "boundServiceAccountToken", "oauth2")


class TriggerAuthenticationSpec(KubeModel):
    secret_target_ref: list[AuthSecretTargetRef] | None = None
    config_map_target_ref: list[AuthConfigMapTargetRef] | None = None
    env: list[AuthEnvironment] | None = None
    file_path: str | None = None
    """A JSON file of ``{parameter: value}``. KEDA restricts it to a root set by an operator flag;
    Capstan resolves it relative to the server's configured auth root and refuses paths outside it."""

    def unsupported_sources(self) -> list[str]:
        """Provider sections present in the spec that Capstan keeps but does not resolve."""
        extra = self.model_extra or {}
        found = [name for name in UNSUPPORTED_AUTH_SOURCES if extra.get(name) is not None]
        identity = extra.get("podIdentity")
        if isinstance(identity, dict) and identity.get("provider") in (None, "", "none"):
            found.remove("podIdentity")
        return found


class TriggerAuthenticationStatus(KubeModel):
    scaledobjects: str | None = None
    scaledjobs: str | None = None


class TriggerAuthentication(Resource):
    api_version: Literal["keda.sh/v1alpha1"] = "keda.sh/v1alpha1"
    kind: Literal["TriggerAuthentication"] = "TriggerAuthentication"
    spec: TriggerAuthenticationSpec = Field(default_factory=TriggerAuthenticationSpec)
    status: TriggerAuthenticationStatus | None = None


class ClusterTriggerAuthentication(Resource):
    api_version: Literal["keda.sh/v1alpha1"] = "keda.sh/v1alpha1"
    kind: Literal["ClusterTriggerAuthentication"] = "ClusterTriggerAuthentication"
    spec: TriggerAuthenticationSpec = Field(default_factory=TriggerAuthenticationSpec)
    status: TriggerAuthenticationStatus | None = None


# ---- validation (KEDA's admission webhook) --------------------------------------------------------

Problem = tuple[tuple[str | int, ...], str]
"""(field location relative to ``spec``, with camelCase names; message)."""


def scaled_object_spec_problems(spec: ScaledObjectSpec) -> list[Problem]:
    """Every rule KEDA's ScaledObject webhook enforces on the spec, as (location, message) pairs."""
    problems: list[Problem] = []
    if spec.min_replica_count > spec.max_replica_count:
        problems.append((("minReplicaCount",),
                         MIN_NOT_OVER_MAX.cause_message(spec.min_replica_count, spec.max_replica_count)))
    if spec.idle_replica_count is not None and spec.idle_replica_count >= spec.min_replica_count:
        problems.append((("idleReplicaCount",),
                         IDLE_UNDER_MIN.cause_message(spec.idle_replica_count, spec.min_replica_count)))
    problems += _unique_trigger_names(spec.triggers)
    problems += _trigger_problems(spec)
    problems += _fallback_problems(spec)
    problems += _modifier_problems(spec)
    problems += _behavior_problems(spec.behavior)
    return problems


def _unique_trigger_names(triggers: list[ScaleTriggers]) -> list[Problem]:
    seen: dict[str, int] = {}
    problems: list[Problem] = []
    for index, trigger in enumerate(triggers):
        if not trigger.name:
            continue
        if trigger.name in seen:
            problems.append((("triggers", index, "name"),
                             f"trigger name {trigger.name!r} is already used by triggers[{seen[trigger.name]}]; "
                             "trigger names must be unique"))
        else:
            seen[trigger.name] = index
    return problems


def _trigger_problems(spec: ScaledObjectSpec) -> list[Problem]:
    problems: list[Problem] = []
    for index, trigger in enumerate(spec.triggers):
        if trigger.use_cached_metrics and trigger.type in ("cpu", "memory", "cron"):
            problems.append((("triggers", index, "useCachedMetrics"),
                             f"useCachedMetrics is not supported for {trigger.type} triggers"))
        if not trigger.is_resource and trigger.metric_type == "Utilization":
            problems.append((("triggers", index, "metricType"),
                             "'Utilization' metric type is unsupported for external metrics, allowed values are "
                             "'Value' or 'AverageValue'"))
        if trigger.is_resource and trigger.metric_type == "Value":
            problems.append((("triggers", index, "metricType"),
                             f"{trigger.type} triggers support metricType 'Utilization' or 'AverageValue'"))
    if all(t.is_resource for t in spec.triggers) and spec.min_replica_count == 0:
        problems.append((("minReplicaCount",), "scaling to zero needs at least one trigger other than cpu or "
                         "memory (cpu/memory triggers are always active); set minReplicaCount to 1 or more"))
    return problems


def _fallback_problems(spec: ScaledObjectSpec) -> list[Problem]:
    if spec.fallback is None:
        return []
    problems: list[Problem] = []
    external = [(i, t) for i, t in enumerate(spec.triggers) if not t.is_resource]
    if not external:
        problems.append((("fallback",), "fallback needs at least one trigger other than cpu or memory"))
    for index, trigger in external:
        if trigger.effective_metric_type not in ("AverageValue", "Value"):
            problems.append((("triggers", index, "metricType"),
                             "fallback is only supported for triggers with metricType AverageValue or Value"))
    modifiers = spec.scaling_modifiers
    if spec.fallback.behavior == "scalingModifiers" and modifiers is None:
        problems.append((("fallback", "behavior"),
                         "behavior 'scalingModifiers' needs advanced.scalingModifiers.formula"))
    return problems


def _modifier_problems(spec: ScaledObjectSpec) -> list[Problem]:
    modifiers = spec.advanced.scaling_modifiers if spec.advanced else None
    if modifiers is None:
        return []
    where = ("advanced", "scalingModifiers")
    set_fields = modifiers.model_dump(exclude_none=True)
    if not modifiers.formula:
        return [((*where, "formula"), "formula is required when scalingModifiers is set")] if set_fields else []
    problems: list[Problem] = []
    names = [t.name for t in spec.triggers if t.name and not t.is_resource]
    unnamed = [i for i, t in enumerate(spec.triggers) if not t.name and not t.is_resource]
    for index in unnamed:
        problems.append((("triggers", index, "name"), "every trigger needs a name when scalingModifiers is used"))
    try:
        compile_formula(modifiers.formula, known_names=names)
    except FormulaError as exc:
        problems.append(((*where, "formula"), f"{exc} in {modifiers.formula!r}"))
    if modifiers.target is None:
        problems.append(((*where, "target"), "target is required when a formula is set"))
    else:
        problems += _positive_number((*where, "target"), modifiers.target, allow_zero=False)
    if modifiers.activation_target is not None:
        problems += _positive_number((*where, "activationTarget"), modifiers.activation_target, allow_zero=True)
    if modifiers.metric_type == "Utilization":
        problems.append(((*where, "metricType"), "metricType must be AverageValue or Value, not Utilization"))
    return problems


def _positive_number(location: tuple[str | int, ...], text: str, allow_zero: bool) -> list[Problem]:
    try:
        number = float(text)
    except ValueError:
        return [(location, f"{text!r} is not a number")]
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "greater than 0"
        return [(location, f"must be a number {bound}, got {text!r}")]
    return []


def _behavior_problems(behavior: HorizontalPodAutoscalerBehavior | None) -> list[Problem]:
    if behavior is None:
        return []
    problems: list[Problem] = []
    where = ("advanced", "horizontalPodAutoscalerConfig", "behavior")
    for direction, rules in (("scaleUp", behavior.scale_up), ("scaleDown", behavior.scale_down)):
        if rules is None:
            continue
        if rules.policies is not None and not rules.policies and rules.select_policy != "Disabled":
            problems.append(((*where, direction, "policies"), "must specify at least one policy"))
        if rules.tolerance is not None:
            problems += _positive_number((*where, direction, "tolerance"), str(rules.tolerance), allow_zero=True)
    return problems


def _field_errors(title: str, problems: list[Problem], value: Any) -> ValidationError:
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError("FieldValueInvalid", "{message}", {"message": message}),
                         loc=location, input=value)
        for location, message in problems
    ])


# ---- kinds ----------------------------------------------------------------------------------------

KEDA_TYPES: tuple[ResourceType, ...] = (
    ResourceType(GROUP, VERSION, "ScaledObject", "scaledobjects", ScaledObject, short_names=("so",)),
    ResourceType(GROUP, VERSION, "ScaledJob", "scaledjobs", ScaledJob, short_names=("sj",)),
    ResourceType(GROUP, VERSION, "TriggerAuthentication", "triggerauthentications", TriggerAuthentication,
                 short_names=("ta", "triggerauth")),
    ResourceType(GROUP, VERSION, "ClusterTriggerAuthentication", "clustertriggerauthentications",
                 ClusterTriggerAuthentication, namespaced=False, short_names=("cta", "clustertriggerauth")),
)
"""The KEDA kinds, for the default registry. ScaledObject has no scale subresource, as in KEDA's CRD."""
