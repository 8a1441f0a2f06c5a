"""The kube-style REST API over a Store.

Paths, verbs, list and watch formats and error Status bodies follow the Kubernetes API, so
that ``kubectl``, client libraries and Capstan's own CLI can talk to it:

* ``/api/v1/...`` for the core group, ``/apis/{group}/{version}/...`` for the others;
  ``namespaces/{ns}/{plural}[/{name}[/{subresource}]]`` for namespaced kinds, ``{plural}``
  (all namespaces, or a cluster-scoped collection) and ``{plural}/{name}[/{subresource}]``;
* subresources ``status`` and ``scale`` (autoscaling/v1 Scale), and ``pods/{name}/log``;
* watch is newline-delimited JSON ``{"type", "object"}``; an expired resourceVersion ends the
  stream with an ERROR event holding a 410 Status, as Kubernetes does.

PATCH accepts ``application/merge-patch+json``. ``application/strategic-merge-patch+json`` is
accepted too but applied as a plain merge patch: lists are replaced as a whole rather than
merged by key (e.g. ``containers`` by name), and ``$patch``/``$retainKeys`` directives are not
interpreted. The response carries a ``Warning`` header saying so. JSON patch (RFC 6902) and
server-side apply are refused with 415.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from capstan import __version__
from capstan.api.errors import (
    ApiError,
    BadRequestError,
    Cause,
    ConflictError,
    InvalidError,
    MethodNotAllowedError,
    NotFoundError,
)
from capstan.api.patch import merge_patch
from capstan.api.registry import ResourceType
from capstan.api.selectors import FieldSelector, LabelSelector, SelectorError
from capstan.runtime.logs import container_log_path
from capstan.server import discovery, visibility
from capstan.server.access import AccessLogMiddleware, internal_error_body, log_unexpected
from capstan.server.auth import BearerTokenMiddleware
from capstan.server.autoscaling import explain_routes
from capstan.server.podlogs import follow_log, read_log
from capstan.store.base import Obj, PropagationPolicy, Store, until_stopped

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
STRATEGIC_WARNING = ('299 - "strategic merge patch is applied as a JSON merge patch by Capstan: '
                     'lists are replaced, not merged by key"')
POLICIES_IN_ORDER: tuple[PropagationPolicy, ...] = ("Background", "Foreground", "Orphan")
ENDED_PHASES = ("Succeeded", "Failed")


def _json(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status_code, headers=headers)


def _status_response(error: ApiError) -> Response:
    return _json(error.to_status(), status_code=error.code)


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _int_param(request: Request, name: str, *, minimum: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise BadRequestError(f"{name} must be at least {minimum}, got {value}")
    return value


def _dry_run(request: Request) -> bool:
    values = request.query_params.getlist("dryRun")
    for value in values:
        if value != "All":
            raise BadRequestError(f'dryRun must be "All", got {value!r}')
    return bool(values)


@dataclass(frozen=True)
class Target:
    """What a resource path names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def describe(self) -> str:
        return f'{self.rt.group_plural} "{self.name}"'


def _not_found_path(path: str) -> NotFoundError:
    return NotFoundError(f"the server could not find the requested resource ({path})", kind="")


