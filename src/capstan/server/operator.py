"""``capstan operator``: Capstan's controllers against a real Kubernetes API server.

The process connects a ``KubeStore`` (in-cluster service account, or a kubeconfig), optionally installs
the CRDs of every Capstan-served kind (else checks they are there), serves ``/healthz``, ``/readyz`` and
``/metrics`` on a port, and campaigns for the leader-election Lease. Only the leader runs the controllers
(``capstan.controllers.operator``); the other replicas wait, ready to take over.

Exit status: 0 after SIGTERM/SIGINT (controllers stopped, Lease released); 1 when leadership was lost
(the controllers were cancelled the moment the renew deadline passed; Kubernetes restarts the container,
which campaigns again with fresh caches, as client-go based operators do); 2 when the CRDs are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from capstan import __version__
from capstan.api.errors import AlreadyExistsError, ConflictError, NotFoundError
from capstan.api.registry import BUILTIN_TYPES, ResourceType, default_registry
from capstan.api.schema import custom_resource_definition
from capstan.controllers import metrics
from capstan.controllers.leader import LeaderElectionConfig, LeaderElector, Outcome
from capstan.controllers.operator import (
    OPERATOR_CONTROLLERS,
    ControllerSpec,
    OperatorOptions,
    run_controllers,
)
from capstan.server.embedded import _bind, _client_host, _EmbeddedUvicorn
from capstan.server.webhook import (
    AdmissionWebhook,
    capstan_admission_hooks,
    ensure_serving_secret,
    inject_ca_bundle,
    serve_webhook,
)
from capstan.store.kube import KubeStore, install_crds, resource_path

log = logging.getLogger("capstan.operator")

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
EXIT_LOST_LEADERSHIP = 1
EXIT_CRDS_MISSING = 2
CRD_HEADER = "# Generated from the models by hack/gen-crds; do not edit (tests/unit/test_crds_fresh.py).\n"


@dataclass(frozen=True)
class OperatorSettings:
    kubeconfig: Path | None = None
    """None: the in-cluster service account when running in a Pod, else $KUBECONFIG or ~/.kube/config."""
    namespace: str | None = None
    """The Lease's namespace (and the operator's); None: the Pod's namespace, else "default"."""
    lease_name: str = "capstan-operator"
    identity: str | None = None
    """None: <hostname>_<random>, as client-go recommends (a restarted process is a new candidate)."""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080  # 0: a free port; negative: no health/metrics server
    install_crds: bool = False
    leader_elect: bool = True
    lease_duration: float = 12.0
    renew_deadline: float = 8.0
    retry_period: float = 2.0
    controllers: tuple[ControllerSpec, ...] = field(default=OPERATOR_CONTROLLERS)
    webhook_port: int = -1
    """Port of the HTTPS admission webhook (/mutate, /validate); negative: no webhook, 0: a free port."""
    webhook_host: str = "0.0.0.0"
    webhook_cert_dir: Path | None = None
    """tls.crt and tls.key of the webhook (cert-manager's Secret mounted here). With ``webhook_cert_secret``
    the operator writes them here (None: a private temporary directory)."""
    webhook_cert_secret: str | None = None
    """Self-signed mode: the Secret (in ``namespace``) holding the serving certificate, made if missing."""
    webhook_service: str = "capstan-webhook"
    """Self-signed mode: the Service the certificate is made for (<service>.<namespace>.svc)."""
    webhook_configuration: str | None = None
    """Self-signed mode: the Mutating- and ValidatingWebhookConfiguration to put the CA into (caBundle)."""

    def resolved_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        if os.environ.get("POD_NAMESPACE"):
            return os.environ["POD_NAMESPACE"]
        with contextlib.suppress(OSError):
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        return "default"

    def resolved_identity(self) -> str:
        return self.identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def crd_types() -> list[ResourceType]:
    """Every kind Capstan serves that Kubernetes does not (keda.sh, kueue.x-k8s.io): the operator's CRDs."""
    builtin_groups = {rt.group for rt in BUILTIN_TYPES}
    return [rt for rt in default_registry() if rt.group not in builtin_groups]


def crd_manifests() -> dict[str, str]:
    """The YAML file of every CRD, by file name, as hack/gen-crds writes them into the chart's crds/."""
    files = {}
    for rt in crd_types():
        crd = custom_resource_definition(rt)
        body = yaml.safe_dump(crd, sort_keys=False, default_flow_style=False, width=110)
        files[f"{crd['metadata']['name']}.yaml"] = CRD_HEADER + body
    return files


async def connect(settings: OperatorSettings) -> KubeStore:
    in_cluster = settings.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    return await KubeStore.connect(default_registry(), kubeconfig=settings.kubeconfig, in_cluster=in_cluster)


