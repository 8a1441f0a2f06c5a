"""Registers this machine as a Node and keeps its Ready condition fresh (a heartbeat).

Idempotent across restarts: an existing Node keeps what users set on it (taints, cordon, extra
labels) and gets fresh capacity, allocatable, node info and heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import socket
from collections.abc import Callable, Mapping
from datetime import datetime

import psutil

import capstan
from capstan.api.errors import AlreadyExistsError, ConflictError, NotFoundError
from capstan.api.quantity import format_bytes, parse_quantity
from capstan.controllers.events import rfc3339, utcnow
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

DEFAULT_MAX_PODS = 110
HEARTBEAT_SECONDS = 10.0


def host_capacity(cpu: str | None = None, memory: str | None = None,
                  extended: Mapping[str, int] | None = None, max_pods: int = DEFAULT_MAX_PODS) -> dict[str, str]:
    """cpu and memory of this machine (or as configured), pods, and configured extended resources."""
    if cpu is not None:
        parse_quantity(cpu)  # reject nonsense early, with the quantity error
    if memory is not None:
        parse_quantity(memory)
    capacity = {
        "cpu": cpu if cpu is not None else str(psutil.cpu_count(logical=True) or 1),
        "memory": memory if memory is not None else format_bytes(psutil.virtual_memory().total),
        "pods": str(max_pods),
    }
    for name, count in (extended or {}).items():
        capacity[name] = str(count)
    return capacity


def default_node_name() -> str:
    return socket.gethostname().lower() or "localhost"


class NodeRegistrar:
    """Runnable: ``await registrar.register()`` once (also done by ``run``), then heartbeats."""

    def __init__(self, store: Store, *, node_name: str | None = None, cpu: str | None = None,
                 memory: str | None = None, extended_resources: Mapping[str, int] | None = None,
                 max_pods: int = DEFAULT_MAX_PODS, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.node_name = node_name or default_node_name()
        self.capacity = host_capacity(cpu, memory, extended_resources, max_pods)
        self.heartbeat_seconds = heartbeat_seconds
        self.clock = clock
        self._nodes = store.registry.lookup("nodes")

    async def register(self) -> Obj:
        """Create or update the Node, then write its status."""
        labels = {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": platform.system().lower(),
                  "kubernetes.io/arch": _arch()}
        while True:
            try:
                node = await self.store.get(self._nodes, self.node_name)
            except NotFoundError:
                try:
                    node = await self.store.create({
                        "apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": self.node_name, "labels": labels}, "spec": {}})
                except AlreadyExistsError:
                    continue
                break
            current = node["metadata"].get("labels") or {}
            if any(current.get(k) != v for k, v in labels.items()):
                node["metadata"]["labels"] = {**current, **labels}
                try:
                    node = await self.store.update(node)
                except ConflictError:
                    continue
            break
        return await self.heartbeat()

    async def heartbeat(self) -> Obj:
        """Write the full node status with a fresh lastHeartbeatTime."""
        while True:
            node = await self.store.get(self._nodes, self.node_name)
            node["status"] = self._status(node.get("status") or {})
            try:
                return await self.store.update_status(node)
            except ConflictError:
                continue

    def _status(self, previous: Obj) -> Obj:
        now = rfc3339(self.clock())
        old_ready = next((c for c in previous.get("conditions") or [] if c.get("type") == "Ready"), None)
        transition = old_ready["lastTransitionTime"] if old_ready and old_ready.get("status") == "True" \
            and old_ready.get("lastTransitionTime") else now
        return {
            "capacity": dict(self.capacity),
            "allocatable": dict(self.capacity),
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "capstan node agent is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": transition,
            }],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "nodeInfo": {
                "architecture": _arch(), "operatingSystem": platform.system().lower(),
                "kernelVersion": platform.release(), "osImage": platform.platform(),
                "kubeletVersion": f"capstan-{capstan.__version__}",
                "containerRuntimeVersion": "capstan-process://" + capstan.__version__,
                "machineID": "", "systemUUID": "", "bootID": str(int(psutil.boot_time())),
            },
            "phase": "Running",
        }

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.register()
                break
            except Exception:
                log.exception("registering node %s failed; retrying", self.node_name)
                await _sleep_or_stop(stop, 1.0)
        while not stop.is_set():
            await _sleep_or_stop(stop, self.heartbeat_seconds)
            if stop.is_set():
                return
            try:
                await self.heartbeat()
            except NotFoundError:
                await self.register()  # someone deleted the Node: register again, as a kubelet does
            except Exception:
                log.exception("node %s heartbeat failed", self.node_name)


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
