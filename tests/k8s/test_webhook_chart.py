"""The chart's webhook templates (deploy/helm/capstan/templates/webhook*.yaml): the same webhooks, rules and
selectors as ``capstan.server.webhook.webhook_configurations`` (what the other webhook tests register), valid
for the API server (a dry-run create), and the operator flags that go with them."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from capstan.server.operator import crd_types
from capstan.server.webhook import webhook_configurations
from tests.k8s.cluster import HACK, REPO_ROOT, KubeCluster

CHART = REPO_ROOT / "deploy" / "helm" / "capstan"


@pytest.fixture(scope="module")
def helm() -> str:
    built = subprocess.run([str(HACK / "helm")], check=True, capture_output=True, text=True, timeout=3600)
    return built.stdout.strip().splitlines()[-1]


def render(helm: str, *values: str) -> dict[tuple[str, str], dict[str, Any]]:
    args = [helm, "template", "capstan", str(CHART), "--namespace", "capstan-system"]
    for value in values:
        args += ["--set", value]
    output = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(output) if d}


def comparable(config: dict[str, Any]) -> list[tuple[Any, ...]]:
    def rules(webhook: dict[str, Any]) -> list[tuple[Any, ...]]:
        return sorted((tuple(r["apiGroups"]), tuple(r["apiVersions"]), tuple(r["operations"]),
                       tuple(sorted(r["resources"]))) for r in webhook["rules"])

    def path(webhook: dict[str, Any]) -> str:
        client = webhook["clientConfig"]
        return str(client["service"]["path"] if "service" in client else client["url"])

    return [(w["name"], w["failurePolicy"], w["sideEffects"], w["admissionReviewVersions"], w.get("objectSelector"),
             rules(w), path(w)) for w in config["webhooks"]]


def test_the_chart_renders_the_webhooks_the_operator_serves(helm: str) -> None:
    docs = render(helm)
    mutating, validating = webhook_configurations(lambda path: {"url": path}, crd_rules=crd_types())
    assert comparable(docs[("MutatingWebhookConfiguration", "capstan")]) == comparable(mutating)
    assert comparable(docs[("ValidatingWebhookConfiguration", "capstan")]) == comparable(validating)
    for hook in docs[("MutatingWebhookConfiguration", "capstan")]["webhooks"]:
        assert hook["objectSelector"] == {"matchExpressions": [
            {"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]}
        assert hook["clientConfig"]["service"] == {"name": "capstan-webhook", "namespace": "capstan-system",
                                                   "path": "/mutate"}
    args = docs[("Deployment", "capstan")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-5:] == ["--webhook-port=9443", "--webhook-cert-dir=/tmp/k8s-webhook-server/serving-certs",
                         "--webhook-cert-secret=capstan-webhook-cert", "--webhook-service=capstan-webhook",
                         "--webhook-configuration=capstan"]
    assert docs[("Secret", "capstan-webhook-cert")]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_with_cert_manager_the_ca_is_injected_and_the_secret_mounted(helm: str) -> None:
    docs = render(helm, "webhook.certManager.enabled=true")
    assert ("Secret", "capstan-webhook-cert") not in docs
    assert docs[("Certificate", "capstan-webhook")]["spec"]["dnsNames"][0] == "capstan-webhook.capstan-system.svc"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert docs[(kind, "capstan")]["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": "capstan-system/capstan-webhook"}
    pod = docs[("Deployment", "capstan")]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "webhook-certs", "secret": {"secretName": "capstan-webhook-cert"}}]
    assert not any(a.startswith("--webhook-cert-secret") for a in pod["containers"][0]["args"])


def test_without_the_webhook_nothing_of_it_is_rendered(helm: str) -> None:
    kinds = {kind for kind, _ in render(helm, "webhook.enabled=false")}
    assert not kinds & {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "Secret"}


def test_the_api_server_accepts_the_rendered_configurations(helm: str, kube_cluster: KubeCluster) -> None:
    docs = render(helm)
    with kube_cluster.client() as api:
        for kind, plural in (("MutatingWebhookConfiguration", "mutatingwebhookconfigurations"),
                             ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations")):
            response = api.post(f"/apis/admissionregistration.k8s.io/v1/{plural}", params={"dryRun": "All"},
                                json=docs[(kind, "capstan")])
            assert response.status_code == 201, response.text
