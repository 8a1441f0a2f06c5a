"""Reusable pieces for autoscaling end-to-end tests against a real ``capstan server``:

* ``worker_deployment`` / ``drain_job``: workloads whose containers are Python scripts that really
  consume a Redis list (other scalers' tests pass their own ``script``);
* ``scaled_object`` / ``scaled_job``: manifests with short polling and cooldown;
* ``ReplicaTrajectory``: the successive ``spec.replicas`` of a Deployment, recorded from an API
  watch in a thread (no sleeps), with the time of each change;
* ``idle_deployment``, ``status_of``, ``condition_of``, ``subscribed``: small helpers the
  autoscaling e2e tests share;
* ``PrivateRedis``: a ``redis-server`` of the test's own (own port and directory) that the test
  may stop (SIGTERM) and start again on the same port, which a shared service must never be.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.harness import CapstanServer

REDIS_WORKER = """
import os, sys, time, redis
client = redis.Redis.from_url(os.environ["REDIS_URL"])
source, done, hold = os.environ["LIST"], os.environ["DONE"], float(os.environ.get("HOLD", "0"))
print("worker started", flush=True)
while True:
    item = client.blpop([source], timeout=1)
    if item is None:
        continue
    time.sleep(hold)
    client.rpush(done, item[1])
    print("processed", item[1].decode(), flush=True)
"""

REDIS_BATCH_JOB = """
import os, redis
client = redis.Redis.from_url(os.environ["REDIS_URL"])
source, done, batch = os.environ["LIST"], os.environ["DONE"], int(os.environ.get("BATCH", "1"))
items = client.lpop(source, batch) or []
for item in items:
    client.rpush(done, item)
print("processed", len(items), flush=True)
"""


def _container(script: str, env: dict[str, str]) -> dict[str, Any]:
    return {"name": "worker", "image": "python:3.11-slim", "command": [sys.executable, "-u", "-c", script],
            "env": [{"name": key, "value": value} for key, value in env.items()]}


def worker_deployment(name: str, env: dict[str, str], script: str = REDIS_WORKER, replicas: int = 0) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": 1,
                                           "containers": [_container(script, env)]}}}}


def scaled_object(name: str, target: str, triggers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"name": target}, "pollingInterval": 1, "cooldownPeriod": 3,
                     "triggers": triggers, **spec}}


def drain_job(name: str, env: dict[str, str], triggers: list[dict[str, Any]], script: str = REDIS_BATCH_JOB,
              **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": name},
            "spec": {"pollingInterval": 1, "maxReplicaCount": 10,
                     "jobTargetRef": {"backoffLimit": 0, "template": {"spec": {
                         "restartPolicy": "Never", "containers": [_container(script, env)]}}},
                     "triggers": triggers, **spec}}


class ReplicaTrajectory:
    """Records a Deployment's ``spec.replicas`` changes from a watch, in a background thread."""

    def __init__(self, server: CapstanServer, name: str, namespace: str = "default") -> None:
        self.server = server
        self.name = name
        self.namespace = namespace
        self.changes: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._lock = threading.Lock()

    @property
    def values(self) -> list[int]:
        with self._lock:
            return [replicas for _, replicas in self.changes]

    def _record(self, obj: dict[str, Any]) -> None:
        replicas = int((obj.get("spec") or {}).get("replicas") or 0)
        with self._lock:
            if not self.changes or self.changes[-1][1] != replicas:
                self.changes.append((time.monotonic(), replicas))

    def _follow(self) -> None:
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        params = {"watch": "true", "fieldSelector": f"metadata.name={self.name}"}
        headers = {"Authorization": f"Bearer {self.server.token}"}
        while not self._stop.is_set():
            try:
                with httpx.stream("GET", self.server.url + path, params=params, headers=headers,
                                  timeout=httpx.Timeout(5, read=None)) as response:
                    for line in response.iter_lines():
                        if self._stop.is_set():
                            return
                        if line:
                            event = json.loads(line)
                            if event.get("type") in ("ADDED", "MODIFIED"):
                                self._record(event["object"])
            except httpx.HTTPError:
                time.sleep(0.2)

    def __enter__(self) -> ReplicaTrajectory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


class PrivateRedis:
    """A ``redis-server`` on 127.0.0.1 for one test: no persistence, its own directory and port."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.directory), "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited: {(self.directory / 'redis.log').read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def stop(self) -> None:
        """SIGTERM, as an operator would stop it; waits for the process to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


IDLE = "import time\nprint('worker started', flush=True)\ntime.sleep(3600)\n"


def idle_deployment(name: str, replicas: int = 0) -> dict[str, Any]:
    """A worker whose containers only sleep: for tests about replica counts, not work."""
    return worker_deployment(name, {}, script=IDLE, replicas=replicas)


def status_of(server: CapstanServer, name: str, plural: str = "scaledobjects") -> dict[str, Any]:
    obj = server.get_json(f"/apis/keda.sh/v1alpha1/namespaces/default/{plural}/{name}")
    return dict(obj.get("status") or {})


def condition_of(server: CapstanServer, name: str, kind: str, plural: str = "scaledobjects") -> dict[str, Any] | None:
    for cond in status_of(server, name, plural).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def replicas_of(server: CapstanServer, deployment: str) -> int:
    obj = server.get_json(f"/apis/apps/v1/namespaces/default/deployments/{deployment}")
    return int((obj.get("spec") or {}).get("replicas") or 0)


def subscribed(client: Any, key: str, database: int = 0) -> bool:
    """Whether someone (a redis scaler's push follower) follows ``key``'s keyspace notifications."""
    [(_, count)] = client.pubsub_numsub(f"__keyspace@{database}__:{key}")
    return bool(count)


def first_change_after(trajectory: ReplicaTrajectory, moment: float, replicas: int) -> float | None:
    """Seconds from ``moment`` to the first change to ``replicas`` at or after it, if there was one."""
    with trajectory._lock:
        changes = list(trajectory.changes)
    for when, value in changes:
        if when >= moment and value == replicas:
            return when - moment
    return None