class _Api:
    def __init__(self, store: Store, pods_root: Path) -> None:
        self.store = store
        self.registry = store.registry
        self.pods_root = pods_root
        # Set when the server shuts down: open watches and log follows end at once instead of
        # holding the shutdown until their next event.
        self.closing = asyncio.Event()

    # ---- routing --------------------------------------------------------------------------

    def target(self, group: str, version: str, rest: str, path: str) -> Target:
        parts = [part for part in rest.split("/") if part]
        namespace: str | None = None
        if (len(parts) >= 3 and parts[0] == "namespaces"
                and not (group == "" and len(parts) == 3 and parts[2] in ("status", "finalize"))):
            namespace, parts = parts[1], parts[2:]
        if not parts or len(parts) > 3:
            raise _not_found_path(path)
        plural = parts[0]
        name = parts[1] if len(parts) > 1 else None
        subresource = parts[2] if len(parts) > 2 else None
        try:
            rt = self.registry.by_group_plural(group, plural)
        except NotFoundError:
            raise _not_found_path(path) from None
        if not discovery.serves(rt, group, version):
            raise _not_found_path(path)
        if namespace is not None and not rt.namespaced:
            raise _not_found_path(path)
        if rt.namespaced and namespace is None and name is not None:
            raise _not_found_path(path)
        if subresource is not None and subresource not in self._subresources(rt):
            raise _not_found_path(path)
        return Target(rt, namespace, name, subresource)

    @staticmethod
    def _subresources(rt: ResourceType) -> set[str]:
        found = set()
        if rt.has_status:
            found.add("status")
        if rt.scale is not None:
            found.add("scale")
        if rt.group == "" and rt.kind == "Pod":
            found.add("log")
        return found

    async def handle(self, request: Request) -> Response:
        params = request.path_params
        target = self.target(params.get("group", ""), params["version"], params["rest"], request.url.path)
        method = request.method
        if target.name is None:
            handlers = {"GET": self.list_or_watch, "POST": self.create, "DELETE": self.delete_collection}
        elif target.subresource is None:
            handlers = {"GET": self.get, "PUT": self.update, "PATCH": self.patch, "DELETE": self.delete}
        elif target.subresource == "status":
            handlers = {"GET": self.get, "PUT": self.update_status, "PATCH": self.patch}
        elif target.subresource == "scale":
            handlers = {"GET": self.get_scale, "PUT": self.update_scale, "PATCH": self.patch_scale}
        else:
            handlers = {"GET": self.logs}
        handler = handlers.get(method)
        if handler is None:
            raise MethodNotAllowedError(f"the server does not allow this method on the requested resource "
                                        f"({method} {request.url.path})")
        return await handler(request, target)

    # ---- bodies ---------------------------------------------------------------------------

    @staticmethod
    async def _body(request: Request) -> Any:
        raw = await request.body()
        if not raw.strip():
            return None
        is_yaml = "yaml" in request.headers.get("content-type", "")
        try:
            return yaml.safe_load(raw) if is_yaml else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            language = "YAML" if is_yaml else "JSON"
            raise BadRequestError(f"the request body is not valid {language}: {exc}") from None

    async def _object_body(self, request: Request) -> Obj:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise BadRequestError("the request body must be a JSON object")
        return body

    def _check_object(self, obj: Obj, target: Target, *, expect_kind: str | None = None,
                      expect_api_version: str | None = None) -> Obj:
        """Fill apiVersion/kind/namespace/name from the path; mismatches are 400 like Kubernetes."""
        rt = target.rt
        kind = expect_kind or rt.kind
        api_version = expect_api_version or rt.api_version
        if obj.get("kind") not in (None, "", kind):
            raise BadRequestError(f"the kind of the object ({obj['kind']}) does not match the kind "
                                  f"on the URL ({kind})")
        accepted_versions = (None, "", api_version, *self._other_versions(rt, expect_api_version))
        if obj.get("apiVersion") not in accepted_versions:
            raise BadRequestError(f"the API version in the data ({obj['apiVersion']}) does not match the "
                                  f"expected API version ({api_version})")
        obj = {**obj, "apiVersion": obj.get("apiVersion") or api_version, "kind": kind}
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise BadRequestError("metadata must be an object")
        metadata = dict(metadata)
        if rt.namespaced:
            body_namespace = metadata.get("namespace")
            if body_namespace and body_namespace != target.namespace:
                raise BadRequestError("the namespace of the provided object does not match the namespace "
                                      "sent on the request")
            metadata["namespace"] = target.namespace
        else:
            metadata.pop("namespace", None)
        if target.name is not None:
            if metadata.get("name") and metadata["name"] != target.name:
                raise BadRequestError(f"the name of the object ({metadata['name']}) does not match the name "
                                      f"on the URL ({target.name})")
            metadata["name"] = target.name
        obj["metadata"] = metadata
        return obj

    @staticmethod
    def _other_versions(rt: ResourceType, expected: str | None) -> tuple[str, ...]:
        if expected is not None:
            return ()
        return tuple(f"{rt.group}/{v}" if rt.group else v for v in rt.served_versions)

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        return _json(await self.store.get(target.rt, target.name, target.namespace))

    @staticmethod
    def _selectors(request: Request) -> tuple[str, str]:
        label_selector = request.query_params.get("labelSelector", "")
        field_selector = request.query_params.get("fieldSelector", "")
        try:
            LabelSelector.parse(label_selector)
        except SelectorError as exc:
            raise BadRequestError(f"unable to parse requirement: {exc}") from None
        try:
            FieldSelector.parse(field_selector)
        except SelectorError as exc:
            raise BadRequestError(f"invalid field selector: {exc}") from None
        return label_selector, field_selector

    async def list_or_watch(self, request: Request, target: Target) -> Response:
        label_selector, field_selector = self._selectors(request)
        if _flag(request.query_params.get("watch")):
            return StreamingResponse(
                self._watch_stream(target, label_selector, field_selector,
                                   resource_version=request.query_params.get("resourceVersion") or None,
                                   bookmarks=_flag(request.query_params.get("allowWatchBookmarks")),
                                   timeout_seconds=_int_param(request, "timeoutSeconds")),
                media_type="application/json")
        result = await self.store.list(
            target.rt, target.namespace, label_selector=label_selector, field_selector=field_selector,
            limit=_int_param(request, "limit") or 0,
            continue_token=request.query_params.get("continue") or None)
        metadata: dict[str, Any] = {"resourceVersion": result.resource_version}
        if result.continue_token:
            metadata["continue"] = result.continue_token
        if result.remaining_item_count is not None:
            metadata["remainingItemCount"] = result.remaining_item_count
        return _json({"kind": f"{target.rt.kind}List", "apiVersion": target.rt.api_version,
                      "metadata": metadata, "items": result.items})

    async def _watch_stream(self, target: Target, label_selector: str, field_selector: str, *,
                            resource_version: str | None, bookmarks: bool,
                            timeout_seconds: int | None) -> AsyncIterator[bytes]:
        def line(event_type: str, obj: Obj) -> bytes:
            return json.dumps({"type": event_type, "object": obj}).encode() + b"\n"

        rt, namespace = target.rt, target.namespace
        events = None
        try:
            initial: list[Obj] = []
            if resource_version in (None, "0"):
                # Like Kubernetes: without a version (or "0") the watch starts with the current
                # state as synthetic ADDED events, then follows from there.
                listed = await self.store.list(rt, namespace, label_selector=label_selector,
                                               field_selector=field_selector)
                initial, resource_version = listed.items, listed.resource_version
            events = self.store.watch(rt, namespace, resource_version=resource_version,
                                      label_selector=label_selector, field_selector=field_selector,
                                      bookmarks=bookmarks)
            for obj in initial:
                yield line("ADDED", obj)
            async with asyncio.timeout(timeout_seconds):
                async for event in until_stopped(events, self.closing):
                    yield line(event.type, event.object)
        except TimeoutError:
            return
        except ApiError as exc:
            yield line("ERROR", exc.to_status())
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    # ---- writes ---------------------------------------------------------------------------

    async def create(self, request: Request, target: Target) -> Response:
        obj = self._check_object(await self._object_body(request), target)
        created = await self.store.create(obj, dry_run=_dry_run(request))
        return _json(created, status_code=201)

    async def update(self, request: Request, target: Target) -> Response:
        obj = self._check_object(await self._object_body(request), target)
        return _json(await self.store.update(obj, dry_run=_dry_run(request)))

    async def update_status(self, request: Request, target: Target) -> Response:
        if _dry_run(request):
            raise BadRequestError("dryRun is not supported on the status subresource")
        obj = self._check_object(await self._object_body(request), target)
        return _json(await self.store.update_status(obj))

    async def _merge_patch_body(self, request: Request) -> tuple[Obj, dict[str, str]]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        headers: dict[str, str] = {}
        if content_type == STRATEGIC_MERGE_PATCH:
            headers["Warning"] = STRATEGIC_WARNING
        elif content_type == "application/json-patch+json":
            raise UnsupportedMediaTypeError("JSON patch (application/json-patch+json) is not supported by "
                                            "Capstan; send a JSON merge patch (application/merge-patch+json)")
        elif content_type == "application/apply-patch+yaml":
            raise UnsupportedMediaTypeError("server-side apply is not supported by Capstan; use "
                                            "`capstan apply` or a JSON merge patch (application/merge-patch+json)")
        elif content_type != MERGE_PATCH:
            raise UnsupportedMediaTypeError(f"the body of a PATCH must be {MERGE_PATCH} "
                                            f"(got {content_type or 'no content type'})")
        body = await self._body(request)
        if not isinstance(body, dict):
            raise BadRequestError("a merge patch must be a JSON object")
        return body, headers

    async def patch(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        patch, headers = await self._merge_patch_body(request)
        if _dry_run(request):
            if target.subresource is not None:
                raise BadRequestError("dryRun is not supported on the status subresource")
            current = await self.store.get(target.rt, target.name, target.namespace)
            merged = merge_patch(current, patch)
            merged = self._check_object(merged, target)
            return _json(await self.store.update(merged, dry_run=True), headers=headers)
        subresource: Literal["status"] | None = "status" if target.subresource == "status" else None
        patched = await self.store.patch(target.rt, target.name, target.namespace, patch,
                                         subresource=subresource)
        return _json(patched, headers=headers)

    async def delete(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        options = await self._body(request) or {}
        if not isinstance(options, dict):
            raise BadRequestError("DeleteOptions must be a JSON object")
        policy = self._propagation_policy(request, options)
        preconditions = options.get("preconditions") or {}
        uid = preconditions.get("uid")
        current: Obj | None = None
        expected_version = preconditions.get("resourceVersion")
        if expected_version or _dry_run(request) or "All" in (options.get("dryRun") or []):
            current = await self.store.get(target.rt, target.name, target.namespace)
            found_version = current["metadata"].get("resourceVersion")
            if expected_version and found_version != expected_version:
                raise ConflictError(
                    f'Operation cannot be fulfilled on {target.rt.group_plural} "{target.name}": '
                    f"Precondition failed: ResourceVersion in precondition: {expected_version}, "
                    f"in object meta: {found_version}", kind=target.rt.plural, name=target.name)
            if _dry_run(request) or "All" in (options.get("dryRun") or []):
                return _json(current)
            uid = uid or current["metadata"].get("uid")
        remaining = await self.store.delete(target.rt, target.name, target.namespace,
                                            propagation_policy=policy, uid=uid)
        if remaining is not None:
            return _json(remaining)
        details: dict[str, Any] = {"name": target.name, "group": target.rt.group, "kind": target.rt.plural}
        if uid:
            details["uid"] = uid
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "details": details})

    @staticmethod
    def _propagation_policy(request: Request, options: Obj) -> PropagationPolicy:
        policy = request.query_params.get("propagationPolicy") or options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is True:
            policy = "Orphan"
        policy = policy or "Background"
        for known in POLICIES_IN_ORDER:
            if policy == known:
                return known
        raise BadRequestError(f"propagationPolicy must be one of {', '.join(POLICIES_IN_ORDER)}; "
                              f"got {policy!r}")

    async def delete_collection(self, request: Request, target: Target) -> Response:
        label_selector, field_selector = self._selectors(request)
        policy = self._propagation_policy(request, await self._body(request) or {})
        listed = await self.store.list(target.rt, target.namespace, label_selector=label_selector,
                                       field_selector=field_selector)
        deleted = []
        for obj in listed.items:
            meta = obj["metadata"]
            try:
                await self.store.delete(target.rt, meta["name"], meta.get("namespace"),
                                        propagation_policy=policy, uid=meta.get("uid"))
            except (NotFoundError, ConflictError):
                continue  # already gone or replaced meanwhile: not ours to delete
            deleted.append(obj)
        return _json({"kind": f"{target.rt.kind}List", "apiVersion": target.rt.api_version,
                      "metadata": {"resourceVersion": listed.resource_version}, "items": deleted})

    # ---- scale subresource ----------------------------------------------------------------

    async def get_scale(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        return _json(await self.store.get_scale(target.rt, target.name, target.namespace))

    async def _write_scale(self, target: Target, scale: Obj) -> Response:
        assert target.name is not None
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise InvalidError.from_causes("Scale", target.name, [Cause(
                "spec.replicas", "FieldValueInvalid", "must be a non-negative integer")])
        resource_version = (scale.get("metadata") or {}).get("resourceVersion") or None
        return _json(await self.store.update_scale(target.rt, target.name, target.namespace, replicas,
                                                   resource_version=resource_version))

    async def update_scale(self, request: Request, target: Target) -> Response:
        if _dry_run(request):
            raise BadRequestError("dryRun is not supported on the scale subresource")
        scale = self._check_object(await self._object_body(request), target, expect_kind="Scale",
                                   expect_api_version="autoscaling/v1")
        return await self._write_scale(target, scale)

    async def patch_scale(self, request: Request, target: Target) -> Response:
        assert target.name is not None
        if _dry_run(request):
            raise BadRequestError("dryRun is not supported on the scale subresource")
        patch, headers = await self._merge_patch_body(request)
        current = await self.store.get_scale(target.rt, target.name, target.namespace)
        response = await self._write_scale(target, merge_patch(current, patch))
        response.headers.update(headers)
        return response

    # ---- pod logs -------------------------------------------------------------------------

    async def logs(self, request: Request, target: Target) -> Response:
        assert target.name is not None and target.namespace is not None
        if _flag(request.query_params.get("previous")):
            raise BadRequestError("previous=true is not supported: Capstan keeps the log of the current "
                                  "container incarnation only")
        pod = await self.store.get(target.rt, target.name, target.namespace)
        container = self._log_container(pod, request.query_params.get("container"))
        uid = pod["metadata"].get("uid") or ""
        path = container_log_path(self.pods_root, target.namespace, target.name, uid, container)
        tail_lines = _int_param(request, "tailLines")
        follow = _flag(request.query_params.get("follow"))
        if not path.exists() and not follow:
            raise BadRequestError(f'container "{container}" in pod "{target.name}" is waiting to start: '
                                  f"no log output yet")
        content, offset = read_log(path, tail_lines) if path.exists() else (b"", 0)
        if not follow:
            return Response(content, media_type="text/plain")

        async def pod_running() -> bool:
            if self.closing.is_set():
                return False
            try:
                current = await self.store.get(target.rt, target.name or "", target.namespace)
            except NotFoundError:
                return False
            same_pod = current["metadata"].get("uid") == uid
            return same_pod and (current.get("status") or {}).get("phase") not in ENDED_PHASES

        async def stream() -> AsyncIterator[bytes]:
            if content:
                yield content
            async for chunk in follow_log(path, offset, pod_running):
                yield chunk

        return StreamingResponse(stream(), media_type="text/plain")

    @staticmethod
    def _log_container(pod: Obj, requested: str | None) -> str:
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        pod_name = pod["metadata"]["name"]
        if requested:
            if requested not in names:
                raise BadRequestError(f'container {requested} is not valid for pod {pod_name}')
            return requested
        if len(names) == 1:
            return str(names[0])
        raise BadRequestError(f"a container name must be specified for pod {pod_name}, "
                              f"choose one of: [{' '.join(str(n) for n in names)}]")


class UnsupportedMediaTypeError(ApiError):
    code: ClassVar[int] = 415

    def __init__(self, message: str) -> None:
        super().__init__(message=message, reason="UnsupportedMediaType")


def build_app(store: Store, *, token: str, pods_root: Path,
              metrics: Callable[[], bytes] | None = None) -> Starlette:
    """The API application: every route behind the bearer token except /healthz and /readyz."""
    api = _Api(store, pods_root)
    registry = store.registry

    async def guarded(request: Request) -> Response:
        try:
            return await api.handle(request)
        except ApiError as exc:
            return _status_response(exc)
        except SelectorError as exc:
            return _status_response(BadRequestError(str(exc)))
        except Exception as exc:
            log_unexpected(request.method, request.url.path, exc)
            return Response(internal_error_body(), status_code=500, media_type="application/json")

    async def ok(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def version(_: Request) -> Response:
        return _json({"major": "1", "minor": "0", "gitVersion": f"v{__version__}",
                      "platform": "capstan-embedded", "capstanVersion": __version__})

    async def core_versions(request: Request) -> Response:
        return _json(discovery.api_versions(f"{request.url.hostname}:{request.url.port}"))

    async def groups(_: Request) -> Response:
        return _json(discovery.api_group_list(registry))

    async def group(request: Request) -> Response:
        found = discovery.api_group(registry, request.path_params["group"])
        if found is None:
            return _status_response(_not_found_path(request.url.path))
        return _json(found)

    async def resources(request: Request) -> Response:
        found = discovery.api_resource_list(registry, request.path_params.get("group", ""),
                                            request.path_params["version"])
        if found is None:
            return _status_response(_not_found_path(request.url.path))
        return _json(found)

    async def metrics_endpoint(_: Request) -> Response:
        assert metrics is not None
        return Response(metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return _status_response(MethodNotAllowedError(
                f"the server does not allow this method on the requested resource ({request.method})"))
        if exc.status_code == 404:
            return _status_response(_not_found_path(request.url.path))
        return _status_response(BadRequestError(str(exc.detail)))

    routes = [
        *explain_routes(store),
        Route("/healthz", ok, methods=["GET"]),
        Route("/readyz", ok, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/api", core_versions, methods=["GET"]),
        Route("/apis", groups, methods=["GET"]),
        Route("/api/{version}", resources, methods=["GET"]),
        Route("/apis/{group}", group, methods=["GET"]),
        Route("/apis/{group}/{version}", resources, methods=["GET"]),
        Route("/api/{version}/{rest:path}", guarded, methods=ALL_METHODS),
        Route("/apis/{group}/{version}/{rest:path}", guarded, methods=ALL_METHODS),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    routes[0:0] = visibility.routes(store)
    middleware = [Middleware(AccessLogMiddleware), Middleware(BearerTokenMiddleware, token=token)]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})
    app.state.closing = api.closing
    return app
