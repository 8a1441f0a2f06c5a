"""The Store on a real Kubernetes API server.

Library choice: plain ``httpx`` (already a Capstan dependency), not lightkube or kubernetes-asyncio. The Store
is dict-in/dict-out over wire JSON for whatever kinds the registry holds, including Capstan's own CRDs.
kubernetes-asyncio deserializes into generated model classes (dicts only with ``_preload_content=False`` and
a hand-rolled watch parser), and lightkube is built around typed resources (generic ones need a class per
kind and its watch yields models). Both would sit between us and the exact Status objects we map to
``capstan.api.errors``. What the Store needs is a handful of REST calls, one line-delimited JSON stream and
the Status body of every error; httpx gives exactly that, with explicit timeouts and no extra dependency.

Mapping (paths come from the registry's ResourceType: ``/api/v1`` or ``/apis/<group>/<version>``, then
``/namespaces/<ns>`` for namespaced kinds, then ``/<plural>[/<name>[/status|/scale]]``):

* get → GET; list → GET with labelSelector, fieldSelector, limit, continue (→ ListResult);
* create → POST (generateName is the server's; ``dry_run`` → ``?dryRun=All``);
* update → PUT; update_status → PUT .../status; patch → PATCH with ``application/merge-patch+json``
  (on .../status for the status subresource);
* delete → DELETE with DeleteOptions (propagationPolicy, preconditions.uid). The answer is either the object
  or a Status; the object is returned only when it still exists (finalizers, foreground deletion) — a
  graceful-deletion kind such as an unscheduled Pod answers with an object carrying a deletionTimestamp even
  though it is already gone, so such an answer is confirmed with a GET;
* get_scale / update_scale → GET / PUT .../scale (autoscaling/v1 Scale);
* watch → GET ?watch=true&resourceVersion=…&allowWatchBookmarks=true&timeoutSeconds=…; an ERROR event
  with code 410 raises GoneError from ``__anext__``; when the server ends the stream normally (its
  timeoutSeconds elapsed) the watch is reopened from the last resourceVersion seen, invisibly to the caller.

Errors: every non-2xx answer carries a metav1.Status, turned into the matching ``capstan.api.errors`` class by
``ApiError.from_status`` (409 is AlreadyExists or Conflict by reason; Invalid keeps the causes with the field
paths Kubernetes reports). Connection failures are raised as httpx errors, not ApiErrors.

Differences from the embedded store are listed in docs/kubernetes-store.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from pathlib import Path
from typing import Any, Literal

import httpx

from capstan.api.errors import ApiError, BadRequestError, GoneError, NotFoundError, TooManyRequestsError
from capstan.api.registry import Registry, ResourceType
from capstan.api.schema import custom_resource_definition
from capstan.store._kube_config import (
    Connection,
    KubeConfigError,
    default_kubeconfig_path,
    from_kubeconfig,
)
from capstan.store._kube_config import in_cluster as in_cluster_connection
from capstan.store.base import ListResult, Obj, PropagationPolicy, Store, WatchEvent

__all__ = ["KubeConfigError", "KubeStore", "install_crds"]

_JSON = "application/json"
_MERGE_PATCH = "application/merge-patch+json"
_CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


class KubeStore(Store):
    """A Store backed by a Kubernetes API server. Open it with ``await KubeStore.connect(registry, ...)``.

    Namespaced calls given ``namespace=None`` (and objects without ``metadata.namespace``) use "default", as
    kubectl does; ``list`` and ``watch`` with ``None`` cover all namespaces.
    """

    def __init__(self, client: httpx.AsyncClient, registry: Registry, *,
                 watch_timeout_seconds: int = 290) -> None:
        self.registry = registry
        self._client = client
        self._watch_timeout_seconds = watch_timeout_seconds
        self._closed = asyncio.Event()
        self._rng = random.Random()

    @classmethod
    async def connect(
        cls,
        registry: Registry,
        *,
        kubeconfig: Path | None = None,
        context: str | None = None,
        server: str | None = None,
        token: str | None = None,
        ca_file: Path | None = None,
        insecure_skip_tls_verify: bool | None = None,
        in_cluster: bool = False,
        request_timeout: float = 30.0,
        watch_timeout_seconds: int = 290,
    ) -> KubeStore:
        """Connect using the in-cluster service account, or a kubeconfig (``kubeconfig``, else $KUBECONFIG
        or ~/.kube/config), with ``server``/``token``/``ca_file``/``insecure_skip_tls_verify`` overriding it.
        With ``server`` and no kubeconfig file at all, the overrides alone are used.

        ``watch_timeout_seconds`` is the timeoutSeconds asked for on each watch request; the server ends the
        stream after it (with some jitter) and the watch is transparently reopened."""
        connection = _resolve_connection(kubeconfig, context, in_cluster, server, token, ca_file,
                                         insecure_skip_tls_verify)
        headers = {"Accept": _JSON, "User-Agent": "capstan"}
        bearer = connection.bearer_token()
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        client = httpx.AsyncClient(
            base_url=connection.server, headers=headers, verify=connection.ssl_context(),
            timeout=httpx.Timeout(request_timeout),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        return cls(client, registry, watch_timeout_seconds=watch_timeout_seconds)

    # ---- reads -----------------------------------------------------------------------------------

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        return await self._request("GET", self._path(rt, self._namespace_of(rt, namespace), name))

    async def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str | None = None,
    ) -> ListResult:
        params = _selector_params(label_selector, field_selector)
        if limit > 0:
            params["limit"] = str(limit)
        if continue_token:
            params["continue"] = continue_token
        body = await self._request("GET", self._path(rt, namespace if rt.namespaced else None), params=params)
        meta = body.get("metadata") or {}
        items = [_with_type(item, rt) for item in body.get("items") or []]
        remaining = meta.get("remainingItemCount")
        return ListResult(items=items, resource_version=str(meta.get("resourceVersion") or ""),
                          continue_token=meta.get("continue") or None,
                          remaining_item_count=int(remaining) if remaining is not None else None)

    # ---- writes ----------------------------------------------------------------------------------

    async def create(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        rt = self.registry.for_object(obj)
        namespace = self._namespace_of(rt, (obj.get("metadata") or {}).get("namespace"))
        params = {"dryRun": "All"} if dry_run else {}
        return await self._request("POST", self._path(rt, namespace), json_body=obj, params=params)

    async def update(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        rt, namespace, name = self._locate(obj)
        params = {"dryRun": "All"} if dry_run else {}
        return await self._request("PUT", self._path(rt, namespace, name), json_body=obj, params=params)

    async def update_status(self, obj: Obj) -> Obj:
        rt, namespace, name = self._locate(obj)
        return await self._request("PUT", self._path(rt, namespace, name, "status"), json_body=obj)

    async def patch(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None,
        patch: Obj,
        *,
        subresource: Literal["status"] | None = None,
    ) -> Obj:
        if not isinstance(patch, dict):
            raise BadRequestError("a merge patch must be a JSON object")
        path = self._path(rt, self._namespace_of(rt, namespace), name, subresource)
        return await self._request("PATCH", path, json_body=patch, content_type=_MERGE_PATCH)

    async def delete(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: PropagationPolicy = "Background",
        uid: str | None = None,
    ) -> Obj | None:
        options: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation_policy}
        if uid:
            options["preconditions"] = {"uid": uid}
        namespace = self._namespace_of(rt, namespace)
        answer = await self._request("DELETE", self._path(rt, namespace, name), json_body=options)
        if answer.get("kind") == "Status" or not (answer.get("metadata") or {}).get("deletionTimestamp"):
            return None  # a Status (or the final state of an object deleted outright): it is gone
        # The object as the deletion left it; it may already be gone (graceful deletion with grace 0).
        try:
            current = await self.get(rt, name, namespace)
        except NotFoundError:
            return None
        same = current["metadata"].get("uid") == answer["metadata"].get("uid")
        return current if same else None

    # ---- scale subresource -----------------------------------------------------------------------

    async def get_scale(self, rt: ResourceType, name: str, namespace: str | None) -> Obj:
        return await self._request("GET", self._path(rt, self._namespace_of(rt, namespace), name, "scale"))

    async def update_scale(
        self, rt: ResourceType, name: str, namespace: str | None, replicas: int,
        *, resource_version: str | None = None,
    ) -> Obj:
        namespace = self._namespace_of(rt, namespace)
        meta: Obj = {"name": name}
        if namespace:
            meta["namespace"] = namespace
        if resource_version:
            meta["resourceVersion"] = resource_version
        scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta,
                 "spec": {"replicas": replicas}}
        return await self._request("PUT", self._path(rt, namespace, name, "scale"), json_body=scale)

    # ---- watch -----------------------------------------------------------------------------------

    async def watch(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
        bookmarks: bool = True,
    ) -> AsyncIterator[WatchEvent]:
        path = self._path(rt, namespace if rt.namespaced else None)
        base = _selector_params(label_selector, field_selector)
        base["watch"] = "true"
        if bookmarks:
            base["allowWatchBookmarks"] = "true"
        last_seen = resource_version
        while not self._closed.is_set():
            params = {**base, "timeoutSeconds": str(self._watch_timeout_seconds)}
            if last_seen:
                params["resourceVersion"] = last_seen
            async with contextlib.aclosing(self._watch_stream(path, params)) as stream:
                async for event in stream:
                    version = (event.object.get("metadata") or {}).get("resourceVersion")
                    if version:
                        last_seen = str(version)
                    yield event
            # The server ended the stream normally: reopen it where we were.

    async def _watch_stream(self, path: str, params: dict[str, str]) -> AsyncGenerator[WatchEvent, None]:
        """One watch request: its events until the server or close() ends it."""
        timeout = httpx.Timeout(30.0, read=self._watch_timeout_seconds + 60.0)
        request = self._client.build_request("GET", path, params=params, timeout=timeout)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            sending = asyncio.ensure_future(self._client.send(request, stream=True))
            if not await _first_of(sending, closed):
                return
            async with contextlib.AsyncExitStack() as stack:
                response = sending.result()
                stack.push_async_callback(response.aclose)
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_from(response)
                lines = response.aiter_lines()
                while True:
                    reading = asyncio.ensure_future(anext(lines))
                    if not await _first_of(reading, closed):
                        return
                    try:
                        line = reading.result()
                    except (StopAsyncIteration, httpx.RemoteProtocolError, httpx.ReadError):
                        return  # the server closed the stream (timeoutSeconds, restart): reconnect
                    if line.strip():
                        yield _event_from(json.loads(line))
        finally:
            closed.cancel()

    # ---- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed.set()
        await asyncio.sleep(0)  # let open watches notice and release their connections
        await self._client.aclose()

    # ---- plumbing --------------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, json_body: Any = None,
                      params: dict[str, str] | None = None, content_type: str = _JSON) -> Obj:
        """A raw API call (for kinds outside the registry, such as CRDs): the decoded body, or an ApiError."""
        return await self._request(method, path, json_body=json_body, params=params,
                                   content_type=content_type)

    async def _request(self, method: str, path: str, *, json_body: Any = None,
                       params: dict[str, str] | None = None, content_type: str = _JSON) -> Obj:
        content = json.dumps(json_body).encode() if json_body is not None else None
        headers = {"Content-Type": content_type} if content is not None else None
        response = await self._client.request(method, path, content=content, params=params, headers=headers)
        if response.status_code >= 400:
            raise _error_from(response)
        body: Obj = response.json()
        return body

    def _path(self, rt: ResourceType, namespace: str | None, name: str | None = None,
              subresource: str | None = None) -> str:
        return resource_path(rt.group, rt.version, rt.plural, namespace if rt.namespaced else None, name,
                             subresource)

    def _locate(self, obj: Obj) -> tuple[ResourceType, str | None, str]:
        rt = self.registry.for_object(obj)
        meta = obj.get("metadata") or {}
        return rt, self._namespace_of(rt, meta.get("namespace")), str(meta.get("name") or "")

    @staticmethod
    def _namespace_of(rt: ResourceType, namespace: str | None) -> str | None:
        if not rt.namespaced:
            return None
        return namespace or "default"


# ---- CRDs ----------------------------------------------------------------------------------------


async def install_crds(store: KubeStore, types: Iterable[ResourceType], *,
                       established_within: float = 60.0) -> None:
    """Create or update the CRDs of ``types`` (from ``capstan.api.schema.custom_resource_definition``) and
    wait until the API server reports each Established, so the kinds can be used right away."""
    group, version, plural = _CRDS
    types = list(types)
    names = []
    for rt in types:
        crd = custom_resource_definition(rt)
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            current = await store.request("GET", resource_path(group, version, plural, None, name))
        except NotFoundError:
            await store.request("POST", resource_path(group, version, plural, None), json_body=crd)
            continue
        crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await store.request("PUT", resource_path(group, version, plural, None, name), json_body=crd)
    async with asyncio.timeout(established_within):
        for name in names:
            await _wait_established(store, resource_path(group, version, plural, None, name))
        for rt in types:
            await _wait_servable(store, rt)


async def _wait_established(store: KubeStore, path: str) -> None:
    delay = 0.05
    while True:
        crd = await store.request("GET", path)
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def _wait_servable(store: KubeStore, rt: ResourceType) -> None:
    """Established is not enough: right after a CRD is created or changed, the API server may still answer
    the kind's requests with 429 "storage is (re)initializing". Wait until a list goes through."""
    delay = 0.05
    while True:
        try:
            await store.list(rt, limit=1)
            return
        except TooManyRequestsError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


