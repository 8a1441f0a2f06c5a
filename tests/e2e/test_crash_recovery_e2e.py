"""Must show: kill -9 of the server in the middle of a scale from 0 to 20, then restart:
no object lost, exactly 20 pods running, no orphan processes — over many random kill points."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.e2e.harness import CapstanServer, kill_all_containers, wait_for

ROUNDS = 10
REPLICAS = 20

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "burst"},
    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "burst"}},
             "template": {"metadata": {"labels": {"app": "burst"}},
                          "spec": {"terminationGracePeriodSeconds": 2,
                                   "containers": [{"name": "sleeper", "command": ["sleep", "3600"]}]}}},
}


def converged(server: CapstanServer, replicas: int) -> bool:
    pods = [p for p in server.pods(selector="app=burst") if not p["metadata"].get("deletionTimestamp")]
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if len(pods) != replicas or len(running) != replicas:
        return False
    uids = {p["metadata"]["uid"] for p in pods}
    everything = server.processes()
    # Exactly one live process per pod, and none that belongs to no pod (orphans).
    return set(everything) == uids and all(len(procs) == 1 for procs in everything.values())


@pytest.mark.slow
def test_kill9_during_scale_up_loses_nothing_and_leaves_no_orphans(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    server = CapstanServer(tmp_path / "data")
    server.start()
    try:
        server.apply(DEPLOYMENT)
        for round_number in range(ROUNDS):
            marker = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"round-{round_number}"},
                      "data": {"round": str(round_number)}}
            server.apply(marker)
            server.cli("scale", "deployment/burst", "--replicas", str(REPLICAS))
            time.sleep(rng.uniform(0.0, 2.0))  # a random point of the scale-up
            server.kill9()
            server.start()

            wait_for(lambda: converged(server, REPLICAS), timeout=120,
                     message=f"round {round_number}: exactly {REPLICAS} pods running, one process each")
            for earlier in range(round_number + 1):
                stored = server.get_json(f"/api/v1/namespaces/default/configmaps/round-{earlier}")
                assert stored["data"] == {"round": str(earlier)}
            assert server.get_json("/apis/apps/v1/namespaces/default/deployments/burst")["spec"]["replicas"] \
                == REPLICAS

            server.cli("scale", "deployment/burst", "--replicas", "0")
            wait_for(lambda: converged(server, 0), timeout=120,
                     message=f"round {round_number}: back to zero pods and zero processes")
    finally:
        server.stop()
        kill_all_containers(server.data_dir)


def one_process_per_pod(server: CapstanServer, replicas: int) -> dict[str, int] | None:
    if not converged(server, replicas):
        return None
    return {uid: procs[0].pid for uid, procs in server.processes().items()}


def test_graceful_stop_stops_containers_and_restart_brings_them_back_once(tmp_path: Path) -> None:
    server = CapstanServer(tmp_path / "data")
    server.start()
    try:
        server.apply({**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "replicas": 3}})  # type: ignore[dict-item]
        wait_for(lambda: one_process_per_pod(server, 3), timeout=60, message="3 pods, one process each")
        server.stop()
        assert server.processes() == {}, "a normal stop stops the containers"
        server.start()
        wait_for(lambda: one_process_per_pod(server, 3), timeout=60, message="the same 3 pods running again")
    finally:
        server.stop()
        kill_all_containers(server.data_dir)


def test_keep_workloads_leaves_processes_running_and_readopts_them(tmp_path: Path) -> None:
    server = CapstanServer(tmp_path / "data", extra_args=["--keep-workloads"])
    server.start()
    try:
        server.apply({**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "replicas": 3}})  # type: ignore[dict-item]
        before = wait_for(lambda: one_process_per_pod(server, 3), timeout=60, message="3 pods, one process each")
        server.stop()
        assert {uid: procs[0].pid for uid, procs in server.processes().items()} == before
        server.start()
        time.sleep(2)  # give a buggy agent the chance to start duplicates
        after = wait_for(lambda: one_process_per_pod(server, 3), timeout=60, message="3 adopted pods")
        assert after == before, "the same processes are adopted, none started twice"
    finally:
        server.stop()
        kill_all_containers(server.data_dir)
