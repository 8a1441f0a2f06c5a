"""Must show: a Deployment of 3 real processes, self-healing, scale to zero, cascade delete."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from tests.e2e.harness import CapstanServer, wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello.yaml"


def running_pods(server: CapstanServer, selector: str) -> list[dict]:  # type: ignore[type-arg]
    return [p for p in server.pods(selector=selector)
            if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def live_processes(server: CapstanServer, selector: str) -> dict[str, list[psutil.Process]]:
    uids = {p["metadata"]["uid"] for p in server.pods(selector=selector)}
    return server.processes(uids)


def test_deployment_runs_heals_scales_to_zero_and_cascades(server: CapstanServer) -> None:
    out = server.cli("apply", "-f", str(EXAMPLE)).stdout
    assert "deployment.apps/hello created" in out

    wait_for(lambda: len(running_pods(server, "app=hello")) == 3, timeout=60, message="3 running pods")
    procs = wait_for(lambda: (p := live_processes(server, "app=hello")) and len(p) == 3 and p,
                     timeout=30, message="3 live worker processes")
    assert all(len(group) == 1 for group in procs.values()), procs

    # Kill one worker process outright: the node agent restarts it within 2 s.
    victim_uid, (victim,) = next(iter(procs.items()))
    victim_pid = victim.pid
    os.kill(victim_pid, signal.SIGKILL)
    replacement = wait_for(
        lambda: [p for p in live_processes(server, "app=hello").get(victim_uid, []) if p.pid != victim_pid]
        or next((True for uid in live_processes(server, "app=hello") if uid not in procs), None),
        timeout=2.0, interval=0.02, message="a replacement process within 2 s")
    assert replacement
    wait_for(lambda: len(live_processes(server, "app=hello")) == 3, timeout=10, message="3 processes again")

    deployment = server.get_json("/apis/apps/v1/namespaces/default/deployments/hello")
    wait_for(lambda: server.get_json("/apis/apps/v1/namespaces/default/deployments/hello")
             .get("status", {}).get("readyReplicas") == 3, timeout=30, message="readyReplicas 3")
    assert deployment["spec"]["replicas"] == 3

    # Scale to zero through the CLI (the scale subresource): every process stops.
    server.cli("scale", "deployment/hello", "--replicas", "0")
    wait_for(lambda: not live_processes(server, "app=hello") and not server.pods(selector="app=hello"),
             timeout=60, message="no pods and no processes after scale to 0")
    assert server.get_json("/apis/apps/v1/namespaces/default/deployments/hello/scale")["spec"]["replicas"] == 0

    # Back to 2, then delete the Deployment: its pods and processes go with it.
    server.cli("scale", "deployment/hello", "--replicas", "2")
    wait_for(lambda: len(live_processes(server, "app=hello")) == 2, timeout=60, message="2 processes")
    uids = {p["metadata"]["uid"] for p in server.pods(selector="app=hello")}
    server.cli("delete", "deployment", "hello")
    wait_for(lambda: not server.pods(selector="app=hello"), timeout=60, message="pods deleted")
    wait_for(lambda: not server.processes(uids), timeout=60, message="processes stopped")


def test_logs_of_a_running_pod(server: CapstanServer) -> None:
    server.cli("apply", "-f", str(EXAMPLE))
    pods = wait_for(lambda: running_pods(server, "app=hello"), timeout=60, message="a running pod")
    name = pods[0]["metadata"]["name"]
    text = wait_for(lambda: "hello #1" in (out := server.cli("logs", name).stdout) and out,
                    timeout=30, message="the first log line")
    assert f"from {name} on " in text
