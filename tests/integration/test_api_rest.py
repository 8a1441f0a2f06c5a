"""The kube-style REST API over a real SQLite store, through real HTTP: auth, discovery, CRUD,
selectors, paging, errors, subresources, watch and logs."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.api_harness import RunningApi, running_api

from capstan.api.errors import ConflictError, GoneError, InvalidError, NotFoundError
from capstan.runtime.logs import container_log_path
from capstan.store.base import WatchEvent

PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RunningApi]:
    with running_api(tmp_path, history_limit=20) as running:
        yield running


def pod(name: str, labels: dict[str, str] | None = None, containers: tuple[str, ...] = ("main",)) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": c, "command": ["sleep", "1"]} for c in containers]}}


def deployment(name: str, replicas: Any = 1) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "command": ["sleep", "1"]}]}}}}


def wait_for(predicate: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


# ---- authentication ------------------------------------------------------------------------------

def test_requests_without_or_with_a_wrong_token_get_401_status(api: RunningApi) -> None:
    for client in (api.http(token=None), api.http(token="wrong")):
        response = client.get(PODS)
        assert response.status_code == 401
        assert response.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                   "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    assert api.http().get(PODS).status_code == 200


def test_health_probes_need_no_token_but_nothing_else_is_open(api: RunningApi) -> None:
    anonymous = api.http(token=None)
    assert anonymous.get("/healthz").text == "ok"
    assert anonymous.get("/readyz").status_code == 200
    for path in ("/api", "/apis", "/api/v1", "/version", "/nope"):
        assert anonymous.get(path).status_code == 401, path


# ---- discovery -----------------------------------------------------------------------------------

def test_discovery_documents_describe_every_kind(api: RunningApi) -> None:
    http = api.http()
    assert http.get("/api").json()["versions"] == ["v1"]
    groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
    assert groups["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert "batch" in groups
    core = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
    assert core["pods"] == {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
                            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                                      "watch"], "shortNames": ["po"], "categories": ["all"]}
    assert core["nodes"]["namespaced"] is False
    assert core["pods/log"]["verbs"] == ["get"]
    assert "pods/status" in core
    apps = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
    assert apps["deployments/scale"]["kind"] == "Scale"
    assert apps["deployments/scale"]["group"] == "autoscaling"
    assert http.get("/apis/nope/v1").status_code == 404


# ---- CRUD ----------------------------------------------------------------------------------------

def test_create_get_update_patch_delete_through_rest_paths(api: RunningApi) -> None:
    http = api.http()
    created = http.post(PODS, json=pod("web", {"app": "web"}))
    assert created.status_code == 201
    body = created.json()
    assert body["metadata"]["namespace"] == "default" and body["metadata"]["uid"]

    fetched = http.get(f"{PODS}/web").json()
    assert fetched["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"]

    fetched["metadata"]["labels"]["tier"] = "front"
    updated = http.put(f"{PODS}/web", json=fetched)
    assert updated.status_code == 200
    assert updated.json()["metadata"]["labels"] == {"app": "web", "tier": "front"}

    stale = http.put(f"{PODS}/web", json=fetched)  # the old resourceVersion again
    assert stale.status_code == 409
    assert stale.json()["reason"] == "Conflict"

    patched = http.patch(f"{PODS}/web", json={"metadata": {"labels": {"tier": None, "x": "y"}}},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert patched.status_code == 200
    assert patched.json()["metadata"]["labels"] == {"app": "web", "x": "y"}

    deleted = http.delete(f"{PODS}/web")
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "Success"
    missing = http.get(f"{PODS}/web")
    assert missing.status_code == 404
    assert missing.json()["message"] == 'pods "web" not found'
    assert missing.json()["reason"] == "NotFound"


def test_cluster_scoped_kinds_and_all_namespace_lists(api: RunningApi) -> None:
    http = api.http()
    assert http.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": "team"}}).status_code == 201
    assert http.post("/api/v1/namespaces/team/pods", json=pod("a")).status_code == 201
    assert http.post(PODS, json=pod("b")).status_code == 201
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    assert http.post("/api/v1/nodes", json=node).status_code == 201
    assert http.get("/api/v1/nodes/n1").json()["metadata"]["name"] == "n1"
    everywhere = http.get("/api/v1/pods").json()
    assert everywhere["kind"] == "PodList" and everywhere["apiVersion"] == "v1"
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in everywhere["items"]] == [
        ("default", "b"), ("team", "a")]
    assert http.get("/api/v1/namespaces/team/pods").json()["items"][0]["metadata"]["name"] == "a"
    # Cluster-scoped kinds have no namespaced path, and namespaced items no cluster-wide one.
    assert http.get("/api/v1/namespaces/default/nodes/n1").status_code == 404
    assert http.get("/api/v1/pods/b").status_code == 404


def test_dry_run_validates_without_writing(api: RunningApi) -> None:
    http = api.http()
    response = http.post(DEPLOYMENTS, params={"dryRun": "All"}, json=deployment("web"))
    assert response.status_code == 201
    assert http.get(f"{DEPLOYMENTS}/web").status_code == 404
    assert http.post(DEPLOYMENTS, json=deployment("web")).status_code == 201
    current = http.get(f"{DEPLOYMENTS}/web").json()
    current["spec"]["replicas"] = 5
    assert http.put(f"{DEPLOYMENTS}/web", params={"dryRun": "All"}, json=current).json()["spec"]["replicas"] == 5
    assert http.get(f"{DEPLOYMENTS}/web").json()["spec"]["replicas"] == 1


def test_invalid_objects_get_422_with_causes(api: RunningApi) -> None:
    response = api.http().post(DEPLOYMENTS, json=deployment("web", replicas="three"))
    assert response.status_code == 422
    status = response.json()
    assert status["reason"] == "Invalid"
    assert status["details"]["kind"] == "Deployment" and status["details"]["name"] == "web"
    assert {"field": "spec.replicas", "reason": "FieldValueTypeInvalid",
            "message": 'Invalid value: "string": spec.replicas in body must be of type integer: "string"'} in (
        status["details"]["causes"])
    with pytest.raises(InvalidError) as caught:
        api.client().create(deployment("web", replicas=-1))
    assert [c.field for c in caught.value.causes] == ["spec.replicas"]


def test_bad_requests_are_400_like_kubernetes(api: RunningApi) -> None:
    http = api.http()
    wrong_namespace = pod("x")
    wrong_namespace["metadata"]["namespace"] = "other"
    response = http.post(PODS, json=wrong_namespace)
    assert response.status_code == 400
    assert response.json()["message"] == ("the namespace of the provided object does not match the namespace "
                                          "sent on the request")
    wrong_kind = {**pod("x"), "kind": "Node"}
    assert http.post(PODS, json=wrong_kind).json()["message"] == (
        "the kind of the object (Node) does not match the kind on the URL (Pod)")
    assert http.post(PODS, json={**pod("x"), "apiVersion": "apps/v1"}).status_code == 400
    http.post(PODS, json=pod("x"))
    renamed = http.get(f"{PODS}/x").json()
    renamed["metadata"]["name"] = "y"
    assert http.put(f"{PODS}/x", json=renamed).json()["message"] == (
        "the name of the object (y) does not match the name on the URL (x)")
    broken = http.post(PODS, content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["reason"] == "BadRequest"
    assert http.post(PODS, json=["a list"]).status_code == 400
    assert http.get(PODS, params={"labelSelector": "a in (b"}).status_code == 400
    assert http.get(PODS, params={"fieldSelector": "status.phase in (x)"}).status_code == 400
    assert http.get(PODS, params={"limit": "many"}).status_code == 400
    assert http.delete(f"{PODS}/x", params={"propagationPolicy": "Sometimes"}).status_code == 400


def test_wrong_methods_and_paths(api: RunningApi) -> None:
    http = api.http()
    http.post(PODS, json=pod("x"))
    not_allowed = http.post(f"{PODS}/x", json=pod("x"))
    assert not_allowed.status_code == 405
    assert not_allowed.json()["reason"] == "MethodNotAllowed"
    assert http.put(PODS, json=pod("x")).status_code == 405
    unknown = http.get("/api/v1/namespaces/default/widgets")
    assert unknown.status_code == 404 and unknown.json()["kind"] == "Status"
    assert http.get(f"{PODS}/x/exec").status_code == 404


def test_patch_media_types(api: RunningApi) -> None:
    http = api.http()
    http.post(PODS, json=pod("x", {"a": "1"}))
    strategic = http.patch(f"{PODS}/x", json={"metadata": {"labels": {"b": "2"}}},
                           headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert strategic.status_code == 200
    assert strategic.json()["metadata"]["labels"] == {"a": "1", "b": "2"}
    assert "lists are replaced" in strategic.headers["warning"]
    json_patch = http.patch(f"{PODS}/x", json=[{"op": "remove", "path": "/metadata/labels/a"}],
                            headers={"Content-Type": "application/json-patch+json"})
    assert json_patch.status_code == 415
    assert "application/merge-patch+json" in json_patch.json()["message"]
    assert http.patch(f"{PODS}/x", json={}, headers={"Content-Type": "text/plain"}).status_code == 415


# ---- selectors and paging ------------------------------------------------------------------------

def test_label_and_field_selectors_and_paging(api: RunningApi) -> None:
    http = api.http()
    for index in range(5):
        http.post(PODS, json=pod(f"p{index}", {"app": "web" if index % 2 else "db"}))
    names = [p["metadata"]["name"] for p in http.get(PODS, params={"labelSelector": "app=web"}).json()["items"]]
    assert names == ["p1", "p3"]
    names = [p["metadata"]["name"] for p in http.get(PODS, params={"labelSelector": "app in (db),app!=web"})
             .json()["items"]]
    assert names == ["p0", "p2", "p4"]
    by_field = http.get(PODS, params={"fieldSelector": "metadata.name=p3"}).json()["items"]
    assert [p["metadata"]["name"] for p in by_field] == ["p3"]

    seen = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = http.get(PODS, params=params).json()
        seen.append([p["metadata"]["name"] for p in page["items"]])
        if not page["metadata"].get("continue"):
            break
        params["continue"] = page["metadata"]["continue"]
    assert seen == [["p0", "p1"], ["p2", "p3"], ["p4"]]


# ---- subresources --------------------------------------------------------------------------------

def test_scale_subresource_get_put_patch(api: RunningApi) -> None:
    http = api.http()
    http.post(DEPLOYMENTS, json=deployment("web", replicas=2))
    scale = http.get(f"{DEPLOYMENTS}/web/scale").json()
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 2
    scale["spec"]["replicas"] = 4
    assert http.put(f"{DEPLOYMENTS}/web/scale", json=scale).json()["spec"]["replicas"] == 4
    assert http.get(f"{DEPLOYMENTS}/web").json()["spec"]["replicas"] == 4
    patched = http.patch(f"{DEPLOYMENTS}/web/scale", json={"spec": {"replicas": 0}},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert patched.json()["spec"]["replicas"] == 0
    assert api.client().scale(api.client().registry.lookup("deploy"), "web", "default", 3)["spec"]["replicas"] == 3
    bad = http.patch(f"{DEPLOYMENTS}/web/scale", json={"spec": {"replicas": -2}},
                     headers={"Content-Type": "application/merge-patch+json"})
    assert bad.status_code == 422
    assert bad.json()["details"]["causes"][0]["field"] == "spec.replicas"
    assert http.get(f"{PODS}/nothing/scale").status_code == 404  # pods have no scale subresource


def test_status_subresource_changes_only_status(api: RunningApi) -> None:
    http = api.http()
    created = http.post(PODS, json=pod("x")).json()
    created["status"] = {"phase": "Running", "podIP": "10.0.0.7"}
    created["metadata"]["labels"] = {"ignored": "yes"}
    updated = http.put(f"{PODS}/x/status", json=created).json()
    assert updated["status"]["phase"] == "Running"
    assert "ignored" not in (updated["metadata"].get("labels") or {})
    patched = http.patch(f"{PODS}/x/status", json={"status": {"phase": "Succeeded"}},
                         headers={"Content-Type": "application/merge-patch+json"}).json()
    assert patched["status"] == {"phase": "Succeeded", "podIP": "10.0.0.7"}
    assert http.get(f"{PODS}/x/status").json()["status"]["phase"] == "Succeeded"


def test_delete_with_preconditions_and_propagation(api: RunningApi) -> None:
    http = api.http()
    created = http.post(PODS, json=pod("x")).json()
    stale = http.request("DELETE", f"{PODS}/x", json={"preconditions": {"uid": "someone-else"}})
    assert stale.status_code == 409
    wrong_version = http.request("DELETE", f"{PODS}/x", json={"preconditions": {"resourceVersion": "1"}})
    assert wrong_version.status_code == 409
    ok = http.request("DELETE", f"{PODS}/x", params={"propagationPolicy": "Foreground"},
                      json={"preconditions": {"uid": created["metadata"]["uid"]}})
    assert ok.status_code == 200
    assert http.get(f"{PODS}/x").status_code == 404


# ---- watch ---------------------------------------------------------------------------------------

def collect(api: RunningApi, events: list[WatchEvent], **kwargs: Any) -> threading.Thread:
    client = api.client()
    rt = client.registry.lookup("pods")

    def run() -> None:
        try:
            for event in client.watch(rt, "default", **kwargs):
                events.append(event)
        except Exception as exc:  # surfaced through the list for the test to see
            events.append(WatchEvent("ERROR", {"exception": repr(exc)}))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watch_streams_added_modified_deleted(api: RunningApi) -> None:
    http = api.http()
    http.post(PODS, json=pod("before"))
    events: list[WatchEvent] = []
    thread = collect(api, events, timeout_seconds=30)
    wait_for(lambda: events)  # the existing pod arrives first as ADDED
    assert (events[0].type, events[0].object["metadata"]["name"]) == ("ADDED", "before")
    http.post(PODS, json=pod("new", {"v": "1"}))
    http.patch(f"{PODS}/new", json={"metadata": {"labels": {"v": "2"}}},
               headers={"Content-Type": "application/merge-patch+json"})
    http.delete(f"{PODS}/new")
    wait_for(lambda: len(events) >= 4)
    assert [(e.type, e.object["metadata"]["name"]) for e in events[:4]] == [
        ("ADDED", "before"), ("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "new")]
    assert events[2].object["metadata"]["labels"] == {"v": "2"}
    thread.join(timeout=0.1)


def test_watch_from_a_version_with_selector_and_timeout(api: RunningApi) -> None:
    http = api.http()
    version = http.get(PODS).json()["metadata"]["resourceVersion"]
    http.post(PODS, json=pod("a", {"app": "web"}))
    http.post(PODS, json=pod("b", {"app": "db"}))
    started = time.monotonic()
    with http.stream("GET", PODS, params={"watch": "1", "resourceVersion": version, "labelSelector": "app=web",
                                          "timeoutSeconds": "1"}) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert time.monotonic() - started < 20  # the server ended the stream after timeoutSeconds
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("ADDED", "a")]


def test_expired_resource_version_is_an_error_event_with_410(api: RunningApi) -> None:
    http = api.http()
    for index in range(30):  # more changes than the store's history of 20 keeps
        http.post(PODS, json=pod(f"p{index}"))
    with http.stream("GET", PODS, params={"watch": "true", "resourceVersion": "2"}) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) == 1
    assert lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["kind"] == "Status"
    assert lines[0]["object"]["code"] == 410
    assert lines[0]["object"]["reason"] == "Expired"
    client = api.client()
    with pytest.raises(GoneError):
        list(client.watch(client.registry.lookup("pods"), "default", resource_version="2"))


# ---- logs ----------------------------------------------------------------------------------------

def write_log(api: RunningApi, created: dict[str, Any], container: str, text: str) -> Path:
    meta = created["metadata"]
    path = container_log_path(api.pods_root, meta["namespace"], meta["name"], meta["uid"], container)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(text)
    return path


def test_logs_whole_tail_and_container_choice(api: RunningApi) -> None:
    http = api.http()
    created = http.post(PODS, json=pod("x", containers=("app", "sidecar"))).json()
    write_log(api, created, "app", "one\ntwo\nthree\n")
    write_log(api, created, "sidecar", "side\n")
    assert http.get(f"{PODS}/x/log", params={"container": "app"}).text == "one\ntwo\nthree\n"
    assert http.get(f"{PODS}/x/log", params={"container": "app", "tailLines": "2"}).text == "two\nthree\n"
    assert http.get(f"{PODS}/x/log", params={"container": "sidecar"}).text == "side\n"
    ambiguous = http.get(f"{PODS}/x/log")
    assert ambiguous.status_code == 400
    assert ambiguous.json()["message"] == "a container name must be specified for pod x, choose one of: [app sidecar]"
    assert http.get(f"{PODS}/x/log", params={"container": "nope"}).status_code == 400
    assert http.get(f"{PODS}/missing/log").status_code == 404


def test_logs_follow_streams_until_the_pod_ends(api: RunningApi) -> None:
    http = api.http()
    created = http.post(PODS, json=pod("x")).json()
    path = write_log(api, created, "main", "first\n")
    received: list[bytes] = []
    finished = threading.Event()
    client = api.client()

    def follow() -> None:
        for chunk in client.logs("x", "default", follow=True):
            received.append(chunk)
        finished.set()

    threading.Thread(target=follow, daemon=True).start()
    wait_for(lambda: b"".join(received) == b"first\n")
    with path.open("a") as handle:
        handle.write("second\n")
    wait_for(lambda: b"".join(received) == b"first\nsecond\n")
    assert not finished.is_set()
    with path.open("a") as handle:
        handle.write("last words\n")
    http.patch(f"{PODS}/x/status", json={"status": {"phase": "Succeeded"}},
               headers={"Content-Type": "application/merge-patch+json"})
    assert finished.wait(timeout=30), "the stream did not end with the pod"
    assert b"".join(received) == b"first\nsecond\nlast words\n"


# ---- the client raises the server's errors -------------------------------------------------------

def test_client_rebuilds_errors_from_status(api: RunningApi) -> None:
    client = api.client()
    rt = client.registry.lookup("po")
    with pytest.raises(NotFoundError, match='pods "ghost" not found'):
        client.get(rt, "ghost", "default")
    created = client.create(pod("x"))
    client.update({**created, "metadata": {**created["metadata"], "labels": {"v": "1"}}})
    with pytest.raises(ConflictError):  # created's resourceVersion is stale now
        client.update({**created, "metadata": {**created["metadata"], "labels": {"v": "2"}}})
    assert client.delete(rt, "x", "default") is None


# ---- secrets never reach the log -----------------------------------------------------------------

def test_secret_values_never_appear_in_the_server_log(api: RunningApi) -> None:
    http = api.http()
    plain = "hunter2-very-secret-value"
    encoded = base64.b64encode(plain.encode()).decode()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
              "data": {"password": encoded}, "stringData": {"token": plain}}
    assert http.post("/api/v1/namespaces/default/secrets", json=secret).status_code == 201
    assert http.get("/api/v1/namespaces/default/secrets/creds").status_code == 200
    # Failing requests carrying the value must not leak it either.
    invalid = {**secret, "metadata": {"name": "bad"}, "immutable": plain}
    assert http.post("/api/v1/namespaces/default/secrets", json=invalid).status_code == 422
    assert http.post("/api/v1/namespaces/default/secrets", content=f'{{"x": "{plain}"'.encode()).status_code == 400
    http.patch("/api/v1/namespaces/default/secrets/creds", json={"stringData": {"more": plain}},
               headers={"Content-Type": "application/merge-patch+json"})
    with httpx.Client(base_url=api.url, timeout=10) as anonymous:
        anonymous.get("/api/v1/namespaces/default/secrets/creds", headers={"Authorization": f"Bearer {plain}"})
    text = api.log.getvalue()
    assert "POST /api/v1/namespaces/default/secrets 201" in text  # the access log was captured
    assert plain not in text
    assert encoded not in text
