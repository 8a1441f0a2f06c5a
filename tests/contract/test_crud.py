"""Create, read, update, delete; naming; validation errors with field paths."""

from __future__ import annotations

import base64
import re
import uuid

import pytest

from capstan.api.errors import AlreadyExistsError, ApiError, ConflictError, InvalidError, NotFoundError
from capstan.store.base import Store
from tests.contract.helpers import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NAMESPACES,
    PODS,
    SECRETS,
    configmap,
    deployment,
    pod,
    rv,
)


async def test_create_sets_server_fields_and_get_returns_the_stored_object(store: Store, ns: str) -> None:
    created = await store.create(configmap("settings", ns, {"color": "blue"}, labels={"team": "a"}))
    meta = created["metadata"]
    assert meta["namespace"] == ns
    uuid.UUID(meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert int(meta["resourceVersion"]) > 0
    assert await store.get(CONFIGMAPS, "settings", ns) == created


async def test_resource_versions_only_grow_across_objects(store: Store, ns: str) -> None:
    first = await store.create(configmap("one", ns))
    second = await store.create(configmap("two", ns))
    updated = await store.update({**first, "data": {"k": "v"}})
    assert rv(first) < rv(second) < rv(updated)


async def test_create_with_a_taken_name_is_already_exists(store: Store, ns: str) -> None:
    await store.create(configmap("taken", ns))
    with pytest.raises(AlreadyExistsError) as caught:
        await store.create(configmap("taken", ns))
    assert str(caught.value) == 'configmaps "taken" already exists'
    assert caught.value.code == 409


async def test_generate_name_gets_a_random_suffix(store: Store, ns: str) -> None:
    names = set()
    for _ in range(5):
        obj = configmap("", ns)
        del obj["metadata"]["name"]
        obj["metadata"]["generateName"] = "worker-"
        created = await store.create(obj)
        assert re.fullmatch(r"worker-[a-z0-9]{5}", created["metadata"]["name"])
        names.add(created["metadata"]["name"])
    assert len(names) == 5


async def test_get_update_delete_of_a_missing_object_is_not_found(store: Store, ns: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        await store.get(CONFIGMAPS, "missing", ns)
    assert str(caught.value) == 'configmaps "missing" not found'
    with pytest.raises(NotFoundError):
        await store.update(configmap("missing", ns))
    with pytest.raises(NotFoundError):
        await store.delete(CONFIGMAPS, "missing", ns)


async def test_create_in_a_missing_namespace_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError) as caught:
        await store.create(configmap("x", "no-such-namespace"))
    assert str(caught.value) == 'namespaces "no-such-namespace" not found'


async def test_missing_name_is_invalid_on_metadata_name(store: Store, ns: str) -> None:
    obj = configmap("", ns)
    del obj["metadata"]["name"]
    with pytest.raises(InvalidError) as caught:
        await store.create(obj)
    assert caught.value.code == 422
    assert [c.field for c in caught.value.causes] == ["metadata.name"]


async def test_name_must_be_a_dns_subdomain(store: Store, ns: str) -> None:
    with pytest.raises(InvalidError) as caught:
        await store.create(configmap("Not_Valid", ns))
    assert [c.field for c in caught.value.causes] == ["metadata.name"]


async def test_wrong_type_is_invalid_with_the_field_path(store: Store, ns: str) -> None:
    obj = deployment("web", ns)
    obj["spec"]["replicas"] = "three"
    with pytest.raises(ApiError) as caught:
        await store.create(obj)
    # A schema check reports 422 Invalid with the field as a cause; Kubernetes cannot even decode a wrong
    # JSON type into a built-in kind and answers 400 BadRequest, naming the field in the message.
    if isinstance(caught.value, InvalidError):
        assert "spec.replicas" in [c.field for c in caught.value.causes]
        assert caught.value.to_status()["details"]["name"] == "web"
    else:
        assert caught.value.code == 400
        assert "spec.replicas" in str(caught.value)
    with pytest.raises(NotFoundError):
        await store.get(DEPLOYMENTS, "web", ns)


async def test_pod_without_containers_is_invalid(store: Store, ns: str) -> None:
    obj = pod("empty", ns)
    obj["spec"]["containers"] = []
    with pytest.raises(InvalidError) as caught:
        await store.create(obj)
    assert "spec.containers" in [c.field for c in caught.value.causes]
    with pytest.raises(NotFoundError):
        await store.get(PODS, "empty", ns)


async def test_update_replaces_content_and_keeps_server_fields(store: Store, ns: str) -> None:
    created = await store.create(configmap("cfg", ns, {"a": "1"}))
    change = {**created, "data": {"b": "2"}}
    change["metadata"] = {**created["metadata"], "uid": created["metadata"]["uid"],
                          "creationTimestamp": "2000-01-01T00:00:00Z", "labels": {"x": "y"}}
    updated = await store.update(change)
    assert updated["data"] == {"b": "2"}
    assert updated["metadata"]["labels"] == {"x": "y"}
    assert updated["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert await store.get(CONFIGMAPS, "cfg", ns) == updated


async def test_an_update_that_changes_nothing_keeps_the_resource_version(store: Store, ns: str) -> None:
    created = await store.create(configmap("same", ns, {"a": "1"}))
    again = await store.update(created)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_update_without_resource_version_is_unconditional(store: Store, ns: str) -> None:
    await store.create(configmap("free", ns, {"n": "0"}))
    blind = configmap("free", ns, {"n": "9"})
    assert (await store.update(blind))["data"] == {"n": "9"}


async def test_update_with_a_stale_resource_version_conflicts(store: Store, ns: str) -> None:
    created = await store.create(configmap("race", ns, {"n": "0"}))
    await store.update({**created, "data": {"n": "1"}})
    with pytest.raises(ConflictError) as caught:
        await store.update({**created, "data": {"n": "2"}})
    assert str(caught.value) == (
        'Operation cannot be fulfilled on configmaps "race": the object has been modified; '
        "please apply your changes to the latest version and try again")
    assert (await store.get(CONFIGMAPS, "race", ns))["data"] == {"n": "1"}


async def test_delete_removes_the_object(store: Store, ns: str) -> None:
    await store.create(configmap("doomed", ns))
    assert await store.delete(CONFIGMAPS, "doomed", ns) is None
    with pytest.raises(NotFoundError):
        await store.get(CONFIGMAPS, "doomed", ns)


async def test_delete_with_a_different_uid_precondition_conflicts(store: Store, ns: str) -> None:
    await store.create(configmap("guarded", ns))
    with pytest.raises(ConflictError):
        await store.delete(CONFIGMAPS, "guarded", ns, uid=str(uuid.uuid4()))
    assert await store.get(CONFIGMAPS, "guarded", ns)


async def test_recreated_object_gets_a_new_uid(store: Store, ns: str) -> None:
    first = await store.create(configmap("phoenix", ns))
    await store.delete(CONFIGMAPS, "phoenix", ns)
    second = await store.create(configmap("phoenix", ns))
    assert first["metadata"]["uid"] != second["metadata"]["uid"]
    assert rv(second) > rv(first)


async def test_secret_string_data_is_merged_into_base64_data(store: Store, ns: str) -> None:
    created = await store.create({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
        "data": {"user": base64.b64encode(b"admin").decode()}, "stringData": {"password": "s3cret"}})
    stored = await store.get(SECRETS, "creds", ns)
    assert "stringData" not in stored
    assert {k: base64.b64decode(v).decode() for k, v in stored["data"].items()} == {
        "user": "admin", "password": "s3cret"}
    assert created["data"] == stored["data"]


async def test_dry_run_create_validates_but_stores_nothing(store: Store, ns: str) -> None:
    preview = await store.create(configmap("maybe", ns, {"a": "1"}), dry_run=True)
    assert preview["data"] == {"a": "1"}
    with pytest.raises(NotFoundError):
        await store.get(CONFIGMAPS, "maybe", ns)


async def test_namespace_is_cluster_scoped(store: Store, ns: str) -> None:
    found = await store.get(NAMESPACES, ns)
    assert "namespace" not in found["metadata"]
    names = [item["metadata"]["name"] for item in (await store.list(NAMESPACES)).items]
    assert ns in names
