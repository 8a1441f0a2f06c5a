"""CLI pieces without a server: ages, table columns, config resolution, manifest reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from capstan.api.registry import default_registry
from capstan.cli import printers
from capstan.cli.config import ConfigError, resolve_config
from capstan.cli.manifests import ManifestError, check_shape, merged_for_update, read_documents

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
REGISTRY = default_registry()


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59, "59s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (7200, "120m"), (3 * 3600 + 60, "3h1m"),
    (10 * 3600, "10h"), (3 * 86400 + 4 * 3600, "3d4h"), (30 * 86400, "30d"), (800 * 86400, "2y70d"),
    (-5, "<invalid>"),
])
def test_human_duration_like_kubectl(seconds: int, text: str) -> None:
    assert printers.human_duration(seconds) == text


def stamp(ago: timedelta) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_pod_table_with_wide_columns_and_namespaces() -> None:
    pods = [
        {"metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": stamp(timedelta(minutes=5))},
         "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "laptop"},
         "status": {"phase": "Running", "podIP": "127.0.0.1", "containerStatuses": [
             {"name": "a", "ready": True, "restartCount": 2, "state": {"running": {}}},
             {"name": "b", "ready": False, "restartCount": 1,
              "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
        {"metadata": {"name": "web-2", "namespace": "team", "creationTimestamp": stamp(timedelta(hours=2)),
                      "deletionTimestamp": stamp(timedelta(0))},
         "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}},
    ]
    headers, rows = printers.table_rows(REGISTRY.lookup("pods"), pods, wide=True, all_namespaces=True, now=NOW)
    assert headers == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert rows == [["default", "web-1", "1/2", "CrashLoopBackOff", "3", "5m", "127.0.0.1", "laptop"],
                    ["team", "web-2", "0/1", "Terminating", "0", "120m", "<none>", "<none>"]]
    assert printers.render_table(headers, rows).splitlines() == [
        "NAMESPACE   NAME    READY   STATUS             RESTARTS   AGE    IP          NODE",
        "default     web-1   1/2     CrashLoopBackOff   3          5m     127.0.0.1   laptop",
        "team        web-2   0/1     Terminating        0          120m   <none>      <none>",
    ]


def test_job_deployment_node_and_event_columns() -> None:
    job = {"metadata": {"name": "j", "creationTimestamp": stamp(timedelta(minutes=3))},
           "spec": {"completions": 5, "parallelism": 2},
           "status": {"succeeded": 5, "startTime": stamp(timedelta(minutes=3)), "completionTime": stamp(
               timedelta(minutes=1)), "conditions": [{"type": "Complete", "status": "True"}]}}
    assert printers.table_rows(REGISTRY.lookup("jobs"), [job], wide=False, all_namespaces=False, now=NOW) == (
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"], [["j", "Complete", "5/5", "2m", "3m"]])
    deploy = {"metadata": {"name": "d", "creationTimestamp": stamp(timedelta(seconds=30))},
              "spec": {"replicas": 3}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert printers.table_rows(REGISTRY.lookup("deploy"), [deploy], wide=False, all_namespaces=True, now=NOW)[1] == [
        ["", "d", "2/3", "3", "2", "30s"]]
    node = {"metadata": {"name": "n", "creationTimestamp": stamp(timedelta(days=1)),
                         "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"cpu": "4", "memory": "8Gi"}}}
    assert printers.table_rows(REGISTRY.lookup("nodes"), [node], wide=True, all_namespaces=True, now=NOW) == (
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "CPU", "MEMORY"],
        [["n", "Ready", "control-plane", "24h", "<none>", "4", "8Gi"]])
    event = {"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "web-1"}, "type": "Warning",
             "reason": "BackOff", "message": "Back-off restarting", "lastTimestamp": stamp(timedelta(seconds=7))}
    assert printers.table_rows(REGISTRY.lookup("events"), [event], wide=False, all_namespaces=False, now=NOW) == (
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        [["7s", "Warning", "BackOff", "pod/web-1", "Back-off restarting"]])


def test_kinds_without_columns_get_name_and_age_and_new_kinds_register_in_one_place() -> None:
    rt = REGISTRY.lookup("jobs")
    obj = {"metadata": {"name": "x", "creationTimestamp": stamp(timedelta(seconds=5))}}
    try:
        printers.register_columns("Job", [printers.Column("EXTRA", lambda o, now: "yes")])
        assert printers.table_rows(rt, [obj], wide=False, all_namespaces=False, now=NOW) == (
            ["NAME", "EXTRA"], [["x", "yes"]])
    finally:
        printers._COLUMNS.pop("Job")
    assert printers.table_rows(rt, [obj], wide=False, all_namespaces=False, now=NOW) == (["NAME", "AGE"], [["x", "5s"]])


def test_resource_refs_like_kubectl() -> None:
    assert printers.resource_ref(REGISTRY.lookup("deploy"), "web") == "deployment.apps/web"
    assert printers.resource_ref(REGISTRY.lookup("po"), "x") == "pod/x"


# ---- config resolution ----------------------------------------------------------------------------

def write_config(path: Path, server: str, token: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"server": server, "token": token}))
    return path


def test_config_resolution_order(tmp_path: Path) -> None:
    data_dir_config = write_config(tmp_path / "dd" / "config.yaml", "http://dd:1", "dd-token")
    env_config = write_config(tmp_path / "env.yaml", "http://envfile:2", "envfile-token")
    env = {"CAPSTAN_CONFIG": str(env_config)}
    assert resolve_config(server="http://flag:3", token="flag-token", env=env).server == "http://flag:3"
    both = {**env, "CAPSTAN_SERVER": "http://env:4", "CAPSTAN_TOKEN": "env-token"}
    assert (resolve_config(env=both).server, resolve_config(env=both).token) == ("http://env:4", "env-token")
    assert resolve_config(data_dir=data_dir_config.parent, env=env).token == "dd-token"
    assert resolve_config(env=env).token == "envfile-token"
    # A flag for one setting, the file for the other.
    mixed = resolve_config(server="http://flag:3", env=env)
    assert (mixed.server, mixed.token) == ("http://flag:3", "envfile-token")


def test_default_data_dir_is_the_last_resort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("capstan.cli.config.default_data_dir", lambda: tmp_path)
    write_config(tmp_path / "config.yaml", "http://default:5", "t")
    assert resolve_config(env={}).server == "http://default:5"


def test_missing_config_gives_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_config(env={"CAPSTAN_CONFIG": str(tmp_path / "nope.yaml")})
    message = str(caught.value)
    assert str(tmp_path / "nope.yaml") in message and "capstan server" in message


# ---- manifests ------------------------------------------------------------------------------------

def test_directories_are_read_in_name_order_and_empty_documents_skipped(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\n---\n")
    (tmp_path / "a.json").write_text('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}')
    (tmp_path / "notes.txt").write_text("not a manifest")
    docs = read_documents([str(tmp_path)])
    assert [(Path(d.source).name, d.index, d.name) for d in docs] == [("a.json", 1, "a"), ("b.yaml", 1, "b")]


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [a\n")
    with pytest.raises(ManifestError) as caught:
        read_documents([str(bad)])
    (message,) = caught.value.messages
    assert message.startswith(f"{bad}: invalid YAML at line 6")


def test_shape_checks(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("- a list\n---\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: v1\nkind: ConfigMap\n"
                    "---\napiVersion: nope/v1\nkind: Gadget\nmetadata: {name: g}\n---\n"
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: many}\n")
    docs = read_documents([str(path)])
    for doc in docs:
        check_shape(doc, REGISTRY, None)
    problems = [p for doc in docs for p in doc.problems]
    assert problems[:4] == [
        f"{path}: document 1: expected a mapping with apiVersion, kind and metadata, got list",
        f'{path}: document 2 (ConfigMap "x"): apiVersion is required',
        f"{path}: document 3 (ConfigMap): metadata.name is required",
        f'{path}: document 4 (Gadget "g"): no matches for kind "Gadget" in version "nope/v1"',
    ]
    assert problems[4] == (f'{path}: document 5 (Deployment "web"): spec.replicas: Invalid value: "string": '
                           'spec.replicas in body must be of type integer: "string"')


def test_update_keeps_server_fields_and_merges_labels() -> None:
    existing = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "x", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                             "labels": {"keep": "1", "change": "old"}, "annotations": {"a": "1"}},
                "data": {"old": "1"}}
    manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "x", "namespace": "default", "labels": {"change": "new"}}, "data": {"new": "2"}}
    merged = merged_for_update(manifest, existing)
    assert merged["metadata"] == {"name": "x", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                                  "labels": {"keep": "1", "change": "new"}, "annotations": {"a": "1"}}
    assert merged["data"] == {"new": "2"}
