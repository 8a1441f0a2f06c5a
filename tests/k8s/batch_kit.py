"""Kueue-style batch on a real control plane: a private kwok for the test's own fake Nodes, the queue
objects, queued Jobs, ``capstan operator`` as a process with its admission webhook, and reading the
admission history back from the Workloads. Shared by tests/k8s/test_batch_on_kube.py and
bench/bench_kube_admission.py.

Why a private kwok: the session's kwok runs the "fast" stage set, where a Job's pod completes the moment
it runs. Ours runs the same stages except that pod-complete waits for the pod's
``pod-complete.stage.kwok.x-k8s.io/delay`` annotation (kwok's own convention, from its "general" stage
set), so admitted Jobs hold their quota for a while. It manages only Nodes annotated
``kwok.x-k8s.io/node=<our value>``, so the two never touch each other's Nodes or Pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from capstan.api.errors import AlreadyExistsError, NotFoundError
from capstan.controllers.batch.common import epoch
from capstan.store.base import Obj, Store
from capstan.store.kube import KubeStore
from tests.k8s.cluster import REPO_ROOT, KubeCluster

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
COMPLETE_DELAY = "pod-complete.stage.kwok.x-k8s.io/delay"
KUEUE = "kueue.x-k8s.io/v1beta1"


# ---- a private kwok ------------------------------------------------------------------------------


def _cluster_kwok_command(cluster: KubeCluster) -> list[str]:
    pid = (cluster.state_dir / "pids" / "kwok.pid").read_text().strip()
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


def delayed_stages(fast_stages: str) -> str:
    """The cluster's stage set with pod-complete waiting for the pod's delay annotation (default 0)."""
    stages = [s for s in yaml.safe_load_all(fast_stages) if s]
    for stage in stages:
        if stage["metadata"]["name"] == "pod-complete":
            stage["spec"]["delay"] = {"durationMilliseconds": 0, "durationFrom": {
                "expressionFrom": f'.metadata.annotations["{COMPLETE_DELAY}"]'}}
    return yaml.safe_dump_all(stages, sort_keys=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PrivateKwok:
    process: subprocess.Popen[bytes]
    annotation: str
    log: Path

    @classmethod
    def start(cls, cluster: KubeCluster, annotation: str, workdir: Path) -> PrivateKwok:
        command = _cluster_kwok_command(cluster)
        binary = command[0]
        flags = dict(arg.split("=", 1) for arg in command[1:] if arg.startswith("--") and "=" in arg)
        stages = workdir / "kwok-stages.yaml"
        stages.write_text(delayed_stages(Path(flags["--config"]).read_text()))
        port = _free_port()
        log = workdir / "kwok.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [binary, f"--kubeconfig={cluster.kubeconfig}", f"--config={stages}", "--manage-all-nodes=false",
                 f"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node={annotation}",
                 "--manage-nodes-with-label-selector=", "--manage-single-node=", "--cidr=10.245.0.0/16",
                 "--node-ip=10.0.0.2", "--node-lease-duration-seconds=40", f"--server-address=127.0.0.1:{port}"],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"kwok did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return cls(process, annotation, log)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def kwok_node(name: str, annotation: str, labels: dict[str, str], cpu: str = "32") -> Obj:
    capacity = {"cpu": cpu, "memory": "256Gi", "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": annotation},
                         "labels": {**labels, "type": "kwok", "kubernetes.io/hostname": name,
                                    "kubernetes.io/os": "linux"}},
            "spec": {"taints": [KWOK_TAINT]},
            "status": {"capacity": capacity, "allocatable": capacity}}


# ---- objects -----------------------------------------------------------------------------------


def flavor(name: str, node_labels: dict[str, str]) -> Obj:
    return {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": name},
            "spec": {"nodeLabels": node_labels, "tolerations": [KWOK_TOLERATION]}}


def cluster_queue(name: str, flavor_name: str, cpu: str, labels: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": KUEUE, "kind": "ClusterQueue", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"namespaceSelector": {}, "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [
                {"name": flavor_name, "resources": [{"name": "cpu", "nominalQuota": cpu},
                                                    {"name": "memory", "nominalQuota": "1Ti"}]}]}]}}


def local_queue(name: str, namespace: str, cq: str) -> Obj:
    return {"apiVersion": KUEUE, "kind": "LocalQueue", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": cq}}


def queued_job(name: str, namespace: str, queue: str, *, labels: dict[str, str], cpu: str = "100m",
               run_for: str = "0s") -> Obj:
    """One pod, tiny requests, no scheduling fields of its own (the flavor brings them)."""
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": {**labels, QUEUE_LABEL: queue}},
            "spec": {"parallelism": 1, "completions": 1, "backoffLimit": 0, "template": {
                "metadata": {"annotations": {COMPLETE_DELAY: run_for}},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": "busybox",
                     "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}]}}}}


async def create_all(store: Store, objs: Iterable[Obj], concurrency: int = 16) -> None:
    """Create every object (an existing one is fine), ``concurrency`` at a time."""
    pending = list(objs)
    limit = asyncio.Semaphore(concurrency)

    async def one(obj: Obj) -> None:
        async with limit:
            with contextlib.suppress(AlreadyExistsError):
                await store.create(obj)

    await asyncio.gather(*(one(obj) for obj in pending))


# ---- the operator process ------------------------------------------------------------------------


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    output: Path
    webhook_url: str = field(default="")
    metrics_url: str = field(default="")

    @classmethod
    def start(cls, cluster: KubeCluster, namespace: str, cert_dir: Path, workdir: Path) -> OperatorProcess:
        output = workdir / "operator.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-c", "from capstan.cli.main import app; app()", "operator",
                 f"--kubeconfig={cluster.kubeconfig}", f"--namespace={namespace}", "--no-leader-elect",
                 "--metrics-port=0", "--metrics-host=127.0.0.1", "--webhook-port=0", "--webhook-host=127.0.0.1",
                 f"--webhook-cert-dir={cert_dir}"],
                cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        operator = cls(process, output)
        deadline = time.monotonic() + 60
        while not operator.webhook_url:
            text = output.read_text()
            found = re.search(r"admission webhook on (https://\S+)", text)
            metrics = re.search(r"health and metrics on (http://\S+)", text)
            if found and metrics:
                operator.webhook_url, operator.metrics_url = found.group(1), metrics.group(1)
            elif process.poll() is not None or time.monotonic() > deadline:
                operator.stop()
                raise RuntimeError(f"the operator did not start:\n{output.read_text()[-3000:]}")
            else:
                time.sleep(0.1)
        return operator

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


# ---- reading the history back -----------------------------------------------------------------


def condition(obj: Obj, kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def true_since(obj: Obj, kind: str) -> float | None:
    found = condition(obj, kind)
    return epoch(found.get("lastTransitionTime")) if found and found.get("status") == "True" else None


@dataclass(frozen=True)
class Admission:
    workload: str
    job: str
    cluster_queue: str
    admitted_at: float
    finished_at: float | None


def admissions(workloads: Iterable[Obj]) -> list[Admission]:
    found = []
    for w in workloads:
        admitted = true_since(w, "Admitted")
        cq = ((w.get("status") or {}).get("admission") or {}).get("clusterQueue")
        if admitted is None or not cq:
            continue
        refs = w["metadata"].get("ownerReferences") or []
        owner = next((ref["name"] for ref in refs if ref.get("kind") == "Job"), "")
        found.append(Admission(w["metadata"]["name"], owner, cq, admitted, true_since(w, "Finished")))
    return found


def peak_usage(history: Iterable[Admission]) -> dict[str, int]:
    """The most Workloads each ClusterQueue held at once, by the condition timestamps (whole seconds: a
    release and an admission in the same second count the release first)."""
    events: list[tuple[float, int, str]] = []
    for a in history:
        events.append((a.admitted_at, 1, a.cluster_queue))
        if a.finished_at is not None:
            events.append((a.finished_at, -1, a.cluster_queue))
    held: dict[str, int] = {}
    peak: dict[str, int] = {}
    for _, delta, cq in sorted(events, key=lambda e: (e[0], e[1])):
        held[cq] = held.get(cq, 0) + delta
        peak[cq] = max(peak.get(cq, 0), held[cq])
    return peak


async def poll(fetch: Callable[[], Awaitable[Any]], accept: Callable[[Any], bool], what: str,
               within: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}; last value: {value!r}"[:4000])
        await asyncio.sleep(interval)


async def delete_namespace(store: KubeStore, namespace: str, within: float = 180.0) -> None:
    """Delete ``namespace`` and wait until it is gone, so that no later test's operator meets its objects
    while they are being removed (and is refused writes there)."""
    path = f"/api/v1/namespaces/{namespace}"
    with contextlib.suppress(NotFoundError):
        await store.request("DELETE", path)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await store.request("GET", path)
        except NotFoundError:
            return
        await asyncio.sleep(0.5)
