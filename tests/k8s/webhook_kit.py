"""Registering Capstan's admission webhook with a test cluster's API server.

The API server runs on loopback, so it can call a webhook served by the test (or by an operator process)
at https://127.0.0.1:PORT, trusting the test-made CA given as caBundle. Every webhook of a test
registration also carries an objectSelector on a per-test label: objects of other tests sharing the
session's cluster never reach it, even if a crash left the registration behind.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from capstan.api.errors import NotFoundError
from capstan.server.operator import crd_types
from capstan.server.webhook import ServingCert, self_signed_serving_cert, webhook_configurations
from capstan.store.base import Obj
from capstan.store.kube import KubeStore, resource_path

SCOPE_LABEL = "capstan.io/webhook-test"
_GROUP = "admissionregistration.k8s.io"


def loopback_cert(directory: Path) -> ServingCert:
    """A CA and a serving certificate for 127.0.0.1 and localhost, written to ``directory``."""
    cert = self_signed_serving_cert(["localhost"], ["127.0.0.1"])
    cert.write(directory)
    return cert


def scoped_configurations(url: str, ca_pem: bytes, name: str, scope: str) -> tuple[Obj, Obj]:
    bundle = base64.b64encode(ca_pem).decode()
    mutating, validating = webhook_configurations(lambda path: {"url": f"{url}{path}", "caBundle": bundle},
                                                  name=name, crd_rules=crd_types())
    for config in (mutating, validating):
        for webhook in config["webhooks"]:
            selector = webhook.setdefault("objectSelector", {})
            selector.setdefault("matchLabels", {})[SCOPE_LABEL] = scope
    return mutating, validating


@contextlib.asynccontextmanager
async def registered(store: KubeStore, url: str, ca_pem: bytes, name: str, scope: str) -> AsyncIterator[None]:
    """Register the webhook configurations for the test's duration (removed afterwards, first thing)."""
    mutating, validating = scoped_configurations(url, ca_pem, name, scope)
    paths = [resource_path(_GROUP, "v1", "mutatingwebhookconfigurations", None, name),
             resource_path(_GROUP, "v1", "validatingwebhookconfigurations", None, name)]
    for path, body in zip(paths, (mutating, validating), strict=True):
        with contextlib.suppress(NotFoundError):
            await store.request("DELETE", path)
        await store.request("POST", path.rsplit("/", 1)[0], json_body=body)
    try:
        yield
    finally:
        for path in paths:
            with contextlib.suppress(NotFoundError):
                await store.request("DELETE", path)
