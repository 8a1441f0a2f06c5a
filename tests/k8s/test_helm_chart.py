"""The Helm chart (deploy/helm/capstan) with helm built by hack/helm: lint, render, apply the rendered
manifests to a real API server with server-side apply, let the Deployment's Pods run on a kwok node, and
check the RBAC: what the operator's ServiceAccount may and may not do, and that ``capstan operator`` runs
with nothing but that ServiceAccount's token."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.k8s.cluster import HACK, REPO_ROOT, KubeCluster, wait_until

CHART = REPO_ROOT / "deploy" / "helm" / "capstan"
RELEASE = "capstan"
KWOK_NODE = "capstan-helm-kwok-0"

# (plural, namespaced) of every kind the chart renders; paths come from apiVersion + these.
KINDS = {
    "CustomResourceDefinition": ("customresourcedefinitions", False),
    "ServiceAccount": ("serviceaccounts", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "Deployment": ("deployments", True),
    "Service": ("services", True),
    "PodDisruptionBudget": ("poddisruptionbudgets", True),
}


# ---- helm -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    try:
        built = subprocess.run([str(HACK / "helm")], check=True, capture_output=True, text=True, timeout=3600)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"hack/helm failed:\n{exc.stderr}")
    return built.stdout.strip().splitlines()[-1]


def render(helm: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    """``helm template`` with ``--set`` VALUES (``--set-string`` for those written ``string:key=value``)."""
    args = [helm, "template", RELEASE, str(CHART), "--namespace", namespace, "--include-crds"]
    for value in values:
        args += ["--set-string", value.removeprefix("string:")] if value.startswith("string:") else ["--set", value]
    output = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


KWOK_VALUES = (
    "tolerations[0].key=kwok.x-k8s.io/node", "tolerations[0].operator=Exists",
    "tolerations[0].effect=NoSchedule", "string:nodeSelector.capstan-helm-test=kwok",
    # Pods on kwok nodes cannot be reached: a webhook configuration pointing at them would fail every
    # labelled Job and Capstan object in the shared cluster (tests/k8s/test_webhook_*.py cover the webhook).
    "webhook.enabled=false",
)


def test_helm_lint_passes_strict(helm: str) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_the_chart_refuses_several_replicas_without_leader_election(helm: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        render(helm, "x", "leaderElection.enabled=false")
    assert "replicaCount > 1 needs leaderElection.enabled" in failed.value.stderr


def test_rendered_deployment_runs_two_leader_electing_replicas(helm: str) -> None:
    docs = {doc["kind"]: doc for doc in render(helm, "capstan-system", *KWOK_VALUES)}
    deployment = docs["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:4] == ["operator", "--namespace=$(POD_NAMESPACE)", "--lease-name=capstan-operator",
                                     "--metrics-port=8080"]
    assert pod["tolerations"] == [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "capstan"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


# ---- applying to the API server -------------------------------------------------------------------


def object_path(doc: dict[str, Any], namespace: str) -> str:
    plural, namespaced = KINDS[doc["kind"]]
    group_version = doc["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    scope = f"/namespaces/{namespace}" if namespaced else ""
    return f"{base}{scope}/{plural}/{doc['metadata']['name']}"


def apply(api: httpx.Client, docs: list[dict[str, Any]], namespace: str) -> None:
    """Server-side apply, CRDs first (and Established) so nothing else races them."""
    crds = [doc for doc in docs if doc["kind"] == "CustomResourceDefinition"]
    for doc in crds + [doc for doc in docs if doc["kind"] != "CustomResourceDefinition"]:
        response = api.patch(object_path(doc, namespace), content=yaml.safe_dump(doc),
                             params={"fieldManager": "capstan-helm-test", "force": "true"},
                             headers={"Content-Type": "application/apply-patch+yaml"})
        assert response.status_code in (200, 201), f"{doc['kind']} {doc['metadata']['name']}: {response.text}"
        if doc["kind"] == "CustomResourceDefinition":
            wait_until(lambda d=doc: api.get(object_path(d, namespace)).json(), established,
                       f"CRD {doc['metadata']['name']} to be Established", timeout=60, interval=0.2)


def established(crd: dict[str, Any]) -> bool:
    return any(c["type"] == "Established" and c["status"] == "True"
               for c in (crd.get("status") or {}).get("conditions") or [])


@pytest.fixture(scope="module")
def installed(kube_cluster: KubeCluster, helm: str) -> Iterator[str]:
    """The chart applied into a fresh namespace; yields the namespace."""
    namespace = f"capstan-{uuid.uuid4().hex[:6]}"
    with kube_cluster.client() as api:
        api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": namespace}}).raise_for_status()
        if kube_cluster.has_kwok:
            ensure_kwok_node(api)
        apply(api, render(helm, namespace, *KWOK_VALUES), namespace)
    yield namespace
    with kube_cluster.client() as api:
        for path in (f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{RELEASE}",
                     f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{RELEASE}",
                     f"/api/v1/namespaces/{namespace}", f"/api/v1/nodes/{KWOK_NODE}"):
            api.delete(path)


def ensure_kwok_node(api: httpx.Client) -> None:
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": KWOK_NODE, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"capstan-helm-test": "kwok", "kubernetes.io/hostname": KWOK_NODE}},
            "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                       "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"}}}
    response = api.post("/api/v1/nodes", json=node)
    if response.status_code == 409:  # left by an interrupted run of a kept cluster: make sure it matches
        response = api.patch(f"/api/v1/nodes/{KWOK_NODE}", json={"metadata": node["metadata"]},
                             headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code in (200, 201), response.text


def test_the_api_server_accepts_the_chart_and_both_replicas_run(kube_cluster: KubeCluster, installed: str) -> None:
    if not kube_cluster.has_kwok:
        pytest.skip("kwok was not built: nothing would run the Pods")
    with kube_cluster.client() as api:
        deployment = wait_until(
            lambda: api.get(f"/apis/apps/v1/namespaces/{installed}/deployments/{RELEASE}").json(),
            lambda d: (d.get("status") or {}).get("readyReplicas") == 2,
            "both operator replicas to be Ready on the kwok node")
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == RELEASE
        pods = api.get(f"/api/v1/namespaces/{installed}/pods",
                       params={"labelSelector": "app.kubernetes.io/name=capstan"}).json()["items"]
        assert {pod["spec"]["nodeName"] for pod in pods} == {KWOK_NODE}
        assert {pod["status"]["phase"] for pod in pods} == {"Running"}
        crds = api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions").json()["items"]
        names = {crd["metadata"]["name"] for crd in crds}
        assert {"scaledobjects.keda.sh", "clusterqueues.kueue.x-k8s.io", "workloads.kueue.x-k8s.io"} <= names


# ---- RBAC -----------------------------------------------------------------------------------------


def service_account_user(namespace: str) -> tuple[str, list[str]]:
    return (f"system:serviceaccount:{namespace}:{RELEASE}",
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"])


def allowed(api: httpx.Client, namespace: str, verb: str, resource: str, *, group: str = "",
            subresource: str = "", in_namespace: str | None = None, name: str = "") -> bool:
    user, groups = service_account_user(namespace)
    attributes = {"verb": verb, "group": group, "resource": resource, "subresource": subresource,
                  "namespace": in_namespace or "", "name": name}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user, "groups": groups, "resourceAttributes": attributes}}
    response = api.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
    response.raise_for_status()
    return bool(response.json()["status"].get("allowed"))


def test_the_service_account_may_do_what_the_operator_needs(kube_cluster: KubeCluster, installed: str) -> None:
    ns = installed
    may = [
        ("get", "leases", "coordination.k8s.io", "", ns), ("create", "leases", "coordination.k8s.io", "", ns),
        ("update", "leases", "coordination.k8s.io", "", ns), ("watch", "leases", "coordination.k8s.io", "", ns),
        ("watch", "scaledobjects", "keda.sh", "", "team-a"), ("patch", "scaledobjects", "keda.sh", "status", "t"),
        ("update", "deployments", "apps", "scale", "team-a"), ("get", "statefulsets", "apps", "scale", "team-a"),
        ("create", "jobs", "batch", "", "team-a"), ("delete", "jobs", "batch", "", "team-a"),
        ("create", "workloads", "kueue.x-k8s.io", "", "team-a"),
        ("update", "clusterqueues", "kueue.x-k8s.io", "status", None),
        ("list", "triggerauthentications", "keda.sh", "", "team-a"),
        ("get", "secrets", "", "", "team-a"), ("get", "configmaps", "", "", "team-a"),
        ("create", "events", "", "", "team-a"), ("get", "customresourcedefinitions", "apiextensions.k8s.io", "", None),
    ]
    with kube_cluster.client() as api:
        denied = [case for case in may
                  if not allowed(api, ns, case[0], case[1], group=case[2], subresource=case[3], in_namespace=case[4])]
    assert denied == []


def test_the_service_account_may_not_do_more(kube_cluster: KubeCluster, installed: str) -> None:
    ns = installed
    may_not = [
        ("list", "secrets", "", "", "team-a"), ("watch", "secrets", "", "", "team-a"),
        ("list", "secrets", "", "", ns), ("create", "secrets", "", "", ns), ("update", "secrets", "", "", "team-a"),
        ("list", "configmaps", "", "", "team-a"),
        ("update", "leases", "coordination.k8s.io", "", "kube-system"),  # the Lease only in its own namespace
        ("update", "deployments", "apps", "", "team-a"),  # replicas only through /scale
        ("delete", "deployments", "apps", "", "team-a"), ("create", "pods", "", "", "team-a"),
        ("create", "customresourcedefinitions", "apiextensions.k8s.io", "", None),
        ("delete", "customresourcedefinitions", "apiextensions.k8s.io", "", None),
        ("create", "clusterroles", "rbac.authorization.k8s.io", "", None),
        ("create", "serviceaccounts", "", "token", ns), ("delete", "namespaces", "", "", None),
        ("update", "triggerauthentications", "keda.sh", "", "team-a"),
    ]
    with kube_cluster.client() as api:
        granted = [case for case in may_not
                   if allowed(api, ns, case[0], case[1], group=case[2], subresource=case[3], in_namespace=case[4])]
    assert granted == []


def test_impersonating_the_service_account_secrets_are_readable_by_name_only(
        kube_cluster: KubeCluster, installed: str) -> None:
    user, groups = service_account_user(installed)
    with kube_cluster.client() as api:
        api.post(f"/api/v1/namespaces/{installed}/secrets", json={
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "scaler-auth"},
            "stringData": {"token": "s3cret"}}).raise_for_status()
        as_operator = [("Impersonate-User", user)] + [("Impersonate-Group", group) for group in groups]
        by_name = api.get(f"/api/v1/namespaces/{installed}/secrets/scaler-auth", headers=as_operator)
        listing = api.get(f"/api/v1/namespaces/{installed}/secrets", headers=as_operator)
        everywhere = api.get("/api/v1/secrets", headers=as_operator)
    assert by_name.status_code == 200
    assert listing.status_code == 403
    assert listing.json()["message"] == (f'secrets is forbidden: User "{user}" cannot list resource "secrets" '
                                         f'in API group "" in the namespace "{installed}"')
    assert everywhere.status_code == 403


def test_restricted_secret_access_keeps_secrets_to_the_release_namespace(
        kube_cluster: KubeCluster, helm: str) -> None:
    namespace = f"capstan-r-{uuid.uuid4().hex[:6]}"
    docs = [doc for doc in render(helm, namespace, "rbac.restrictSecretAccess=true", "webhook.enabled=false")
            if doc["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    for doc in docs:  # another release name, so the cluster-wide objects do not clash with the main one
        doc["metadata"]["name"] = "capstan-restricted"
        if doc["kind"].endswith("Binding"):
            doc["roleRef"]["name"] = "capstan-restricted"
            doc["subjects"][0]["name"] = RELEASE
    docs = [d for d in docs if d["kind"] != "ServiceAccount"] + [
        {**d, "metadata": {**d["metadata"], "name": RELEASE}} for d in docs if d["kind"] == "ServiceAccount"]
    with kube_cluster.client() as api:
        api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": namespace}}).raise_for_status()
        try:
            apply(api, docs, namespace)
            assert allowed(api, namespace, "get", "secrets", in_namespace=namespace)
            assert not allowed(api, namespace, "get", "secrets", in_namespace="team-a")
            assert not allowed(api, namespace, "list", "secrets", in_namespace=namespace)
        finally:
            api.delete("/apis/rbac.authorization.k8s.io/v1/clusterroles/capstan-restricted")
            api.delete("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/capstan-restricted")
            api.delete(f"/api/v1/namespaces/{namespace}")


def test_capstan_operator_runs_with_only_the_service_accounts_token(
        kube_cluster: KubeCluster, installed: str, tmp_path: Path) -> None:
    with kube_cluster.client() as api:
        response = api.post(f"/api/v1/namespaces/{installed}/serviceaccounts/{RELEASE}/token", json={
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})
        response.raise_for_status()
        token = response.json()["status"]["token"]
    kubeconfig = tmp_path / "operator.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "op",
        "clusters": [{"name": "c", "cluster": {"server": kube_cluster.server,
                                               "certificate-authority": str(kube_cluster.ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "op", "context": {"cluster": "c", "user": "sa"}}]}))
    output = tmp_path / "operator.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "capstan.cli.main", "operator", "--kubeconfig", str(kubeconfig),
             "--namespace", installed, "--identity", "sa-operator", "--metrics-port", "0",
             "--metrics-host", "127.0.0.1"],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        found = wait_until(lambda: re.search(r"metrics on (http://\S+)", output.read_text()),
                           lambda match: match is not None or process.poll() is not None,
                           "the operator to serve /healthz", timeout=60, interval=0.1)
        assert found is not None, output.read_text()
        url = found.group(1)
        assert httpx.get(f"{url}/healthz", timeout=10).text == "ok"
        wait_until(lambda: httpx.get(f"{url}/leader", timeout=10).text,
                   lambda text: text.startswith("leader sa-operator "), "the operator to lead",
                   timeout=60, interval=0.2)
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'capstan_leader_election_master_status{name="capstan-operator"} 1.0' in metrics
        # The controllers list and watch everything they need as the ServiceAccount: any refusal is logged.
        time.sleep(2)
        assert "forbidden" not in output.read_text().lower(), output.read_text()
        assert "starting controllers: autoscaling, batch" in output.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, output.read_text()
    with kube_cluster.client() as api:
        lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{installed}/leases/capstan-operator").json()
    assert "holderIdentity" not in lease["spec"] and lease["spec"]["leaseTransitions"] == 0
