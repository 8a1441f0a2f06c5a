"""KEDA models: KEDA's field names and defaults, and the checks KEDA's admission webhook performs."""

from __future__ import annotations

from typing import Any

import pytest

from capstan.api.errors import InvalidError
from capstan.api.keda import KEDA_TYPES, ScaledJob, ScaledObject, TriggerAuthentication
from capstan.api.registry import BUILTIN_TYPES, Registry
from capstan.api.schema import custom_resource_definition

REGISTRY = Registry((*BUILTIN_TYPES, *KEDA_TYPES))


def scaled_object(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"scaleTargetRef": {"name": "web"},
                            "triggers": [{"type": "prometheus", "name": "p", "metadata": {"threshold": "10"}}]}
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "web", "namespace": "d"},
            "spec": {**base, **spec}}


def causes(obj: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidError) as caught:
        REGISTRY.for_object(obj).validate(obj)
    return [(c.field, c.message) for c in caught.value.causes]


def test_scaled_object_defaults_are_kedas() -> None:
    spec = REGISTRY.lookup("so").normalize(scaled_object())["spec"]
    assert spec["pollingInterval"] == 30
    assert spec["cooldownPeriod"] == 300
    assert spec["initialCooldownPeriod"] == 0
    assert spec["minReplicaCount"] == 0
    assert spec["maxReplicaCount"] == 100
    assert "idleReplicaCount" not in spec
    assert spec["scaleTargetRef"] == {"name": "web", "apiVersion": "apps/v1", "kind": "Deployment"}
    model = ScaledObject.model_validate(scaled_object())
    assert model.spec.triggers[0].effective_metric_type == "AverageValue"