async def missing_crds(store: KubeStore, types: Iterable[ResourceType]) -> list[str]:
    """Names of the CRDs of ``types`` that the API server does not have (or has not Established)."""
    missing = []
    for rt in types:
        name = custom_resource_definition(rt)["metadata"]["name"]
        try:
            crd = await store.request("GET", resource_path("apiextensions.k8s.io", "v1",
                                                           "customresourcedefinitions", None, name))
        except NotFoundError:
            missing.append(name)
            continue
        conditions = (crd.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            missing.append(name)
    return missing


async def install_crds_racing(store: KubeStore, types: list[ResourceType], attempts: int = 5) -> None:
    """``install_crds``, tolerating the other replicas doing the same at the same moment (their create or
    update wins; ours is retried against what they wrote)."""
    for attempt in range(1, attempts + 1):
        try:
            await install_crds(store, types)
            return
        except (ConflictError, AlreadyExistsError):
            if attempt == attempts:
                raise
            await asyncio.sleep(0.2 * attempt)


# ---- health and metrics ------------------------------------------------------------------------


@dataclass
class _Health:
    elector: LeaderElector | None = None
    started: bool = False


def health_app(health: _Health) -> Starlette:
    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        if not health.started:
            return PlainTextResponse("starting", status_code=503)
        return PlainTextResponse("ok")

    async def leader(_: Request) -> Response:
        elector = health.elector
        if elector is None:
            return PlainTextResponse("leader election disabled\n")
        role = "leader" if elector.is_leader else "follower"
        return PlainTextResponse(f"{role} {elector.config.identity} holder={elector.holder or ''}\n")

    async def metrics_endpoint(_: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/healthz", healthz), Route("/livez", healthz), Route("/readyz", readyz),
                             Route("/leader", leader), Route("/metrics", metrics_endpoint)])


@contextlib.asynccontextmanager
async def serve_health(settings: OperatorSettings, health: _Health) -> AsyncIterator[str | None]:
    """Serve /healthz, /readyz, /leader and /metrics; yields the URL (None when disabled)."""
    if settings.metrics_port < 0:
        yield None
        return
    sock = _bind(settings.metrics_host, settings.metrics_port)
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(health_app(health), log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = _EmbeddedUvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the health server stopped while starting")
            await asyncio.sleep(0.02)
        yield f"http://{_client_host(settings.metrics_host)}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


# ---- the process -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_admission_webhook(settings: OperatorSettings, store: KubeStore, namespace: str
                                  ) -> AsyncIterator[str | None]:
    """Serve the admission webhook on every replica (the API server may call any of them); yields the URL
    (None when disabled). In self-signed mode the certificate comes from (or goes to) a Secret shared by
    the replicas and its CA is injected into the webhook configurations."""
    if settings.webhook_port < 0:
        yield None
        return
    with contextlib.ExitStack() as cleanup:
        cert_dir = settings.webhook_cert_dir
        if settings.webhook_cert_secret:
            cert = await ensure_serving_secret(store, namespace, settings.webhook_cert_secret,
                                               settings.webhook_service)
            if cert_dir is None:
                cert_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="capstan-webhook-")))
            cert.write(cert_dir)
            if settings.webhook_configuration:
                await inject_ca_bundle(store, cert.ca_pem, mutating=[settings.webhook_configuration],
                                       validating=[settings.webhook_configuration])
        if cert_dir is None:
            raise ValueError("the webhook needs --webhook-cert-dir (tls.crt, tls.key) or --webhook-cert-secret")
        webhook = AdmissionWebhook(capstan_admission_hooks(store, crd_types()))
        async with serve_webhook(webhook, settings.webhook_host, settings.webhook_port, cert_dir) as url:
            yield url


async def run_operator(settings: OperatorSettings, stop: asyncio.Event) -> int:
    """Run until ``stop`` is set (0) or leadership is lost (1); 2 when CRDs are missing."""
    metrics.BUILD_INFO.labels(version=__version__).set(1)
    namespace = settings.resolved_namespace()
    options = OperatorOptions(namespace=namespace)
    health = _Health()
    store = await connect(settings)
    try:
        async with serve_health(settings, health) as url, \
                serve_admission_webhook(settings, store, namespace) as webhook_url:
            if url:
                print(f"Capstan operator health and metrics on {url}", flush=True)
            if webhook_url:
                print(f"Capstan operator admission webhook on {webhook_url}", flush=True)
            types = crd_types()
            if settings.install_crds:
                await install_crds_racing(store, types)
                log.info("installed or updated %d CRDs", len(types))
            missing = await missing_crds(store, types)
            if missing:
                log.error("these CRDs are missing; install the Helm chart's crds/ or run with "
                          "--install-crds: %s", ", ".join(missing))
                return EXIT_CRDS_MISSING
            health.started = True

            async def work(work_stop: asyncio.Event) -> None:
                await run_controllers(store, options, work_stop, settings.controllers)

            if not settings.leader_elect:
                await work(stop)
                return 0
            elector = LeaderElector(store, LeaderElectionConfig(
                namespace=namespace, name=settings.lease_name, identity=settings.resolved_identity(),
                lease_duration=settings.lease_duration, renew_deadline=settings.renew_deadline,
                retry_period=settings.retry_period))
            health.elector = elector
            print(f"Capstan operator {elector.config.identity} campaigning for Lease "
                  f"{namespace}/{settings.lease_name}", flush=True)
            outcome = await elector.run(work, stop)
            if outcome is Outcome.LOST:
                print("Capstan operator lost leadership; exiting", flush=True)
                return EXIT_LOST_LEADERSHIP
            return 0
    finally:
        await store.close()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _main(settings: OperatorSettings) -> int:
    return await run_operator(settings, _stop_on_signals())


def run_operator_process(settings: OperatorSettings) -> int:
    """Entry point of ``capstan operator``: configure logging, run, return the exit status."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(_main(settings))
