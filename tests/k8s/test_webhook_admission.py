"""Capstan's admission webhook called by a real API server: the embedded store's mutators and validators,
on Kubernetes.

The webhook is served by the test itself (``capstan.server.webhook.serve_webhook``, what ``capstan
operator --webhook-port`` runs) at https://127.0.0.1:PORT with a test-made CA; the API server calls it
through Mutating- and ValidatingWebhookConfigurations registered for this test only."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from capstan.api.errors import InvalidError
from capstan.api.registry import default_registry
from capstan.controllers.batch.validation import install_admission_hooks
from capstan.server.operator import crd_types
from capstan.server.webhook import VALIDATING_WEBHOOK, AdmissionWebhook, capstan_admission_hooks, serve_webhook
from capstan.store.base import Obj
from capstan.store.kube import KubeStore, install_crds
from capstan.store.sqlite import SqliteStore
from tests.k8s.batch_kit import delete_namespace
from tests.k8s.cluster import KubeCluster
from tests.k8s.webhook_kit import SCOPE_LABEL, loopback_cert, registered

QUEUE = "kueue.x-k8s.io/queue-name"


@dataclass
class Env:
    store: KubeStore
    webhook: AdmissionWebhook
    scope: str
    namespace: str

    def labels(self, **more: str) -> dict[str, str]:
        return {SCOPE_LABEL: self.scope, **more}


@pytest.fixture
async def env(kube_cluster: KubeCluster, tmp_path: Path) -> AsyncIterator[Env]:
    store = await KubeStore.connect(default_registry(), kubeconfig=kube_cluster.kubeconfig)
    await install_crds(store, crd_types())
    scope = uuid.uuid4().hex[:8]
    namespace = f"wh-{scope}"
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    cert = loopback_cert(tmp_path / "certs")
    webhook = AdmissionWebhook(capstan_admission_hooks(store, crd_types()))
    try:
        async with serve_webhook(webhook, "127.0.0.1", 0, tmp_path / "certs") as url, \
                registered(store, url, cert.ca_pem, f"capstan-test-{scope}", scope):
            yield Env(store, webhook, scope, namespace)
    finally:
        await delete_namespace(store, namespace)
        await store.close()


def job(env: Env, name: str, labels: dict[str, str]) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": env.namespace,
                                                                  "labels": labels},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]}}}}


async def test_a_queued_job_is_created_suspended(env: Env) -> None:
    created = await env.store.create(job(env, "queued", env.labels(**{QUEUE: "team-a"})))
    assert created["spec"]["suspend"] is True
    stored = await env.store.get(env.store.registry.lookup("jobs"), "queued", env.namespace)
    assert stored["spec"]["suspend"] is True
    assert env.webhook.reviews >= 2  # mutating and validating


async def test_a_job_without_a_queue_name_never_reaches_the_webhook(env: Env) -> None:
    before = env.webhook.reviews
    created = await env.store.create(job(env, "plain", env.labels()), dry_run=True)
    assert created["spec"]["suspend"] is False  # the API server's default, untouched
    assert env.webhook.reviews == before


async def test_a_queued_plain_pod_is_gated(env: Env) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "namespace": env.namespace,
                                                           "labels": env.labels(**{QUEUE: "team-a"})},
           "spec": {"containers": [{"name": "main", "image": "busybox"}]}}
    created = await env.store.create(pod, dry_run=True)
    assert created["spec"]["schedulingGates"] == [{"name": "kueue.x-k8s.io/admission"}]
    assert created["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "solo"
    assert created["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "1"


async def test_a_missing_priority_class_is_denied(env: Env) -> None:
    labels = env.labels(**{QUEUE: "team-a", "kueue.x-k8s.io/priority-class": "nope"})
    with pytest.raises(InvalidError) as denied:
        await env.store.create(job(env, "urgent", labels))
    assert denied.value.message == (
        'admission webhook "vjob.capstan.io" denied the request: Job "urgent" is invalid: '
        'metadata.labels[kueue.x-k8s.io/priority-class]: WorkloadPriorityClass "nope" not found')


def cluster_queue(env: Env, name: str, **spec: Any) -> Obj:
    return {"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ClusterQueue",
            "metadata": {"name": name, "labels": env.labels()}, "spec": spec}


async def embedded_rejection(tmp_path: Path, obj: Obj) -> str:
    store = await SqliteStore.open(tmp_path / "embedded.db", default_registry())
    try:
        with pytest.raises(InvalidError) as rejected:
            await store.create(copy.deepcopy(obj))
        return rejected.value.message
    finally:
        await store.close()


@pytest.mark.parametrize("spec", [
    pytest.param({"preemption": {"reclaimWithinCohort": "Never", "borrowWithinCohort": {"policy": "LowerPriority"}}},
                 id="preemption"),
    pytest.param({"resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
        {"name": "default", "resources": [{"name": "cpu", "nominalQuota": "lots"}]}]}]}, id="quantity"),
])
async def test_a_bad_cluster_queue_is_denied_with_the_embedded_message(env: Env, tmp_path: Path,
                                                                         spec: dict[str, Any]) -> None:
    obj = cluster_queue(env, f"bad-{env.scope}", **spec)
    embedded = await embedded_rejection(tmp_path, obj)
    with pytest.raises(InvalidError) as denied:
        await env.store.create(copy.deepcopy(obj))
    # The CRD's schema (quantity pattern) and CEL rule (preemption) refuse these before validating webhooks
    # run, in the embedded store's words; only the frame names the group.
    assert denied.value.message == embedded.replace('ClusterQueue "', 'ClusterQueue.kueue.x-k8s.io "', 1)
    assert [c.field for c in denied.value.causes] == [c.field for c in (await _causes(tmp_path, obj))]


async def _causes(tmp_path: Path, obj: Obj) -> list[Any]:
    store = await SqliteStore.open(tmp_path / "causes.db", default_registry())
    try:
        with pytest.raises(InvalidError) as rejected:
            await store.create(copy.deepcopy(obj))
        return list(rejected.value.causes)
    finally:
        await store.close()


def one_flavor_queue(env: Env, name: str, flavor: str) -> Obj:
    return cluster_queue(env, name, resourceGroups=[{"coveredResources": ["cpu"], "flavors": [
        {"name": flavor, "resources": [{"name": "cpu", "nominalQuota": "4"}]}]}])


async def test_a_cluster_queue_naming_a_missing_flavor_is_denied_with_the_embedded_message(
        env: Env, tmp_path: Path) -> None:
    # A cross-object rule: no CRD schema or CEL rule can see other objects; only the webhook checks it.
    obj = one_flavor_queue(env, f"lost-{env.scope}", f"nowhere-{env.scope}")
    embedded_store = await SqliteStore.open(tmp_path / "hooks.db", default_registry())
    try:
        install_admission_hooks(embedded_store)
        with pytest.raises(InvalidError) as on_embedded:
            await embedded_store.create(copy.deepcopy(obj))
    finally:
        await embedded_store.close()
    with pytest.raises(InvalidError) as denied:
        await env.store.create(copy.deepcopy(obj))
    assert denied.value.message == f'admission webhook "{VALIDATING_WEBHOOK}" denied the request: ' + (
        on_embedded.value.message)
    assert on_embedded.value.message == (
        f'ClusterQueue "lost-{env.scope}" is invalid: spec.resourceGroups[0].flavors[0].name: Not found: '
        f'"nowhere-{env.scope}": no ResourceFlavor named "nowhere-{env.scope}"')
    assert [(c.field, c.reason) for c in denied.value.causes] == [
        ("spec.resourceGroups[0].flavors[0].name", "FieldValueNotFound")]


async def test_a_good_cluster_queue_passes(env: Env) -> None:
    flavor = f"here-{env.scope}"
    await env.store.create({"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "ResourceFlavor",
                            "metadata": {"name": flavor, "labels": env.labels()}})
    try:
        created = await env.store.create(one_flavor_queue(env, f"good-{env.scope}", flavor), dry_run=True)
        assert created["metadata"]["name"] == f"good-{env.scope}"
    finally:
        await env.store.delete(env.store.registry.lookup("resourceflavors.kueue.x-k8s.io"), flavor)


def scaled_object(env: Env, name: str) -> Obj:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": env.namespace, "labels": env.labels()},
            "spec": {"scaleTargetRef": {"name": "web"}, "minReplicaCount": 1,
                     "triggers": [{"type": "cpu", "metadata": {"value": "50"}}]}}


async def test_a_second_scaled_object_for_a_target_is_denied(env: Env) -> None:
    await env.store.create(scaled_object(env, "first"))
    with pytest.raises(InvalidError) as denied:
        await env.store.create(scaled_object(env, "second"))
    # The embedded store's message (tests/integration/test_autoscaling_scaledobject.py), after the prefix.
    assert denied.value.message == (
        f'admission webhook "{VALIDATING_WEBHOOK}" denied the request: ScaledObject "second" is invalid: '
        "spec.scaleTargetRef: the workload 'web' of type 'Deployment' is already managed by the ScaledObject "
        "'first'")
    # An update of the first one (same target) is fine.
    first = await env.store.get(env.store.registry.lookup("scaledobjects"), "first", env.namespace)
    first["spec"]["pollingInterval"] = 15
    assert (await env.store.update(first))["spec"]["pollingInterval"] == 15


async def test_min_over_max_is_denied(env: Env) -> None:
    obj = scaled_object(env, "bounds")
    obj["spec"].update(minReplicaCount=5, maxReplicaCount=2)
    with pytest.raises(InvalidError) as denied:
        await env.store.create(obj)
    # The CRD's CEL rule refuses it before validating webhooks run, in the embedded store's words.
    assert denied.value.message == (
        'ScaledObject.keda.sh "bounds" is invalid: '
        "spec.minReplicaCount: Invalid value: minReplicaCount (5) must not be greater than maxReplicaCount (2)")
