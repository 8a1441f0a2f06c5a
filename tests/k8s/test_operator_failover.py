"""Leader election between two real operator processes against a real API server.

Each process is ``capstan.server.operator.run_operator_process`` (what ``capstan operator`` runs) with one
probe controller that appends "<identity> <time>" to a shared ConfigMap several times a second
(tests/k8s/operator_probe.py). Exactly one process may act at any time; the log proves it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.k8s.cluster import REPO_ROOT, KubeCluster, wait_until
from tests.k8s.operator_probe import assert_one_actor_at_a_time, parse_log

LEASE_DURATION = 12.0  # the operator's default
FAILOVER_BOUND = 15.0  # what the operator promises: a dead leader is replaced within 15 s
# Slack for a loaded 2-core machine: wake-up latency of the standby and two API round trips.
SCHEDULING_SLACK = 3.0


@dataclass
class Probe:
    identity: str
    process: subprocess.Popen[bytes]
    output: Path
    url: str = field(default="")

    def health_url(self) -> str:
        if not self.url:
            found = wait_until(lambda: re.search(r"metrics on (http://\S+)", self.output.read_text()),
                               lambda match: match is not None or self.process.poll() is not None,
                               f"{self.identity} to print its health URL", timeout=60, interval=0.1)
            assert found is not None, f"{self.identity} exited:\n{self.output.read_text()}"
            self.url = found.group(1)
        return self.url

    def role(self) -> str:
        return httpx.get(f"{self.health_url()}/leader", timeout=10).text.split()[0]


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:8]}"
    with kube_cluster.client() as api:
        api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": name}}).raise_for_status()
    yield name
    with kube_cluster.client() as api:
        api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def start_probe(kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[Callable[[str], Probe]]:
    started: list[Probe] = []

    def start(identity: str) -> Probe:
        output = tmp_path / f"{identity}.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.k8s.operator_probe", str(kube_cluster.kubeconfig), namespace,
                 "probe-lease", identity, "actions"],
                cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        probe = Probe(identity, process, output)
        started.append(probe)
        return probe

    yield start
    for probe in started:
        if probe.process.poll() is None:
            probe.process.kill()
        probe.process.wait(timeout=30)


def micro_time(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def lease(api: httpx.Client, namespace: str) -> dict[str, object]:
    response = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/probe-lease")
    return response.json().get("spec") or {} if response.status_code == 200 else {}


def actions(api: httpx.Client, namespace: str) -> list[tuple[str, float]]:
    response = api.get(f"/api/v1/namespaces/{namespace}/configmaps/actions")
    if response.status_code == 404:
        return []
    return parse_log((response.json().get("data") or {}).get("log", ""))


def test_exactly_one_leads_and_the_standby_takes_over_after_the_leader_is_killed(
        kube_cluster: KubeCluster, namespace: str, start_probe: Callable[[str], Probe]) -> None:
    probes = {identity: start_probe(identity) for identity in ("probe-a", "probe-b")}
    with kube_cluster.client() as api:
        def holder_or_exit() -> object:
            for probe in probes.values():
                assert probe.process.poll() is None, f"{probe.identity} exited:\n{probe.output.read_text()}"
            return lease(api, namespace).get("holderIdentity")

        holder = str(wait_until(holder_or_exit, bool, "one probe to take the Lease", timeout=90))
        wait_until(lambda: actions(api, namespace), lambda log: len(log) >= 5, "the leader to act")
        leader = probes[holder]
        standby = next(p for p in probes.values() if p is not leader)
        assert leader.role() == "leader"
        assert standby.role() == "follower"
        assert {identity for identity, _ in actions(api, namespace)} == {holder}

        # Follow the Lease closely so we know when the leader last renewed before it died.
        last_renew = micro_time(str(lease(api, namespace)["renewTime"]))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            spec = lease(api, namespace)
            last_renew = max(last_renew, micro_time(str(spec["renewTime"])))
            time.sleep(0.1)
        os.killpg(leader.process.pid, signal.SIGKILL)
        killed_at = time.time()
        leader.process.wait(timeout=30)
        last_renew = max(last_renew, micro_time(str(lease(api, namespace)["renewTime"])))

        taken = wait_until(lambda: lease(api, namespace),
                           lambda spec: spec.get("holderIdentity") == standby.identity,
                           "the standby to take the Lease", timeout=60, interval=0.1)
        acquired = micro_time(str(taken["acquireTime"]))
        assert taken["leaseTransitions"] == 1
        # Not before the Lease ran out (no stealing), and not much later than that.
        assert acquired - last_renew >= LEASE_DURATION - 0.5, (acquired, last_renew)
        assert acquired - last_renew <= LEASE_DURATION + SCHEDULING_SLACK, (acquired, last_renew)
        assert acquired - killed_at <= FAILOVER_BOUND
        print(f"takeover {acquired - killed_at:.2f}s after SIGKILL, {acquired - last_renew:.2f}s after the "
              f"last renewal")

        log = wait_until(lambda: actions(api, namespace),
                         lambda log: sum(1 for who, _ in log if who == standby.identity) >= 3,
                         "the new leader to act")
        assert standby.role() == "leader"
        assert_one_actor_at_a_time(log)
        assert log[0][0] == leader.identity and log[-1][0] == standby.identity

        # A graceful stop releases the Lease at once (no 15 s wait for the next candidate) and exits 0.
        standby.process.send_signal(signal.SIGTERM)
        assert standby.process.wait(timeout=30) == 0
        released = lease(api, namespace)
        assert "holderIdentity" not in released and released["leaseDurationSeconds"] == 1