# ---- helpers -------------------------------------------------------------------------------------


def resource_path(group: str, version: str, plural: str, namespace: str | None, name: str | None = None,
                  subresource: str | None = None) -> str:
    """The REST path of a collection, an object or an object's subresource."""
    parts = ["/api/v1" if not group else f"/apis/{group}/{version}"]
    if namespace:
        parts.append(f"/namespaces/{namespace}")
    parts.append(f"/{plural}")
    if name is not None:
        if not name:
            raise BadRequestError("resource name may not be empty")
        parts.append(f"/{name}")
        if subresource:
            parts.append(f"/{subresource}")
    return "".join(parts)


def _resolve_connection(kubeconfig: Path | None, context: str | None, in_cluster: bool, server: str | None,
                        token: str | None, ca_file: Path | None, insecure: bool | None) -> Connection:
    if in_cluster:
        base = in_cluster_connection()
    else:
        path = kubeconfig or default_kubeconfig_path()
        if kubeconfig is None and server is not None and not path.exists():
            base = Connection(server=server.rstrip("/"))
        else:
            base = from_kubeconfig(path, context)
    return Connection(
        server=(server or base.server).rstrip("/"),
        token=token or base.token,
        token_file=None if token else base.token_file,
        ca_file=ca_file or base.ca_file,
        ca_data=None if ca_file else base.ca_data,
        client_cert=base.client_cert,
        client_key=base.client_key,
        insecure_skip_tls_verify=base.insecure_skip_tls_verify if insecure is None else insecure,
    )


