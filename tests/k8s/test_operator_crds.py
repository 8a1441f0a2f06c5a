"""The chart's CRDs (deploy/helm/capstan/crds/, generated from the models) installed into a real API server:
the kinds are served, and invalid objects are rejected by the API server's CRD validation with the same
field paths the embedded store reports. The messages differ in wording; each pair is pinned here and
listed in docs/kubernetes-mode.md."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from capstan.api.errors import InvalidError, NotFoundError
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


# (object, the API server's causes as (field, reason, message), the embedded store's message). The API
# server's message is '<Kind>.<group> "<name>" is invalid: ' and the causes as "field: message", in
# brackets when there are several; their order varies from request to request.
REJECTED = [
    pytest.param(
        scaled_object("bad-bounds", pollingInterval=0, minReplicaCount=-1,
                      triggers=[{"type": "", "metadata": {"value": "1"}}]),
        [("spec.pollingInterval", "FieldValueInvalid",
          "Invalid value: 0: spec.pollingInterval in body should be greater than or equal to 1"),
         ("spec.triggers[0].type", "FieldValueInvalid",
          'Invalid value: "": spec.triggers[0].type in body should be at least 1 chars long'),
         ("spec.minReplicaCount", "FieldValueInvalid",
          "Invalid value: -1: spec.minReplicaCount in body should be greater than or equal to 0")],
        'ScaledObject "bad-bounds" is invalid: spec.pollingInterval: Input should be greater than or equal to 1, '
        "spec.minReplicaCount: Input should be greater than or equal to 0, "
        "spec.triggers[0].type: String should have at least 1 character",
        id="scaledobject-bounds"),
    pytest.param(
        scaled_object("no-triggers", triggers=[]),
        [("spec.triggers", "FieldValueInvalid",
          "Invalid value: 0: spec.triggers in body should have at least 1 items")],
        'ScaledObject "no-triggers" is invalid: spec.triggers: List should have at least 1 item after validation, '
        "not 0",
        id="scaledobject-no-triggers"),
    pytest.param(
        scaled_object("bad-types", scaleTargetRef={}, pollingInterval="often",
                      triggers=[{"type": "cpu", "metricType": "Bogus", "metadata": {}}]),
        [("spec.scaleTargetRef.name", "FieldValueRequired", "Required value"),
         ("spec.pollingInterval", "FieldValueTypeInvalid",
          'Invalid value: "string": spec.pollingInterval in body must be of type integer: "string"'),
         ("spec.triggers[0].metricType", "FieldValueNotSupported",
          'Unsupported value: "Bogus": supported values: "AverageValue", "Value", "Utilization"')],
        'ScaledObject "bad-types" is invalid: spec.scaleTargetRef.name: Field required, '
        "spec.pollingInterval: Input should be a valid integer, unable to parse string as an integer, "
        "spec.triggers[0].metricType: Input should be 'AverageValue', 'Value' or 'Utilization'",
        id="scaledobject-types"),
    pytest.param(
        cluster_queue("bad-enums", queueingStrategy="Random", stopPolicy="Sometimes"),
        [("spec.queueingStrategy", "FieldValueNotSupported",
          'Unsupported value: "Random": supported values: "StrictFIFO", "BestEffortFIFO"'),
         ("spec.stopPolicy", "FieldValueNotSupported",
          'Unsupported value: "Sometimes": supported values: "None", "Hold", "HoldAndDrain"')],
        "ClusterQueue \"bad-enums\" is invalid: spec.queueingStrategy: Input should be 'StrictFIFO' or "
        "'BestEffortFIFO', spec.stopPolicy: Input should be 'None', 'Hold' or 'HoldAndDrain'",
        id="clusterqueue-enums"),
]


def kube_invalid_message(obj: dict[str, Any], causes: list[tuple[str, str, str]]) -> str:
    group = obj["apiVersion"].split("/")[0]
    listed = ", ".join(f"{field}: {message}" for field, _, message in causes)
    shown = f"[{listed}]" if len(causes) > 1 else listed
    return f'{obj["kind"]}.{group} "{obj["metadata"]["name"]}" is invalid: {shown}'


@pytest.mark.parametrize(("obj", "kube_causes", "embedded_message"), REJECTED)
async def test_invalid_objects_are_rejected_with_the_same_field_paths(
        kube: KubeStore, embedded: Store, obj: dict[str, Any], kube_causes: list[tuple[str, str, str]],
        embedded_message: str) -> None:
    with pytest.raises(InvalidError) as on_kube:
        await kube.create(copy.deepcopy(obj), dry_run=True)
    with pytest.raises(InvalidError) as on_embedded:
        await embedded.create(copy.deepcopy(obj))
    causes = [(c.field, c.reason, c.message) for c in on_kube.value.causes]
    assert sorted(causes) == sorted(kube_causes)
    assert on_kube.value.message == kube_invalid_message(obj, causes)
    assert on_embedded.value.message == embedded_message
    assert sorted(c.field for c in on_embedded.value.causes) == sorted(field for field, _, _ in kube_causes)


# Rules the models check across fields (KEDA's and Kueue's admission webhooks): the generated CRD schema
# cannot express them, so the API server accepts what the embedded store refuses.
ONLY_EMBEDDED = [
    pytest.param(scaled_object("min-over-max", minReplicaCount=5, maxReplicaCount=2),
                 'ScaledObject "min-over-max" is invalid: spec.minReplicaCount: minReplicaCount (5) must not be '
                 "greater than maxReplicaCount (2)", id="scaledobject-min-over-max"),
    pytest.param(cluster_queue("never-reclaim", preemption={
        "reclaimWithinCohort": "Never", "borrowWithinCohort": {"policy": "LowerPriority"}}),
                 'ClusterQueue "never-reclaim" is invalid: spec.preemption: reclaimWithinCohort=Never and '
                 "borrowWithinCohort.Policy!=Never", id="clusterqueue-preemption"),
    pytest.param(cluster_queue("bad-quantity", resourceGroups=[{"coveredResources": ["cpu"], "flavors": [
        {"name": "default", "resources": [{"name": "cpu", "nominalQuota": "lots"}]}]}]),
                 "ClusterQueue \"bad-quantity\" is invalid: spec.resourceGroups[0].flavors[0].resources[0]."
                 "nominalQuota: quantities must match the regular expression "
                 "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got 'lots'", id="clusterqueue-quantity"),
]


@pytest.mark.parametrize(("obj", "embedded_message"), ONLY_EMBEDDED)
async def test_cross_field_rules_are_checked_only_by_the_embedded_store(
        kube: KubeStore, embedded: Store, obj: dict[str, Any], embedded_message: str) -> None:
    accepted = await kube.create(copy.deepcopy(obj), dry_run=True)
    assert accepted["metadata"]["name"] == obj["metadata"]["name"]
    with pytest.raises(InvalidError) as on_embedded:
        await embedded.create(copy.deepcopy(obj))
    assert on_embedded.value.message == embedded_message


async def test_a_valid_scaled_object_round_trips_with_the_models_defaults(kube: KubeStore) -> None:
    created = await kube.create(scaled_object("ok"), dry_run=True)
    spec = created["spec"]
    # Defaults come from the generated schema, as the embedded store applies them from the models.
    assert (spec["pollingInterval"], spec["cooldownPeriod"], spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        30, 300, 0, 100)
