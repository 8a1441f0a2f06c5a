"""``capstan describe`` output for pods and secrets, without a server."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from capstan.api.registry import default_registry
from capstan.cli.describe import describe

REGISTRY = default_registry()
NOW = datetime(2024, 1, 1, 0, 10, tzinfo=UTC)


def test_pod_sections_container_states_conditions_and_events() -> None:
    pod = {
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"},
                     "creationTimestamp": "2024-01-01T00:00:00Z",
                     "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}]},
        "spec": {"nodeName": "laptop", "containers": [{
            "name": "main", "image": "python:3.11", "command": ["python3", "-c"], "args": ["print(1)\nprint(2)"],
            "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "False",
                                                                             "reason": "ContainersNotReady"}],
                   "containerStatuses": [{"name": "main", "ready": False, "restartCount": 3,
                                          "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                          "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}}]},
    }
    events = [
        {"type": "Warning", "reason": "BackOff", "message": "Back-off restarting", "count": 4,
         "firstTimestamp": "2024-01-01T00:01:00Z", "lastTimestamp": "2024-01-01T00:09:00Z",
         "source": {"component": "capstan-node"}},
        {"type": "Normal", "reason": "Scheduled", "message": "assigned to laptop",
         "lastTimestamp": "2024-01-01T00:00:00Z", "source": {"component": "capstan-scheduler"}},
    ]
    text = describe(REGISTRY.lookup("pod"), pod, events, now=NOW)
    lines = text.splitlines()
    assert lines[:6] == [
        "Name:               web-1",
        "Namespace:          default",
        "Labels:             app=web",
        "Annotations:        <none>",
        "CreationTimestamp:  2024-01-01T00:00:00Z",
        "Controlled By:      Deployment/web",
    ]
    assert "Status:             CrashLoopBackOff" in lines
    assert "    State:              Waiting" in lines
    assert "      Reason:             CrashLoopBackOff" in lines
    assert "    Last State:         Terminated" in lines
    assert "      Exit Code:          2" in lines
    assert "    Restart Count:      3" in lines
    assert "      print(2)" in lines  # a script argument keeps its lines
    assert "      PW: <set to the key 'pw' in secret 'creds'>" in lines
    assert any(line.split()[:3] == ["Ready", "False", "ContainersNotReady"] for line in lines)
    events_at = lines.index("Events:")
    assert lines[events_at + 1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert lines[events_at + 2].split()[:3] == ["Normal", "Scheduled", "10m"]  # oldest first
    assert "60s (x4 over 9m)" in lines[events_at + 3]


def test_secret_values_are_never_shown() -> None:
    value = "topsecret"
    secret = {"metadata": {"name": "creds", "namespace": "default"}, "type": "Opaque",
              "data": {"pw": base64.b64encode(value.encode()).decode()}}
    text = describe(REGISTRY.lookup("secret"), secret, [], now=NOW)
    assert value not in text and secret["data"]["pw"] not in text
    assert "pw:  9 bytes" in text
    assert text.endswith("Events:             <none>\n")
