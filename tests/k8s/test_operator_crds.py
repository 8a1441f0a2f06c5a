"""The chart's CRDs (deploy/helm/capstan/crds/, generated from the models) installed into a real API server:
the kinds are served, and invalid objects are rejected by the API server's CRD validation (OpenAPI schema
and CEL rules) with the same causes, field, reason and message, as the embedded store reports for the same
object. The pairs are listed in docs/kubernetes-mode.md."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from capstan.api.errors import InvalidError, NotFoundError
from capstan.api.quantity import KUBE_QUANTITY_PATTERN
from capstan.api.registry import default_registry
from capstan.store.base import Store
from capstan.store.kube import KubeStore, resource_path
from capstan.store.sqlite import SqliteStore
from tests.k8s.cluster import REPO_ROOT, KubeCluster

CRDS = REPO_ROOT / "deploy" / "helm" / "capstan" / "crds"
CRD_PATH = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


async def install_chart_crds(store: KubeStore) -> None:
    """Create or replace every CRD file of the chart, then wait until each is Established."""
    names = []
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            current = await store.request("GET", resource_path(*CRD_PATH, None, name))
        except NotFoundError:
            await store.request("POST", resource_path(*CRD_PATH, None), json_body=crd)
        else:
            crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await store.request("PUT", resource_path(*CRD_PATH, None, name), json_body=crd)
    for name in names:
        for _ in range(300):
            crd = await store.request("GET", resource_path(*CRD_PATH, None, name))
            if any(c["type"] == "Established" and c["status"] == "True"
                   for c in (crd.get("status") or {}).get("conditions") or []):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"CRD {name} never became Established")


@pytest.fixture
async def kube(kube_cluster: KubeCluster) -> AsyncIterator[KubeStore]:
    store = await KubeStore.connect(default_registry(), kubeconfig=kube_cluster.kubeconfig)
    await install_chart_crds(store)
    yield store
    await store.close()


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[Store]:
    store = await SqliteStore.open(tmp_path / "state.db", default_registry())
    yield store
    await store.close()


def scaled_object(name: str, **spec: Any) -> dict[str, Any]:
    base = {"scaleTargetRef": {"name": "web"}, "triggers": [{"type": "cpu", "metadata": {"value": "50"}}]}
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": "default"}, "spec": {**base, **spec}}


def cluster_queue(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ClusterQueue", "metadata": {"name": name},
            "spec": spec}


QUANTITY = KUBE_QUANTITY_PATTERN
# The API server adds this cause (field "<nil>") when schema errors kept it from running the CEL rules; the
# embedded store has nothing to add there (a model's cross-field checks never run on fields that failed).
CEL_NOT_RUN = ("<nil>", "FieldValueInvalid", "Invalid value: null: some validation rules were not checked because "
               "the object was invalid; correct the existing errors to complete validation")

# (object, the causes as (field, reason, message)). Both validators must report exactly these: the API server
# through the generated CRD (schema and CEL rules), the embedded store through the models.
REJECTED = [
    pytest.param(
        scaled_object("bad-bounds", pollingInterval=0, minReplicaCount=-1,
                      triggers=[{"type": "", "metadata": {"value": "1"}}]),
        [("spec.pollingInterval", "FieldValueInvalid",
          "Invalid value: 0: spec.pollingInterval in body should be greater than or equal to 1"),
         ("spec.minReplicaCount", "FieldValueInvalid",
          "Invalid value: -1: spec.minReplicaCount in body should be greater than or equal to 0"),
         ("spec.triggers[0].type", "FieldValueInvalid",
          'Invalid value: "": spec.triggers[0].type in body should be at least 1 chars long')],
        id="scaledobject-bounds"),
    pytest.param(
        scaled_object("no-triggers", triggers=[]),
        [("spec.triggers", "FieldValueInvalid",
          "Invalid value: 0: spec.triggers in body should have at least 1 items")],
        id="scaledobject-no-triggers"),
    pytest.param(
        scaled_object("bad-types", scaleTargetRef={}, pollingInterval="often",
                      triggers=[{"type": "cpu", "metricType": "Bogus", "metadata": {}}]),
        [("spec.scaleTargetRef.name", "FieldValueRequired", "Required value"),
         ("spec.pollingInterval", "FieldValueTypeInvalid",
          'Invalid value: "string": spec.pollingInterval in body must be of type integer: "string"'),
         ("spec.triggers[0].metricType", "FieldValueNotSupported",
          'Unsupported value: "Bogus": supported values: "AverageValue", "Value", "Utilization"')],
        id="scaledobject-types"),
    pytest.param(
        scaled_object("min-over-max", minReplicaCount=5, maxReplicaCount=2, idleReplicaCount=7),
        [("spec.minReplicaCount", "FieldValueInvalid",
          "Invalid value: minReplicaCount (5) must not be greater than maxReplicaCount (2)"),
         ("spec.idleReplicaCount", "FieldValueInvalid",
          "Invalid value: idleReplicaCount (7) must be less than minReplicaCount (5)")],
        id="scaledobject-cel-replica-bounds"),
    pytest.param(
        cluster_queue("bad-enums", queueingStrategy="Random", stopPolicy="Sometimes"),
        [("spec.queueingStrategy", "FieldValueNotSupported",
          'Unsupported value: "Random": supported values: "StrictFIFO", "BestEffortFIFO"'),
         ("spec.stopPolicy", "FieldValueNotSupported",
          'Unsupported value: "Sometimes": supported values: "None", "Hold", "HoldAndDrain"')],
        id="clusterqueue-enums"),
    pytest.param(
        cluster_queue("never-reclaim", preemption={
            "reclaimWithinCohort": "Never", "borrowWithinCohort": {"policy": "LowerPriority"}}),
        [("spec.preemption", "FieldValueInvalid",
          "Invalid value: reclaimWithinCohort=Never and borrowWithinCohort.Policy!=Never")],
        id="clusterqueue-cel-preemption"),
    pytest.param(
        cluster_queue("bad-quantity", resourceGroups=[{"coveredResources": ["cpu"], "flavors": [
            {"name": "default", "resources": [{"name": "cpu", "nominalQuota": "lots", "borrowingLimit": 1.5}]}]}]),
        [("spec.resourceGroups[0].flavors[0].resources[0].nominalQuota", "FieldValueInvalid",
          'Invalid value: "lots": spec.resourceGroups[0].flavors[0].resources[0].nominalQuota in body should '
          f"match '{QUANTITY}'"),
         ("spec.resourceGroups[0].flavors[0].resources[0].borrowingLimit", "FieldValueTypeInvalid",
          'Invalid value: "number": spec.resourceGroups[0].flavors[0].resources[0].borrowingLimit in body must be '
          'of type integer,string: "number"')],
        id="clusterqueue-quantity"),
]


def kube_invalid_message(obj: dict[str, Any], causes: list[tuple[str, str, str]]) -> str:
    group = obj["apiVersion"].split("/")[0]
    listed = ", ".join(f"{field}: {message}" for field, _, message in causes)
    shown = f"[{listed}]" if len(causes) > 1 else listed
    return f'{obj["kind"]}.{group} "{obj["metadata"]["name"]}" is invalid: {shown}'


@pytest.mark.parametrize(("obj", "expected"), REJECTED)
async def test_invalid_objects_are_rejected_with_the_same_causes_as_the_embedded_store(
        kube: KubeStore, embedded: Store, obj: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    with pytest.raises(InvalidError) as on_kube:
        await kube.create(copy.deepcopy(obj), dry_run=True)
    with pytest.raises(InvalidError) as on_embedded:
        await embedded.create(copy.deepcopy(obj))
    kube_causes = [(c.field, c.reason, c.message) for c in on_kube.value.causes]
    assert on_kube.value.message == kube_invalid_message(obj, kube_causes)
    embedded_causes = [(c.field, c.reason, c.message) for c in on_embedded.value.causes]
    # Same causes, word for word; the API server lists them in varying order.
    assert sorted(c for c in kube_causes if c != CEL_NOT_RUN) == sorted(expected)
    assert sorted(embedded_causes) == sorted(expected)
    # The embedded message: '<Kind> "<name>" is invalid: ' and the same "field: message" pairs.
    assert on_embedded.value.message == (f'{obj["kind"]} "{obj["metadata"]["name"]}" is invalid: '
                                         + ", ".join(f"{field}: {message}" for field, _, message in embedded_causes))


# KEDA's other webhook rules (unique trigger names, fallback, scalingModifiers) stay in the models only: on
# Kubernetes the admission webhook (capstan operator --webhook-port) or the controller reports them.
async def test_rules_without_a_cel_twin_are_checked_only_by_the_embedded_store(
        kube: KubeStore, embedded: Store) -> None:
    obj = scaled_object("twice", minReplicaCount=1,
                        triggers=[{"type": "cpu", "name": "a", "metadata": {"value": "50"}},
                                  {"type": "memory", "name": "a", "metadata": {"value": "50"}}])
    accepted = await kube.create(copy.deepcopy(obj), dry_run=True)
    assert accepted["metadata"]["name"] == "twice"
    with pytest.raises(InvalidError) as on_embedded:
        await embedded.create(copy.deepcopy(obj))
    assert on_embedded.value.message == (
        'ScaledObject "twice" is invalid: spec.triggers[1].name: trigger name \'a\' is already used by '
        "triggers[0]; trigger names must be unique")


async def test_a_valid_scaled_object_round_trips_with_the_models_defaults(kube: KubeStore) -> None:
    created = await kube.create(scaled_object("ok"), dry_run=True)
    spec = created["spec"]
    # Defaults come from the generated schema, as the embedded store applies them from the models.
    assert (spec["pollingInterval"], spec["cooldownPeriod"], spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        30, 300, 0, 100)
