"""The webhook's self-signed mode on a real API server (what the chart uses without cert-manager): the
serving certificate lives in a Secret shared by the replicas, the CA goes into the configurations."""

from __future__ import annotations

import asyncio
import base64
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from capstan.api.registry import default_registry
from capstan.server.webhook import (
    ServingCert,
    ensure_serving_secret,
    inject_ca_bundle,
    self_signed_serving_cert,
    webhook_configurations,
)
from capstan.store.kube import KubeStore
from tests.k8s.batch_kit import delete_namespace
from tests.k8s.cluster import KubeCluster
from tests.k8s.webhook_kit import SCOPE_LABEL


@pytest.fixture
async def kube(kube_cluster: KubeCluster) -> AsyncIterator[tuple[KubeStore, str]]:
    store = await KubeStore.connect(default_registry(), kubeconfig=kube_cluster.kubeconfig)
    namespace = f"whc-{uuid.uuid4().hex[:8]}"
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    yield store, namespace
    await delete_namespace(store, namespace)
    await store.close()


def test_the_certificate_is_for_the_service_and_signed_by_the_ca(tmp_path: Path) -> None:
    made = self_signed_serving_cert(["capstan-webhook.capstan-system.svc"], ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(made.cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["capstan-webhook.capstan-system.svc"]
    made.write(tmp_path)
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == "0o600"
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")  # key and certificate agree


async def test_replicas_share_one_certificate_through_the_secret(kube: tuple[KubeStore, str]) -> None:
    store, namespace = kube
    # The chart's placeholder: the keys are there, empty.
    await store.request("POST", f"/api/v1/namespaces/{namespace}/secrets", json_body={
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "capstan-webhook-cert", "namespace": namespace},
        "data": {"tls.crt": "", "tls.key": "", "ca.crt": ""}})
    first, second = await asyncio.gather(*(ensure_serving_secret(store, namespace, "capstan-webhook-cert",
                                                                 "capstan-webhook") for _ in range(2)))
    again = await ensure_serving_secret(store, namespace, "capstan-webhook-cert", "capstan-webhook")
    assert first == second == again
    stored = await store.request("GET", f"/api/v1/namespaces/{namespace}/secrets/capstan-webhook-cert")
    assert ServingCert.from_secret_data(stored["data"]) == first
    cert = x509.load_pem_x509_certificate(first.cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"capstan-webhook.{namespace}.svc" in names.get_values_for_type(x509.DNSName)


async def test_the_ca_is_injected_into_both_configurations(kube: tuple[KubeStore, str]) -> None:
    store, namespace = kube
    name = f"capstan-certs-{namespace}"
    mutating, validating = webhook_configurations(
        lambda path: {"service": {"name": "capstan-webhook", "namespace": namespace, "path": path}}, name=name)
    for config in (mutating, validating):  # never reached by other tests' objects
        for webhook in config["webhooks"]:
            webhook["objectSelector"] = {"matchLabels": {SCOPE_LABEL: name}}
    base = "/apis/admissionregistration.k8s.io/v1"
    await store.request("POST", f"{base}/mutatingwebhookconfigurations", json_body=mutating)
    await store.request("POST", f"{base}/validatingwebhookconfigurations", json_body=validating)
    try:
        made = await ensure_serving_secret(store, namespace, "capstan-webhook-cert", "capstan-webhook")
        await inject_ca_bundle(store, made.ca_pem, mutating=[name], validating=[name])
        await inject_ca_bundle(store, made.ca_pem, mutating=[name], validating=[name])  # nothing to change
        for plural in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            stored = await store.request("GET", f"{base}/{plural}/{name}")
            assert {base64.b64decode(w["clientConfig"]["caBundle"]) for w in stored["webhooks"]} == {made.ca_pem}
    finally:
        await store.request("DELETE", f"{base}/mutatingwebhookconfigurations/{name}")
        await store.request("DELETE", f"{base}/validatingwebhookconfigurations/{name}")
