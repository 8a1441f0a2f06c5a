"""``capstan operator``: run Capstan's controllers against a Kubernetes API server (Kubernetes mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def operator(
    kubeconfig: Annotated[Path | None, typer.Option(
        "--kubeconfig", help="Kubeconfig file (default: the in-cluster service account inside a Pod, else "
        "$KUBECONFIG or ~/.kube/config).", show_default=False)] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Namespace of the leader-election Lease (default: the Pod's namespace, "
        "else default).", show_default=False)] = None,
    lease_name: Annotated[str, typer.Option("--lease-name", help="Name of the leader-election Lease.")
                          ] = "capstan-operator",
    identity: Annotated[str | None, typer.Option(
        "--identity", help="This replica's holder identity (default: <hostname>_<random>).",
        show_default=False)] = None,
    metrics_port: Annotated[int, typer.Option(
        "--metrics-port", help="Port of /healthz, /readyz and /metrics; 0 picks a free one, -1 disables.")
                            ] = 8080,
    metrics_host: Annotated[str, typer.Option("--metrics-host", help="Address the metrics port binds.")
                            ] = "0.0.0.0",
    install_crds: Annotated[bool, typer.Option(
        "--install-crds", help="Create or update the CRDs at start (needs RBAC on CRDs); without it the "
        "operator only checks that they exist.")] = False,
    leader_elect: Annotated[bool, typer.Option(
        "--leader-elect/--no-leader-elect", help="Campaign for the Lease; without it this process always "
        "acts (run exactly one).")] = True,
    webhook_port: Annotated[int, typer.Option(
        "--webhook-port", help="Port of the HTTPS admission webhook; -1 (default) disables it, 0 picks a free one.")
                            ] = -1,
    webhook_host: Annotated[str, typer.Option("--webhook-host", help="Address the webhook port binds.")
                            ] = "0.0.0.0",
    webhook_cert_dir: Annotated[Path | None, typer.Option(
        "--webhook-cert-dir", help="Directory with the webhook's tls.crt and tls.key (e.g. cert-manager's "
        "Secret); with --webhook-cert-secret the operator writes them there.", show_default=False)] = None,
    webhook_cert_secret: Annotated[str | None, typer.Option(
        "--webhook-cert-secret", help="Self-signed mode: Secret (in --namespace) holding the serving "
        "certificate, made if missing.", show_default=False)] = None,
    webhook_service: Annotated[str, typer.Option(
        "--webhook-service", help="Self-signed mode: the webhook's Service name (the certificate's DNS names).")
                               ] = "capstan-webhook",
    webhook_configuration: Annotated[str | None, typer.Option(
        "--webhook-configuration", help="Self-signed mode: the Mutating- and ValidatingWebhookConfiguration "
        "whose caBundle the operator sets.", show_default=False)] = None,
) -> None:
    """Run the controllers against a Kubernetes API server, with Lease-based leader election."""
    from capstan.server.operator import OperatorSettings, run_operator_process

    settings = OperatorSettings(
        kubeconfig=kubeconfig, namespace=namespace, lease_name=lease_name, identity=identity,
        metrics_host=metrics_host, metrics_port=metrics_port, install_crds=install_crds,
        leader_elect=leader_elect, webhook_port=webhook_port, webhook_host=webhook_host,
        webhook_cert_dir=webhook_cert_dir, webhook_cert_secret=webhook_cert_secret,
        webhook_service=webhook_service, webhook_configuration=webhook_configuration)
    raise typer.Exit(run_operator_process(settings))
