"""Admission webhooks for Kubernetes mode: the embedded store's mutators and validators, served over HTTPS
as ``admission.k8s.io/v1`` AdmissionReviews.

In embedded mode the SqliteStore runs Capstan's admission hooks itself (``add_mutator``/``add_validator``).
On Kubernetes the API server calls this server instead, with the same functions:

* ``POST /mutate``: a Job labelled ``kueue.x-k8s.io/queue-name`` is created suspended
  (``suspend_queued_jobs``); a queued plain Pod gets the ``kueue.x-k8s.io/admission`` scheduling gate
  (``gate_queued_pods``). The answer is a JSONPatch from the object as sent to the object as mutated.
* ``POST /validate``: Capstan's kinds (keda.sh, kueue.x-k8s.io) are checked against their models, as the
  embedded store does on every write (the cross-field rules the CRD schema cannot express: a ClusterQueue's
  preemption policies, quantities, minReplicaCount <= maxReplicaCount, ...); a second ScaledObject for a
  scale target is refused; a queued Job's or Pod's priority class must exist, and a running Job's queue
  name cannot change. An ``InvalidError`` becomes a denial whose status is that error's metav1.Status, so
  the client sees the embedded store's message after the API server's "admission webhook ... denied the
  request: " prefix.

Which objects reach which path is the webhook configurations' business (deploy/helm/capstan/templates/
webhooks.yaml, ``webhook_configurations`` for tests): only labelled Jobs and Pods, and Capstan's kinds.

The serving certificate comes from files (``tls.crt``/``tls.key`` in a directory: cert-manager's Secret
mounted there), or is made here (``self_signed_serving_cert``, with ``cryptography``) and shared by the
replicas through a Secret (``ensure_serving_secret``), its CA injected into the configurations
(``inject_ca_bundle``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import inspect
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from capstan.api.errors import AlreadyExistsError, ApiError, ConflictError, NotFoundError
from capstan.api.registry import BUILTIN_TYPES, ResourceType
from capstan.controllers.autoscaling.common import TargetIndex
from capstan.controllers.autoscaling.scaledobject import check_one_per_target
from capstan.controllers.batch.common import QUEUE_LABEL
from capstan.controllers.batch.validation import install_admission_hooks
from capstan.server.embedded import _bind, _client_host, _EmbeddedUvicorn
from capstan.store.base import Obj, Store
from capstan.store.kube import KubeStore, resource_path

log = logging.getLogger("capstan.webhook")

Hook = Callable[[Obj, Obj | None], object]
"""``fn(new, old_or_None)``, sync or async, as the SqliteStore's mutators and validators."""

MUTATE_PATH = "/mutate"
VALIDATE_PATH = "/validate"
REVIEW_API = "admission.k8s.io/v1"
MUTATING_WEBHOOK = "mjob.capstan.io"
VALIDATING_WEBHOOK = "vcapstan.capstan.io"


# ---- the hooks ---------------------------------------------------------------------------------


@dataclass
class AdmissionHooks:
    """Mutators and validators by kind: what ``SqliteStore.add_mutator``/``add_validator`` hold, collected
    for a webhook instead of a store."""

    mutators: dict[str, list[Hook]] = field(default_factory=dict)
    validators: dict[str, list[Hook]] = field(default_factory=dict)

    def add_mutator(self, kind: str, fn: Hook) -> None:
        self.mutators.setdefault(kind, []).append(fn)

    def add_validator(self, kind: str, fn: Hook) -> None:
        self.validators.setdefault(kind, []).append(fn)

    async def mutate(self, kind: str, new: Obj, old: Obj | None) -> None:
        for fn in self.mutators.get(kind, ()):
            await _call(fn, new, old)

    async def validate(self, kind: str, new: Obj, old: Obj | None) -> None:
        for fn in self.validators.get(kind, ()):
            await _call(fn, new, old)


async def _call(fn: Hook, new: Obj, old: Obj | None) -> None:
    outcome = fn(new, old)
    if inspect.isawaitable(outcome):
        await outcome


def model_validator(rt: ResourceType) -> Hook:
    """The model check the embedded store makes on every write of ``rt`` (same InvalidError, same message)."""

    def validate(new: Obj, old: Obj | None) -> None:
        rt.normalize(_without_server_fields(new))

    return validate


