"""Must show: the API refuses requests without the token; Secret values never appear in
the server's logs or in Events."""

from __future__ import annotations

import httpx

from tests.e2e.harness import CapstanServer, wait_for

SECRET_VALUE = "s3cr3t-value-that-must-not-leak"


def test_requests_without_or_with_a_wrong_token_are_refused(server: CapstanServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {server.token}"}):
        response = httpx.get(server.url + "/api/v1/namespaces/default/pods", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["reason"] == "Unauthorized"
    assert server.api("GET", "/api/v1/namespaces/default/pods").status_code == 200
    assert (server.data_dir / "token").stat().st_mode & 0o777 == 0o600


def test_secret_values_stay_out_of_logs_and_events(server: CapstanServer) -> None:
    server.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                  "stringData": {"password": SECRET_VALUE}})
    server.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "uses-secret"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "c", "command": ["python3", "-c", "import os,sys; sys.exit(0 if os.environ['PW'] else 1)"],
            "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
        }]},
    })
    pod = wait_for(lambda: (p := server.get_json("/api/v1/namespaces/default/pods/uses-secret"))
                   .get("status", {}).get("phase") in ("Succeeded", "Failed") and p,
                   timeout=60, message="the pod to finish")
    assert pod["status"]["phase"] == "Succeeded", "the container saw the secret value in its env"
    # A pod whose secret key is missing fails to start with a message that names the key, not values.
    server.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "missing-key"},
        "spec": {"containers": [{"name": "c", "command": ["sleep", "5"], "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}]}]},
    })
    wait_for(lambda: "CreateContainerConfigError" in server.cli("describe", "pod", "missing-key").stdout,
             timeout=60, message="CreateContainerConfigError")
    events = server.cli("get", "events", "-A", "-o", "json").stdout
    assert SECRET_VALUE not in events
    assert SECRET_VALUE not in server.log_path.read_text()
    assert SECRET_VALUE not in server.cli("describe", "pod", "uses-secret").stdout