def test_full_keda_manifest_round_trips() -> None:
    obj = scaled_object(
        idleReplicaCount=0, minReplicaCount=1, maxReplicaCount=10,
        advanced={"restoreToOriginalReplicaCount": True, "horizontalPodAutoscalerConfig": {
            "name": "custom-hpa", "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60, "policies": [
                {"type": "Pods", "value": 1, "periodSeconds": 30}]}}},
            "scalingModifiers": {"formula": "p * 2", "target": "5", "activationTarget": "1", "metricType": "Value"}},
        fallback={"failureThreshold": 3, "replicas": 6, "behavior": "currentReplicasIfHigher"},
        triggers=[{"type": "prometheus", "name": "p", "metadata": {"threshold": "10"},
                   "authenticationRef": {"name": "creds"}, "metricType": "Value", "useCachedMetrics": True,
                   "futureField": 1}])
    normalized = REGISTRY.lookup("scaledobjects").normalize(obj)
    assert normalized["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}
    trigger = normalized["spec"]["triggers"][0]
    assert trigger["authenticationRef"] == {"name": "creds", "kind": "TriggerAuthentication"}
    assert trigger["futureField"] == 1


def test_replica_bounds_are_checked_with_field_paths() -> None:
    assert causes(scaled_object(minReplicaCount=5, maxReplicaCount=3)) == [
        ("spec.minReplicaCount", "Invalid value: minReplicaCount (5) must not be greater than maxReplicaCount (3)")]
    assert causes(scaled_object(minReplicaCount=2, idleReplicaCount=2)) == [
        ("spec.idleReplicaCount", "Invalid value: idleReplicaCount (2) must be less than minReplicaCount (2)")]


def test_the_error_message_names_the_object_and_fields() -> None:
    obj = scaled_object(minReplicaCount=5, maxReplicaCount=3)
    with pytest.raises(InvalidError) as caught:
        REGISTRY.for_object(obj).validate(obj)
    assert str(caught.value) == ('ScaledObject "web" is invalid: spec.minReplicaCount: Invalid value: '
                                 'minReplicaCount (5) must not be greater than maxReplicaCount (3)')


def test_trigger_names_must_be_unique() -> None:
    triggers = [{"type": "prometheus", "name": "q", "metadata": {}}, {"type": "kafka", "name": "q", "metadata": {}}]
    assert causes(scaled_object(triggers=triggers)) == [
        ("spec.triggers[1].name", "trigger name 'q' is already used by triggers[0]; trigger names must be unique")]


def test_metadata_values_must_be_strings() -> None:
    found = causes(scaled_object(triggers=[{"type": "prometheus", "metadata": {"threshold": 10}}]))
    assert found == [("spec.triggers[0].metadata.threshold", 'Invalid value: "integer": '
                      'spec.triggers[0].metadata.threshold in body must be of type string: "integer"')]


def test_fallback_needs_average_value_or_value_metrics() -> None:
    obj = scaled_object(fallback={"failureThreshold": 3, "replicas": 2}, minReplicaCount=1,
                        triggers=[{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}])
    assert causes(obj) == [("spec.fallback", "fallback needs at least one trigger other than cpu or memory")]
    obj = scaled_object(fallback={"failureThreshold": 3, "replicas": 2},
                        triggers=[{"type": "kafka", "metricType": "Utilization", "metadata": {}}])
    assert ("spec.triggers[0].metricType", "fallback is only supported for triggers with metricType AverageValue "
            "or Value") in causes(obj)


def test_scaling_modifiers_formula_must_compile_and_needs_a_target() -> None:
    obj = scaled_object(advanced={"scalingModifiers": {"formula": "p +"}})
    assert causes(obj) == [
        ("spec.advanced.scalingModifiers.formula",
         "the formula ends where an operand was expected at position 3 in 'p +'"),
        ("spec.advanced.scalingModifiers.target", "target is required when a formula is set")]
    obj = scaled_object(advanced={"scalingModifiers": {"formula": "p + other", "target": "0"}})
    assert causes(obj) == [
        ("spec.advanced.scalingModifiers.formula",
         "unknown trigger name 'other' (the formula can use: p) at position 4 in 'p + other'"),
        ("spec.advanced.scalingModifiers.target", "must be a number greater than 0, got '0'")]


def test_cpu_memory_only_cannot_scale_to_zero_and_cached_metrics_rules() -> None:
    obj = scaled_object(triggers=[{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}])
    assert causes(obj)[0][0] == "spec.minReplicaCount"
    obj = scaled_object(triggers=[{"type": "cron", "useCachedMetrics": True, "metadata": {}}])
    assert causes(obj) == [("spec.triggers[0].useCachedMetrics", "useCachedMetrics is not supported for cron triggers")]


def test_scaled_job_defaults_and_checks() -> None:
    obj = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "worker"},
           "spec": {"jobTargetRef": {"template": {"spec": {"containers": [{"name": "w", "image": "w"}]}}},
                    "triggers": [{"type": "redis", "metadata": {"listName": "jobs"}}]}}
    spec = REGISTRY.lookup("sj").normalize(obj)["spec"]
    limits = (spec["pollingInterval"], spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"])
    assert limits == (30, 100, 100)
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 100)
    assert spec["scalingStrategy"] == {"strategy": "default", "multipleScalersCalculation": "max"}
    obj["spec"]["triggers"][0]["metricType"] = "Value"
    assert causes(obj) == [("spec.triggers[0].metricType", "metricType is not supported for ScaledJob triggers")]
    assert ScaledJob.model_validate({**obj, "spec": {**obj["spec"], "triggers": [{"type": "redis"}]}}).spec \
        .job_target_ref.backoff_limit == 6


def test_trigger_authentication_keeps_unsupported_providers() -> None:
    obj = {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication", "metadata": {"name": "creds"},
           "spec": {"secretTargetRef": [{"parameter": "password", "name": "db", "key": "pw"}],
                    "env": [{"parameter": "host", "name": "DB_HOST"}],
                    "hashiCorpVault": {"address": "https://vault"}, "podIdentity": {"provider": "none"}}}
    normalized = REGISTRY.lookup("ta").normalize(obj)
    assert normalized["spec"]["hashiCorpVault"] == {"address": "https://vault"}
    assert TriggerAuthentication.model_validate(obj).spec.unsupported_sources() == ["hashiCorpVault"]


def test_kinds_resolve_by_short_name_and_generate_crds() -> None:
    assert [REGISTRY.lookup(n).kind for n in ("so", "sj", "ta", "triggerauth", "cta", "clustertriggerauth")] == [
        "ScaledObject", "ScaledJob", "TriggerAuthentication", "TriggerAuthentication",
        "ClusterTriggerAuthentication", "ClusterTriggerAuthentication"]
    crd = custom_resource_definition(REGISTRY.lookup("cta"))
    assert crd["metadata"]["name"] == "clustertriggerauthentications.keda.sh"
    assert crd["spec"]["scope"] == "Cluster"
    so = custom_resource_definition(REGISTRY.lookup("so"))
    assert "scale" not in so["spec"]["versions"][0]["subresources"]
    spec = so["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["cooldownPeriod"]["default"] == 300
