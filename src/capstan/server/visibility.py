"""Kueue's on-demand visibility API: the pending workloads of a ClusterQueue or LocalQueue, in order.

``GET /apis/visibility.kueue.x-k8s.io/v1beta1/clusterqueues/{name}/pendingworkloads`` and
``GET /apis/visibility.kueue.x-k8s.io/v1beta1/namespaces/{ns}/localqueues/{name}/pendingworkloads``
answer a ``PendingWorkloadsSummary`` (``limit`` and ``offset`` query parameters, as Kueue's).

The order is computed from the store on each request with the admission core's order (priority,
then queue time, then namespace/name), so it is exact whichever process runs the admission loop;
each item also carries the reason and message of the workload's last admission attempt. Workloads
that are not queued (dependencies unfinished, in back-off, LocalQueue missing) are not listed.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from capstan.api.errors import ApiError, BadRequestError
from capstan.controllers.batch.common import (
    QUOTA_RESERVED,
    holds_quota,
    is_finished,
    queue_order,
)
from capstan.core.scheduling.conditions import find_condition
from capstan.store.base import Obj, Store

GROUP_VERSION = "visibility.kueue.x-k8s.io/v1beta1"
PREFIX = f"/apis/{GROUP_VERSION}"
NOT_QUEUED = ("NotReady", "Backoff", "LocalQueueDoesNotExist")


async def pending_in_order(store: Store) -> dict[str, list[tuple[Obj, str]]]:
    """ClusterQueue name -> [(workload, "namespace/localqueue")] of queued workloads, in order."""
    registry = store.registry
    lqs = (await store.list(registry.lookup("localqueues.kueue.x-k8s.io"))).items
    target = {f"{q['metadata']['namespace']}/{q['metadata']['name']}": (q.get("spec") or {}).get("clusterQueue")
              for q in lqs}
    by_cq: dict[str, list[tuple[Obj, str]]] = {}
    for workload in (await store.list(registry.lookup("workloads.kueue.x-k8s.io"))).items:
        if is_finished(workload) or holds_quota(workload) or (workload.get("spec") or {}).get("active") is False:
            continue
        reason = (find_condition((workload.get("status") or {}).get("conditions"), QUOTA_RESERVED) or {})
        if reason.get("reason") in NOT_QUEUED:
            continue
        lq = f"{workload['metadata'].get('namespace')}/{(workload.get('spec') or {}).get('queueName')}"
        cq = target.get(lq)
        if cq:
            by_cq.setdefault(cq, []).append((workload, lq))
    for entries in by_cq.values():
        entries.sort(key=lambda entry: queue_order(entry[0]))
    return by_cq


def _item(workload: Obj, lq: str, in_cq: int, in_lq: int) -> dict[str, Any]:
    meta = workload["metadata"]
    condition = find_condition((workload.get("status") or {}).get("conditions"), QUOTA_RESERVED) or {}
    return {"metadata": {"name": meta["name"], "namespace": meta.get("namespace"),
                         "creationTimestamp": meta.get("creationTimestamp")},
            "priority": int((workload.get("spec") or {}).get("priority") or 0),
            "localQueueName": lq.split("/", 1)[1], "positionInClusterQueue": in_cq, "positionInLocalQueue": in_lq,
            "reason": condition.get("reason") or "Pending", "message": condition.get("message") or ""}


def _summary(items: list[dict[str, Any]], request: Request) -> Response:
    try:
        offset = int(request.query_params.get("offset") or 0)
        limit = int(request.query_params.get("limit") or 1000)
    except ValueError:
        raise BadRequestError("limit and offset must be integers") from None
    return JSONResponse({"kind": "PendingWorkloadsSummary", "apiVersion": GROUP_VERSION, "metadata": {},
                         "items": items[offset:offset + limit]})


def routes(store: Store) -> list[Route]:
    """The visibility routes (insert them before the generic /apis routes)."""

    async def for_cluster_queue(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await store.get(store.registry.lookup("clusterqueues.kueue.x-k8s.io"), name)
            entries = (await pending_in_order(store)).get(name, [])
            per_lq: dict[str, int] = {}
            items = []
            for position, (workload, lq) in enumerate(entries):
                items.append(_item(workload, lq, position, per_lq.get(lq, 0)))
                per_lq[lq] = per_lq.get(lq, 0) + 1
            return _summary(items, request)
        except ApiError as exc:
            return JSONResponse(exc.to_status(), status_code=exc.code)

    async def for_local_queue(request: Request) -> Response:
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        try:
            lq = await store.get(store.registry.lookup("localqueues.kueue.x-k8s.io"), name, namespace)
            cq = (lq.get("spec") or {}).get("clusterQueue") or ""
            entries = (await pending_in_order(store)).get(cq, [])
            items: list[dict[str, Any]] = []
            for position, (workload, queue) in enumerate(entries):
                if queue == f"{namespace}/{name}":
                    items.append(_item(workload, queue, position, len(items)))
            return _summary(items, request)
        except ApiError as exc:
            return JSONResponse(exc.to_status(), status_code=exc.code)

    return [Route(f"{PREFIX}/clusterqueues/{{name}}/pendingworkloads", for_cluster_queue, methods=["GET"]),
            Route(f"{PREFIX}/namespaces/{{namespace}}/localqueues/{{name}}/pendingworkloads", for_local_queue,
                  methods=["GET"])]