def _without_server_fields(obj: Obj) -> Obj:
    """What the embedded store would validate: the API server's bookkeeping (managedFields) is not the
    user's object."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def scaled_object_validator(store: Store) -> Hook:
    """One ScaledObject per scale target, decided on a fresh list of the namespace's ScaledObjects (the
    webhook runs on every replica, leader or not, so it keeps no cache of its own)."""
    rt = store.registry.lookup("scaledobjects")

    async def validate(new: Obj, old: Obj | None) -> None:
        if TargetIndex.key_of(new) is None:
            return
        targets = TargetIndex()
        for other in (await store.list(rt, new["metadata"].get("namespace") or "default")).items:
            targets.update(other)
        check_one_per_target(targets, new, old)

    return validate


def capstan_admission_hooks(store: Store, crd_types: Iterable[ResourceType] | None = None) -> AdmissionHooks:
    """Every hook the embedded store runs, for Kubernetes: the batch integration's (through
    ``install_admission_hooks``, the function embedded mode calls), one ScaledObject per target, and the
    model check of each of Capstan's own kinds."""
    hooks = AdmissionHooks()
    builtin_groups = {rt.group for rt in BUILTIN_TYPES}
    types = list(crd_types) if crd_types is not None else [
        rt for rt in store.registry if rt.group not in builtin_groups]
    for rt in types:
        hooks.add_validator(rt.kind, model_validator(rt))
    install_admission_hooks(store, hooks)
    hooks.add_validator("ScaledObject", scaled_object_validator(store))
    return hooks


