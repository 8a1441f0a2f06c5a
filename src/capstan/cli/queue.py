"""``capstan queue pending CQ|LQ``: the pending workloads of a queue, in admission order.

Reads Kueue's visibility API (``/apis/visibility.kueue.x-k8s.io/v1beta1/...pendingworkloads``).
``NAME`` is a ClusterQueue if one has that name, else a LocalQueue of the namespace; ``cq/NAME``
and ``lq/NAME`` say which.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from capstan.api.errors import NotFoundError
from capstan.cli import printers
from capstan.cli.client import ApiClient

queue_app = typer.Typer(name="queue", no_args_is_help=True, help="Batch queues: pending workloads.")

PREFIX = "/apis/visibility.kueue.x-k8s.io/v1beta1"


def pending_path(client: ApiClient, target: str, namespace: str) -> tuple[str, str]:
    """(path, description) of the visibility endpoint for ``target``."""
    kind, slash, name = target.partition("/")
    if not slash:
        kind, name = "", target
    kind = kind.lower()
    if kind in ("cq", "clusterqueue", "clusterqueues"):
        return f"{PREFIX}/clusterqueues/{name}/pendingworkloads", f'ClusterQueue "{name}"'
    if kind in ("lq", "localqueue", "localqueues", "queue", "queues"):
        return (f"{PREFIX}/namespaces/{namespace}/localqueues/{name}/pendingworkloads",
                f'LocalQueue "{namespace}/{name}"')
    try:
        client.get(client.registry.lookup("clusterqueues.kueue.x-k8s.io"), name)
    except NotFoundError:
        return pending_path(client, f"lq/{name}", namespace)
    return pending_path(client, f"cq/{name}", namespace)


def pending_table(items: list[dict[str, Any]], now: datetime) -> str:
    rows = [[str(item["positionInClusterQueue"] + 1), str(item["positionInLocalQueue"] + 1),
             str(item["metadata"].get("namespace") or ""), str(item["metadata"]["name"]),
             str(item.get("localQueueName") or ""), str(item.get("priority", 0)), str(item.get("reason") or ""),
             printers.since(item["metadata"].get("creationTimestamp"), now)] for item in items]
    return printers.render_table(["POSITION", "IN LQ", "NAMESPACE", "NAME", "LOCALQUEUE", "PRIORITY", "REASON",
                                  "AGE"], rows)


@queue_app.command("pending")
def pending(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="ClusterQueue or LocalQueue: NAME, cq/NAME or lq/NAME.")],
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Namespace of a LocalQueue.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many workloads.")] = 1000,
    server: Annotated[str | None, typer.Option("--server", show_default=False)] = None,
    token: Annotated[str | None, typer.Option("--token", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", show_default=False)] = None,
) -> None:
    """List the pending workloads of a queue in the order they will be admitted."""
    from capstan.cli.main import _client, handle_errors

    @handle_errors
    def run() -> None:
        with _client(ctx, server, token, data_dir) as client:
            path, what = pending_path(client, target, namespace or "default")
            answer = client.request("GET", path, params={"limit": limit})
            items = list((answer or {}).get("items") or [])
            if not items:
                typer.echo(f"No pending workloads in {what}.")
                return
            typer.echo(pending_table(items, datetime.now(UTC)), nl=False)

    run()