def _selector_params(label_selector: str, field_selector: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def _with_type(item: Obj, rt: ResourceType) -> Obj:
    """List items come without apiVersion/kind; the Store's objects always carry them."""
    if "kind" in item and "apiVersion" in item:
        return item
    return {"apiVersion": rt.api_version, "kind": rt.kind, **item}


def _error_from(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        status = dict(body)
        status.setdefault("code", response.status_code)
        return ApiError.from_status(status)
    text = response.text.strip() or response.reason_phrase
    return ApiError.from_status({"code": response.status_code, "message": text,
                                 "reason": response.reason_phrase.replace(" ", "")})


def _event_from(raw: Obj) -> WatchEvent:
    event_type = raw.get("type")
    obj = raw.get("object") or {}
    if event_type == "ERROR":
        error = ApiError.from_status(obj)
        if isinstance(error, GoneError) or error.code == 410:
            raise GoneError(error.message, reason=error.reason or "Expired")
        raise error
    if event_type not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
        raise ApiError(f"unexpected watch event type {event_type!r}")
    return WatchEvent(type=event_type, object=obj)


async def _first_of(wanted: asyncio.Future[Any], closed: asyncio.Future[Any]) -> bool:
    """Wait for ``wanted`` or for the store to close; False (and ``wanted`` cancelled) when closed first."""
    try:
        await asyncio.wait({wanted, closed}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # The watch itself is being cancelled (an informer stopping): never leave ``wanted`` behind, or
        # it fails later with the closed connection's ReadError and asyncio logs it as never retrieved.
        wanted.cancel()
        raise
    if wanted.done():
        return True
    wanted.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await wanted
    return False