# ---- AdmissionReview ---------------------------------------------------------------------------


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def json_patch(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """RFC 6902 operations turning ``before`` into ``after``: objects key by key, anything else (lists
    included) replaced whole."""
    if isinstance(before, dict) and isinstance(after, dict):
        ops: list[dict[str, Any]] = []
        for key in before:
            if key not in after:
                ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
        for key, value in after.items():
            if key not in before:
                ops.append({"op": "add", "path": f"{path}/{_escape(key)}", "value": value})
            elif before[key] != value:
                ops.extend(json_patch(before[key], value, f"{path}/{_escape(key)}"))
        return ops
    if before == after:
        return []
    return [{"op": "replace", "path": path, "value": after}]


def allowed(uid: str, patch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(_json_bytes(patch)).decode()
    return _review(response)


def denied(uid: str, error: ApiError) -> dict[str, Any]:
    """A denial carrying ``error``'s metav1.Status (code, reason, message, causes)."""
    return _review({"uid": uid, "allowed": False, "status": error.to_status()})


def _review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": REVIEW_API, "kind": "AdmissionReview", "response": response}


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class AdmissionWebhook:
    """Answers AdmissionReviews with ``hooks``; ``app()`` is the HTTP side."""

    def __init__(self, hooks: AdmissionHooks) -> None:
        self.hooks = hooks
        self.reviews = 0

    async def review(self, body: Obj, *, mutating: bool) -> dict[str, Any]:
        request = body.get("request") or {}
        uid = str(request.get("uid") or "")
        self.reviews += 1
        kind = str((request.get("kind") or {}).get("kind") or "")
        operation = request.get("operation")
        new = request.get("object")
        old = request.get("oldObject") if operation == "UPDATE" else None
        if operation not in ("CREATE", "UPDATE") or not isinstance(new, dict):
            return allowed(uid)
        new.setdefault("metadata", {})
        if new["metadata"].get("name") is None:  # generateName: the name is chosen after admission
            new["metadata"]["name"] = ""
        if request.get("namespace") and not new["metadata"].get("namespace"):
            new["metadata"]["namespace"] = request["namespace"]
        try:
            if mutating:
                mutated = copy.deepcopy(new)
                await self.hooks.mutate(kind, mutated, old)
                return allowed(uid, json_patch(new, mutated))
            await self.hooks.validate(kind, new, old)
            return allowed(uid)
        except ApiError as exc:
            return denied(uid, exc)

    def app(self) -> Starlette:
        async def mutate(request: Request) -> Response:
            return JSONResponse(await self.review(await request.json(), mutating=True))

        async def validate(request: Request) -> Response:
            return JSONResponse(await self.review(await request.json(), mutating=False))

        async def healthz(_: Request) -> Response:
            return PlainTextResponse("ok")

        return Starlette(routes=[Route(MUTATE_PATH, mutate, methods=["POST"]),
                                 Route(VALIDATE_PATH, validate, methods=["POST"]),
                                 Route("/healthz", healthz)])


@contextlib.asynccontextmanager
async def serve_webhook(webhook: AdmissionWebhook, host: str, port: int, cert_dir: Path
                        ) -> AsyncIterator[str]:
    """Serve ``webhook`` over HTTPS with ``cert_dir``/tls.crt and tls.key; yields its base URL."""
    sock = _bind(host, port)
    bound = int(sock.getsockname()[1])
    config = uvicorn.Config(webhook.app(), log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2, ssl_certfile=str(cert_dir / "tls.crt"),
                            ssl_keyfile=str(cert_dir / "tls.key"), backlog=1024)
    server = _EmbeddedUvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the webhook server stopped while starting")
            await asyncio.sleep(0.02)
        yield f"https://{_client_host(host)}:{bound}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


# ---- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingCert:
    ca_pem: bytes
    """The CA certificate: the webhook configurations' caBundle."""
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path) -> Path:
        """tls.crt, tls.key (mode 0600) and ca.crt in ``directory``, as cert-manager's Secret mounts them."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.crt").write_bytes(self.ca_pem)
        (directory / "tls.crt").write_bytes(self.cert_pem)
        key = directory / "tls.key"
        key.touch(mode=0o600)
        key.write_bytes(self.key_pem)
        return directory

    def secret_data(self) -> dict[str, str]:
        return {name: base64.b64encode(value).decode() for name, value in
                (("ca.crt", self.ca_pem), ("tls.crt", self.cert_pem), ("tls.key", self.key_pem))}

    @classmethod
    def from_secret_data(cls, data: dict[str, str]) -> ServingCert | None:
        try:
            parts = [base64.b64decode(data[name]) for name in ("ca.crt", "tls.crt", "tls.key")]
        except (KeyError, ValueError):
            return None
        return cls(*parts) if all(parts) else None  # the chart's placeholder Secret has empty values


def self_signed_serving_cert(dns_names: Sequence[str], ip_addresses: Sequence[str] = (), *,
                             days: int = 3650, now: dt.datetime | None = None) -> ServingCert:
    """A throwaway CA and a serving certificate it signs for ``dns_names`` and ``ip_addresses`` (ECDSA
    P-256). The API server checks the webhook's certificate against the CA given as caBundle."""
    now = now or dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capstan-webhook-ca")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
    common_name = dns_names[0] if dns_names else (ip_addresses[0] if ip_addresses else "capstan-webhook")
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return ServingCert(
        ca_pem=ca_cert.public_bytes(pem), cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def service_dns_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


async def ensure_serving_secret(store: KubeStore, namespace: str, secret: str, service: str) -> ServingCert:
    """The serving certificate in Secret ``namespace``/``secret``, made (for Service ``service``) when the
    Secret is missing or incomplete. Replicas starting together agree: a create that loses the race reads
    the winner's certificate."""
    path = resource_path("", "v1", "secrets", namespace, secret)
    for _ in range(5):
        try:
            current: Obj | None = await store.request("GET", path)
        except NotFoundError:
            current = None
        if current is not None:
            found = ServingCert.from_secret_data(current.get("data") or {})
            if found is not None:
                return found
        made = self_signed_serving_cert(service_dns_names(service, namespace))
        body: Obj = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                     "metadata": {"name": secret, "namespace": namespace,
                                  "labels": {"app.kubernetes.io/managed-by": "capstan-operator"}},
                     "data": made.secret_data()}
        try:
            if current is None:
                await store.request("POST", resource_path("", "v1", "secrets", namespace), json_body=body)
            else:
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await store.request("PUT", path, json_body=body)
            return made
        except (AlreadyExistsError, ConflictError):
            continue  # another replica wrote it first: use theirs
    raise RuntimeError(f"could not read or write the webhook serving Secret {namespace}/{secret}")


WEBHOOK_CONFIGURATION_KINDS = {"mutating": "mutatingwebhookconfigurations",
                               "validating": "validatingwebhookconfigurations"}


async def inject_ca_bundle(store: KubeStore, ca_pem: bytes, *, mutating: Sequence[str] = (),
                           validating: Sequence[str] = ()) -> None:
    """Set ``caBundle`` on every webhook of the named configurations (where it differs)."""
    bundle = base64.b64encode(ca_pem).decode()
    for plural, names in ((WEBHOOK_CONFIGURATION_KINDS["mutating"], mutating),
                          (WEBHOOK_CONFIGURATION_KINDS["validating"], validating)):
        for name in names:
            path = resource_path("admissionregistration.k8s.io", "v1", plural, None, name)
            for _ in range(5):
                current = await store.request("GET", path)
                webhooks = current.get("webhooks") or []
                if all((w.get("clientConfig") or {}).get("caBundle") == bundle for w in webhooks):
                    break
                for webhook in webhooks:
                    webhook.setdefault("clientConfig", {})["caBundle"] = bundle
                try:
                    await store.request("PUT", path, json_body=current)
                    break
                except ConflictError:
                    continue


# ---- configurations (tests, and what the chart renders) ----------------------------------------


UNVALIDATED_KINDS = frozenset({"Workload"})
"""Not sent to the webhook: the operator creates them (from Jobs and pod groups) and writes them from its
models, so a round trip per Workload would only slow admission down."""


def webhook_configurations(client_config: Callable[[str], Obj], *, name: str = "capstan",
                           crd_rules: Iterable[ResourceType] = (), failure_policy: str = "Fail",
                           timeout_seconds: int = 10) -> tuple[Obj, Obj]:
    """A MutatingWebhookConfiguration and a ValidatingWebhookConfiguration for Capstan's webhook.
    ``client_config(path)`` gives each webhook's clientConfig (a URL, or a Service with the caBundle).

    Only objects labelled with a queue name reach the Job and Pod webhooks (objectSelector), so an
    unrelated Job is never held up, even with failurePolicy Fail."""
    queued = {"matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]}

    def rule(group: str, version: str, resources: list[str], operations: tuple[str, ...] = ("CREATE", "UPDATE")
             ) -> Obj:
        return {"apiGroups": [group], "apiVersions": [version], "operations": list(operations),
                "resources": resources, "scope": "*"}

    def webhook(webhook_name: str, path: str, rules: list[Obj], selector: Obj | None) -> Obj:
        hook: Obj = {"name": webhook_name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                     "failurePolicy": failure_policy, "timeoutSeconds": timeout_seconds,
                     "clientConfig": client_config(path), "rules": rules, "matchPolicy": "Equivalent"}
        if selector is not None:
            hook["objectSelector"] = selector
        return hook

    by_group: dict[tuple[str, str], list[str]] = {}
    for rt in crd_rules:
        if rt.kind in UNVALIDATED_KINDS:
            continue
        by_group.setdefault((rt.group, rt.version), []).append(rt.plural)
    mutating = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": name},
                # The mutators act on creation only: updates (the operator unsuspending a Job) skip the call.
                "webhooks": [webhook("mjob.capstan.io", MUTATE_PATH, [rule("batch", "v1", ["jobs"], ("CREATE",))],
                                     queued),
                             webhook("mpod.capstan.io", MUTATE_PATH, [rule("", "v1", ["pods"], ("CREATE",))],
                                     queued)]}
    validating_hooks = [webhook("vjob.capstan.io", VALIDATE_PATH, [rule("batch", "v1", ["jobs"])], queued),
                        webhook("vpod.capstan.io", VALIDATE_PATH, [rule("", "v1", ["pods"])], queued)]
    if by_group:
        validating_hooks.append(webhook(VALIDATING_WEBHOOK, VALIDATE_PATH, [
            rule(group, version, sorted(plurals)) for (group, version), plurals in sorted(by_group.items())], None))
    validating = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                  "metadata": {"name": name}, "webhooks": validating_hooks}
    return mutating, validating

