"""A small synchronous client for Capstan's kube-style API (used by the CLI and tests).

Every failing call raises the ``capstan.api.errors`` error rebuilt from the server's Status
(``ApiError.from_status``); transport failures raise ``UnreachableError``.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from typing import Any

import httpx

from capstan.api.errors import ApiError
from capstan.api.registry import Registry, ResourceType, default_registry
from capstan.cli.config import ClientConfig
from capstan.store.base import Obj, WatchEvent

MERGE_PATCH = "application/merge-patch+json"


class UnreachableError(Exception):
    """The server did not answer at all."""

    def __init__(self, server: str, detail: str) -> None:
        super().__init__(f"cannot reach Capstan at {server}: is `capstan server` running? ({detail})")
        self.server = server


def _error_from_response(response: httpx.Response) -> ApiError:
    try:
        body = json.loads(response.read())
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        body.setdefault("code", response.status_code)
        return ApiError.from_status(body)
    text = response.text.strip() or response.reason_phrase
    return ApiError.from_status({"code": response.status_code, "message": text,
                                 "reason": response.reason_phrase.replace(" ", "")})


class ApiClient:
    def __init__(self, server: str, token: str, *, registry: Registry | None = None,
                 timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.registry = registry or default_registry()
        self._http = httpx.Client(base_url=self.server, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})

    @classmethod
    def from_config(cls, config: ClientConfig, *, registry: Registry | None = None) -> ApiClient:
        return cls(config.server, config.token, registry=registry)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- plumbing -------------------------------------------------------------------------

    @staticmethod
    def path(rt: ResourceType, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        path = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
        if rt.namespaced and namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{rt.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json") -> Any:
        """Send one request; the decoded JSON answer, or the matching ApiError."""
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else {}
        try:
            response = self._http.request(method, path, params=_clean(params), content=content,
                                          headers=headers)
        except httpx.TransportError as exc:
            raise UnreachableError(self.server, str(exc) or type(exc).__name__) from None
        if response.is_error:
            raise _error_from_response(response)
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # ---- verbs ----------------------------------------------------------------------------

    def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        return dict(self.request("GET", self.path(rt, namespace, name)))

    def list(self, rt: ResourceType, namespace: str | None = None, *, label_selector: str = "",
             field_selector: str = "", limit: int = 0, continue_token: str | None = None) -> Obj:
        """One page of the list as the API returns it (``items`` and ``metadata``)."""
        params = {"labelSelector": label_selector, "fieldSelector": field_selector,
                  "limit": limit or None, "continue": continue_token}
        return dict(self.request("GET", self.path(rt, namespace), params=params))

    def list_all(self, rt: ResourceType, namespace: str | None = None, *, label_selector: str = "",
                 field_selector: str = "", page_size: int = 500) -> tuple[builtins.list[Obj], str]:
        """Every item, following continue tokens; and the resourceVersion of the first page."""
        items: builtins.list[Obj] = []
        token: str | None = None
        version = ""
        while True:
            page = self.list(rt, namespace, label_selector=label_selector, field_selector=field_selector,
                             limit=page_size, continue_token=token)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue") or None
            if not token:
                return items, version

    def create(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        rt = self.registry.for_object(obj)
        namespace = _namespace_of(rt, obj)
        params = {"dryRun": "All"} if dry_run else None
        return dict(self.request("POST", self.path(rt, namespace), params=params, body=obj))

    def update(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        rt = self.registry.for_object(obj)
        params = {"dryRun": "All"} if dry_run else None
        path = self.path(rt, _namespace_of(rt, obj), obj["metadata"]["name"])
        return dict(self.request("PUT", path, params=params, body=obj))

    def update_status(self, obj: Obj) -> Obj:
        rt = self.registry.for_object(obj)
        path = self.path(rt, _namespace_of(rt, obj), obj["metadata"]["name"], "status")
        return dict(self.request("PUT", path, body=obj))

    def patch(self, rt: ResourceType, name: str, namespace: str | None, patch: Obj, *,
              subresource: str | None = None, dry_run: bool = False) -> Obj:
        params = {"dryRun": "All"} if dry_run else None
        return dict(self.request("PATCH", self.path(rt, namespace, name, subresource), params=params,
                                 body=patch, content_type=MERGE_PATCH))

    def delete(self, rt: ResourceType, name: str, namespace: str | None = None, *,
               propagation_policy: str | None = None) -> Obj | None:
        """The object when finalizers keep it for now; None when it is gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        answer = self.request("DELETE", self.path(rt, namespace, name), body=body)
        if isinstance(answer, dict) and answer.get("kind") != "Status":
            return answer
        return None

    def get_scale(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        return dict(self.request("GET", self.path(rt, namespace, name, "scale")))

    def scale(self, rt: ResourceType, name: str, namespace: str | None, replicas: int) -> Obj:
        """Set the desired replicas through the scale subresource; returns the Scale."""
        return self.patch(rt, name, namespace, {"spec": {"replicas": replicas}}, subresource="scale")

    def watch(self, rt: ResourceType, namespace: str | None = None, *, resource_version: str | None = None,
              label_selector: str = "", field_selector: str = "", timeout_seconds: int | None = None,
              bookmarks: bool = False) -> Iterator[WatchEvent]:
        """Events until the server ends the stream; an ERROR event raises its ApiError
        (GoneError when the resourceVersion is too old: list again)."""
        params = {"watch": "true", "resourceVersion": resource_version, "labelSelector": label_selector,
                  "fieldSelector": field_selector, "timeoutSeconds": timeout_seconds,
                  "allowWatchBookmarks": "true" if bookmarks else None}
        for line in self._stream_lines(self.path(rt, namespace), params):
            event = json.loads(line)
            if event.get("type") == "ERROR":
                raise ApiError.from_status(event.get("object") or {})
            yield WatchEvent(type=event["type"], object=event.get("object") or {})

    def logs(self, name: str, namespace: str, *, container: str | None = None, follow: bool = False,
             tail_lines: int | None = None) -> Iterator[bytes]:
        """The container's log as it arrives (until the pod ends when following)."""
        rt = self.registry.lookup("pods")
        params = {"container": container, "follow": "true" if follow else None, "tailLines": tail_lines}
        yield from self._stream_bytes(self.path(rt, namespace, name, "log"), params)

    # ---- discovery ------------------------------------------------------------------------

    def version(self) -> Obj:
        return dict(self.request("GET", "/version"))

    def api_resource_lists(self) -> builtins.list[Obj]:
        """The APIResourceList of every group version the server serves, core first."""
        lists = []
        for version in self.request("GET", "/api").get("versions", []):
            lists.append(self.request("GET", f"/api/{version}"))
        for group in self.request("GET", "/apis").get("groups", []):
            for version in group.get("versions", []):
                lists.append(self.request("GET", f"/apis/{version['groupVersion']}"))
        return lists

    # ---- streaming ------------------------------------------------------------------------

    def _stream_lines(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        buffered = b""
        for chunk in self._stream_bytes(path, params):
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line.decode()
        if buffered.strip():
            yield buffered.decode()

    def _stream_bytes(self, path: str, params: dict[str, Any]) -> Iterator[bytes]:
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        try:
            with self._http.stream("GET", path, params=_clean(params), timeout=timeout) as response:
                if response.is_error:
                    raise _error_from_response(response)
                yield from response.iter_raw()
        except httpx.TransportError as exc:
            raise UnreachableError(self.server, str(exc) or type(exc).__name__) from None


def _clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {key: value for key, value in params.items() if value not in (None, "")}


def _namespace_of(rt: ResourceType, obj: Obj) -> str | None:
    if not rt.namespaced:
        return None
    return (obj.get("metadata") or {}).get("namespace") or "default"
