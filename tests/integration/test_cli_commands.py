"""The ``capstan`` command as users run it: a subprocess against a real ``capstan server``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from capstan.runtime.logs import container_log_path

LISTENING = re.compile(r"Capstan API listening on (http://127\.0\.0\.1:[0-9]+) \(data: (.+)\)")


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    log_path: Path

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSTAN_")}
        env["CAPSTAN_CONFIG"] = str(self.data_dir / "config.yaml")
        env.update(extra)
        return env

    def cli(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = run_cli(*args, stdin=stdin, env=env or self.env())
        if ok:
            assert result.returncode == 0, f"capstan {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def get_json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.cli("get", *args, "-o", "json").stdout))


def run_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "capstan.cli.main", *args], capture_output=True, text=True,
                          input=stdin, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("capstan") / "data"
    log_path = data_dir.parent / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "capstan.cli.main", "server", "--data-dir", str(data_dir),
                                    "--port", "0"], stdout=log, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
    deadline = time.monotonic() + 60
    found = None
    while time.monotonic() < deadline and found is None:
        assert process.poll() is None, f"capstan server exited:\n{log_path.read_text()}"
        found = LISTENING.search(log_path.read_text())
        time.sleep(0.05)
    assert found is not None, f"capstan server did not start:\n{log_path.read_text()}"
    running = Server(found.group(1), Path(found.group(2)), process, log_path)
    try:
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def manifest(tmp_path: Path, name: str, *docs: dict[str, Any] | str) -> Path:
    path = tmp_path / name
    path.write_text("\n---\n".join(d if isinstance(d, str) else yaml.safe_dump(d) for d in docs))
    return path


def deployment(name: str, replicas: Any = 0, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                         {"name": "main", "command": ["python3", "-c", "import time; time.sleep(20)"]}]}}}}


def configmap(name: str, data: dict[str, str], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "command": ["python3", "-c", "print('hi')"]}]}}


def not_found(server: Server, *args: str) -> bool:
    result = server.cli("get", *args, ok=False)
    return result.returncode == 1 and "(NotFound)" in result.stderr


# ---- the server ----------------------------------------------------------------------------------

def test_server_writes_a_private_token_and_client_config(server: Server) -> None:
    assert (server.data_dir / "token").stat().st_mode & 0o777 == 0o600
    config = yaml.safe_load((server.data_dir / "config.yaml").read_text())
    assert config == {"server": server.url, "token": server.token}
    assert (server.data_dir / "config.yaml").stat().st_mode & 0o777 == 0o600
    assert httpx.get(server.url + "/healthz").text == "ok"
    assert httpx.get(server.url + "/api/v1/pods").status_code == 401


def test_version(server: Server) -> None:
    assert server.cli("version").stdout == "Client Version: v0.1.0\nServer Version: v0.1.0\n"


# ---- apply ---------------------------------------------------------------------------------------

def test_apply_creates_configures_and_leaves_unchanged(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, "app.yaml", deployment("applied", labels={"team": "a"}), configmap("applied", {"k": "1"}))
    # Written in kind order, ConfigMaps before workloads (test_cli_apply_order.py).
    assert server.cli("apply", "-f", str(path)).stdout == (
        "configmap/applied created\ndeployment.apps/applied created\n")
    assert server.cli("apply", "-f", str(path)).stdout == (
        "configmap/applied unchanged\ndeployment.apps/applied unchanged\n")
    server.cli("scale", "deployment/applied", "--replicas", "0")  # a no-op scale keeps it unchanged
    changed = manifest(tmp_path, "app2.yaml", deployment("applied", labels={"tier": "b"}),
                       configmap("applied", {"k": "2"}))
    assert server.cli("apply", "-f", str(changed)).stdout == (
        "configmap/applied configured\ndeployment.apps/applied configured\n")
    assert server.get_json("configmap", "applied")["data"] == {"k": "2"}
    # Labels from the manifest merge with the ones already there.
    assert server.get_json("deploy", "applied")["metadata"]["labels"] == {"team": "a", "tier": "b"}


def test_apply_reads_directories_in_name_order_and_stdin(server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest(folder, "2-second.yaml", configmap("dir-second", {}))
    manifest(folder, "1-first.json", json.dumps(configmap("dir-first", {})))
    (folder / "README.md").write_text("ignored")
    out = server.cli("apply", "-f", str(folder)).stdout
    assert out == "configmap/dir-first created\nconfigmap/dir-second created\n"
    out = server.cli("apply", "-f", "-", "-n", "default", stdin=yaml.safe_dump(configmap("from-stdin", {}))).stdout
    assert out == "configmap/from-stdin created\n"


def test_apply_with_a_namespace(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, "ns.yaml", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x"}},
                    configmap("in-team", {"a": "b"}, namespace="team-x"))
    assert server.cli("apply", "-f", str(path)).stdout == "namespace/team-x created\nconfigmap/in-team created\n"
    other = manifest(tmp_path, "other.yaml", configmap("elsewhere", {}))
    server.cli("apply", "-f", str(other), "-n", "team-x")
    assert server.get_json("cm", "elsewhere", "-n", "team-x")["metadata"]["namespace"] == "team-x"
    clash = server.cli("apply", "-f", str(path), "-n", "default", ok=False)
    assert clash.returncode == 1
    assert 'the namespace from the provided object "team-x" does not match the namespace "default"' in clash.stderr


def expect_rejected(server: Server, path: Path, *messages: str) -> None:
    result = server.cli("apply", "-f", str(path), ok=False)
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {m}" for m in messages]
    assert "Traceback" not in result.stderr


def test_bad_yaml_names_file_and_line(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, "broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [oops\n")
    result = server.cli("apply", "-f", str(path), ok=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path}: invalid YAML at line 5")


def test_wrong_type_is_reported_with_document_kind_name_and_field(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, "bad.yaml", configmap("fine", {}), deployment("web", replicas="three"))
    expect_rejected(server, path, f'{path}: document 2 (Deployment "web"): spec.replicas: Invalid value: "string": '
                                  'spec.replicas in body must be of type integer: "string"')
    assert not_found(server, "configmap", "fine")


def test_unknown_kind_missing_name_and_non_mapping(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, "many.yaml",
                    {"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g"}},
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": {"a": "b"}}},
                    "- just\n- a list\n",
                    configmap("valid-one", {}))
    expect_rejected(server, path,
                    f'{path}: document 1 (Gizmo "g"): no matches for kind "Gizmo" in version "example.com/v1"',
                    f"{path}: document 2 (ConfigMap): metadata.name is required",
                    f"{path}: document 3: expected a mapping with apiVersion, kind and metadata, got list")
    assert not_found(server, "configmap", "valid-one")


def test_one_invalid_document_among_many_writes_nothing(server: Server, tmp_path: Path) -> None:
    first = manifest(tmp_path, "a.yaml", configmap("batch-a", {}), deployment("batch-web"))
    second = manifest(tmp_path, "b.yaml", configmap("batch-b", {}),
                      {**pod("batch-pod"), "spec": {"containers": []}})
    result = server.cli("apply", "-f", str(first), "-f", str(second), ok=False)
    assert result.returncode == 1
    assert f'error: {second}: document 2 (Pod "batch-pod"): spec.containers:' in result.stderr
    for kind, name in (("cm", "batch-a"), ("deploy", "batch-web"), ("cm", "batch-b"), ("pod", "batch-pod")):
        assert not_found(server, kind, name), (kind, name)


def test_server_side_dry_run_failures_also_write_nothing(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, "dry.yaml", configmap("dry-a", {}), configmap("dry-b", {}, namespace="no-such-ns"))
    expect_rejected(server, path, f'{path}: document 2 (ConfigMap "dry-b"): namespaces "no-such-ns" not found')
    assert not_found(server, "cm", "dry-a")


# ---- get -----------------------------------------------------------------------------------------

def test_get_tables_and_formats(server: Server, tmp_path: Path) -> None:
    server.cli("apply", "-f", str(manifest(tmp_path, "g.yaml", deployment("table-web", replicas=0),
                                           configmap("table-cm", {"a": "1", "b": "2"}))))
    lines = server.cli("get", "deployments").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    row = next(line for line in lines if line.startswith("table-web "))
    assert row.split()[:4] == ["table-web", "0/0", "0", "0"]
    one = server.cli("get", "deploy/table-web").stdout.splitlines()
    assert len(one) == 2 and one[1].startswith("table-web ")
    assert server.cli("get", "cm", "table-cm", "-o", "name").stdout == "configmap/table-cm\n"
    as_yaml = yaml.safe_load(server.cli("get", "configmap", "table-cm", "-o", "yaml").stdout)
    assert as_yaml["data"] == {"a": "1", "b": "2"} and as_yaml["kind"] == "ConfigMap"
    as_json = json.loads(server.cli("get", "cm", "-o", "json").stdout)
    assert as_json["kind"] == "List"
    assert "table-cm" in {item["metadata"]["name"] for item in as_json["items"]}
    wide = server.cli("get", "configmaps", "-A").stdout.splitlines()
    assert wide[0].split() == ["NAMESPACE", "NAME", "DATA", "AGE"]


def test_get_pods_with_selector_and_empty_namespace(server: Server, tmp_path: Path) -> None:
    server.cli("apply", "-f", str(manifest(tmp_path, "p.yaml", pod("sel-a", {"tier": "x"}), pod("sel-b"))))
    lines = server.cli("get", "pods", "-l", "tier=x").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [line.split()[0] for line in lines[1:]] == ["sel-a"]
    wide = server.cli("get", "po", "sel-a", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    by_field = server.cli("get", "pods", "--field-selector", "metadata.name=sel-b", "-o", "name").stdout
    assert by_field == "pod/sel-b\n"
    server.cli("apply", "-f", "-", stdin=yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": "empty-ns"}}))
    empty = server.cli("get", "pods", "-n", "empty-ns")
    assert empty.stdout == "" and empty.stderr == "No resources found in empty-ns namespace.\n"


def test_get_missing_and_unknown(server: Server) -> None:
    missing = server.cli("get", "pods", "ghost", ok=False)
    assert missing.returncode == 1
    assert missing.stderr == 'Error from server (NotFound): pods "ghost" not found\n'
    unknown = server.cli("get", "gadgets", ok=False)
    assert unknown.returncode == 1
    assert unknown.stderr == 'error: the server doesn\'t have a resource type "gadgets"\n'


def test_api_resources(server: Server) -> None:
    lines = server.cli("api-resources").stdout.splitlines()
    assert lines[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["deployments"] == ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    assert rows["nodes"] == ["nodes", "no", "v1", "false", "Node"]
    assert rows["jobs"] == ["jobs", "batch/v1", "true", "Job"]  # no short name


# ---- describe, events, scale, delete, logs -------------------------------------------------------

def test_describe_shows_sections_and_events_newest_last(server: Server, tmp_path: Path) -> None:
    server.cli("apply", "-f", str(manifest(tmp_path, "d.yaml", deployment("described", replicas=0))))
    uid = server.get_json("deploy", "described")["metadata"]["uid"]
    events = [{"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"described.{n}"},
               "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "described", "uid": uid,
                                  "namespace": "default"},
               "reason": reason, "message": message, "type": kind, "lastTimestamp": stamp,
               "source": {"component": "tester"}}
              for n, reason, message, kind, stamp in (
                  (2, "Later", "the second thing", "Warning", "2024-01-01T00:00:10Z"),
                  (1, "Earlier", "the first thing", "Normal", "2024-01-01T00:00:00Z"))]
    server.cli("apply", "-f", str(manifest(tmp_path, "e.yaml", *events)))
    text = server.cli("describe", "deployment", "described").stdout
    assert "Name:               described" in text
    assert "Namespace:          default" in text
    assert "Replicas:           0 desired" in text
    assert "Pod Template:" in text
    assert text.index("Earlier") < text.index("Later")
    event_lines = text[text.index("Events:"):].splitlines()
    assert event_lines[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert event_lines[2].split()[:2] == ["Normal", "Earlier"] and event_lines[2].endswith("the first thing")
    # The events command lists them too, oldest first, filtered by --for.
    listed = server.cli("events", "--for", "deployment/described").stdout.splitlines()
    assert listed[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [line.split()[2] for line in listed[1:]] == ["Earlier", "Later"]
    assert "deployment/described" in listed[1]


def test_scale(server: Server, tmp_path: Path) -> None:
    server.cli("apply", "-f", str(manifest(tmp_path, "s.yaml", deployment("scaled", replicas=0))))
    assert server.cli("scale", "deployment/scaled", "--replicas", "2").stdout == "deployment.apps/scaled scaled\n"
    assert server.get_json("deploy", "scaled")["spec"]["replicas"] == 2
    server.cli("scale", "deploy", "scaled", "--replicas", "0")
    assert server.get_json("deploy", "scaled")["spec"]["replicas"] == 0
    refused = server.cli("scale", "configmap/x", "--replicas", "1", ok=False)
    assert refused.returncode == 1 and "cannot be scaled" in refused.stderr


def test_delete_by_name_by_file_and_missing(server: Server, tmp_path: Path) -> None:
    path = manifest(tmp_path, "del.yaml", configmap("del-a", {}), configmap("del-b", {}))
    server.cli("apply", "-f", str(path))
    server.cli("apply", "-f", str(manifest(tmp_path, "del2.yaml", deployment("del-web"))))
    out = server.cli("delete", "deployment", "del-web", "--cascade", "foreground", "--wait").stdout
    assert out == 'deployment.apps "del-web" deleted\n'
    assert not_found(server, "deploy", "del-web")
    assert server.cli("delete", "-f", str(path)).stdout == 'configmap "del-a" deleted\nconfigmap "del-b" deleted\n'
    again = server.cli("delete", "cm", "del-a", ok=False)
    assert again.returncode == 1
    assert again.stderr == 'Error from server (NotFound): configmaps "del-a" not found\n'


def test_logs_prints_the_container_log(server: Server, tmp_path: Path) -> None:
    server.cli("apply", "-f", str(manifest(tmp_path, "l.yaml", pod("logged"))))
    created = server.get_json("pod", "logged")
    meta = created["metadata"]
    path = container_log_path(server.data_dir / "pods", "default", "logged", meta["uid"], "main")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The node agent may be writing this file too: append our lines and look for them.
    with path.open("a") as handle:
        handle.write("fake line 1\nfake line 2\n")
    out = server.cli("logs", "logged").stdout
    assert "fake line 1\nfake line 2\n" in out
    assert server.cli("logs", "pod/logged", "--tail", "1").stdout == "fake line 2\n"


# ---- configuration and connection errors ---------------------------------------------------------

def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSTAN_")}
    env["HOME"] = "/nonexistent-capstan-home"  # no default data dir to fall back on
    env["XDG_DATA_HOME"] = "/nonexistent-capstan-home/data"
    env.update(extra)
    return env


def test_config_from_data_dir_flag(server: Server) -> None:
    result = run_cli("get", "ns", "default", "-o", "name", "--data-dir", str(server.data_dir), env=clean_env())
    assert result.stdout == "namespace/default\n", result.stderr


def test_config_from_capstan_config(server: Server) -> None:
    env = clean_env(CAPSTAN_CONFIG=str(server.data_dir / "config.yaml"))
    assert run_cli("get", "ns", "default", "-o", "name", env=env).stdout == "namespace/default\n"


def test_config_from_env_vars_and_flags_win(server: Server, tmp_path: Path) -> None:
    env = clean_env(CAPSTAN_SERVER=server.url, CAPSTAN_TOKEN=server.token)
    assert run_cli("get", "ns", "default", "-o", "name", env=env).stdout == "namespace/default\n"
    # Flags beat everything: a wrong token from the flag is used (and refused).
    refused = run_cli("get", "ns", "--token", "wrong", env=env)
    assert refused.returncode == 1
    assert refused.stderr == "Error from server (Unauthorized): Unauthorized\n"
    ok = run_cli("get", "ns", "default", "-o", "name", "--server", server.url, "--token", server.token,
                 env=clean_env(CAPSTAN_CONFIG=str(tmp_path / "missing.yaml")))
    assert ok.stdout == "namespace/default\n"


def test_clear_error_without_any_config(tmp_path: Path) -> None:
    result = run_cli("get", "pods", env=clean_env(CAPSTAN_CONFIG=str(tmp_path / "missing.yaml")))
    assert result.returncode == 1
    assert result.stderr.startswith("error: no Capstan server and token configured:")
    assert "capstan server" in result.stderr and "Traceback" not in result.stderr


def test_clear_error_when_the_server_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"server": f"http://127.0.0.1:{port}", "token": "t"}))
    result = run_cli("get", "pods", env=clean_env(CAPSTAN_CONFIG=str(config)))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: cannot reach Capstan at http://127.0.0.1:{port}: is `capstan server` running?")


# ---- secrets --------------------------------------------------------------------------------------

def test_secret_values_stay_out_of_the_server_log_and_describe(server: Server, tmp_path: Path) -> None:
    value = "s3cr3t-cli-value-4711"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cli-secret"}, "stringData": {"pw": value}}
    server.cli("apply", "-f", str(manifest(tmp_path, "secret.yaml", secret)))
    server.cli("apply", "-f", str(manifest(tmp_path, "secret.yaml", secret)))
    described = server.cli("describe", "secret", "cli-secret").stdout
    assert value not in described and "pw:  21 bytes" in described
    log = server.log_path.read_text()
    assert "/api/v1/namespaces/default/secrets" in log  # requests are logged...
    assert value not in log  # ...their bodies are not


# ---- watching ------------------------------------------------------------------------------------

def test_get_watch_prints_a_header_then_a_row_per_change(server: Server) -> None:
    server.cli("apply", "-f", "-", stdin=yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": "watched"}}))
    process = subprocess.Popen([sys.executable, "-m", "capstan.cli.main", "get", "cm", "-n", "watched", "-w"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server.env())
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        server.cli("apply", "-f", "-", stdin=yaml.safe_dump(configmap("w1", {"a": "1"}, namespace="watched")))
        server.cli("delete", "cm", "w1", "-n", "watched")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(lines) < 3:
            time.sleep(0.05)
        assert [line.split()[:2] for line in lines[:3]] == [["NAME", "DATA"], ["w1", "1"], ["w1", "1"]]
    finally:
        process.terminate()
        process.wait(timeout=30)
