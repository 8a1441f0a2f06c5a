"""Running containers as local OS processes, one shim per container.

Layout of the runtime's state directory (``DIR/runtime`` of a Capstan data directory)::

    <state_dir>/<pod uid>/<container>/spec.json   who it is (pod, container, attempt; never env)
                                      shim.pid    written by the shim first thing
                                      state.json  the container process and its start time
                                      exit.json   exit code / signal / reason / finish time

Everything needed to adopt a container after Capstan restarts is on disk; in-memory caches are
only an optimisation. Each container process is the leader of its own process group, so
stopping a container signals the group (grandchildren included). Every process carries the
environment markers ``CAPSTAN_POD_UID``, ``CAPSTAN_CONTAINER`` and ``CAPSTAN_RUNTIME_DIR``, so
processes that escaped their group (``setsid``) are still found by an environment scan: the
runtime-dir marker keeps two Capstan instances on one machine from touching each other's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from capstan.runtime.logs import container_log_path
from capstan.runtime.shim import EXIT, SHIM_PID, STATE, write_json_atomically

log = logging.getLogger(__name__)

ENV_POD_UID = "CAPSTAN_POD_UID"
ENV_CONTAINER = "CAPSTAN_CONTAINER"
ENV_RUNTIME_DIR = "CAPSTAN_RUNTIME_DIR"
SPEC = "spec.json"

START_TIMEOUT_SECONDS = 30.0


class ContainerStartError(Exception):
    """A container could not be started (the shim did not come up)."""


@dataclass(frozen=True)
class ContainerSpec:
    """One container to run. ``argv`` is executed directly (no shell); ``env`` is the complete
    environment (the runtime only adds its three CAPSTAN_* markers)."""

    pod_uid: str
    namespace: str
    pod_name: str
    container: str
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class Running:
    pid: int
    started_at: float
    attempt: int


@dataclass(frozen=True)
class Exited:
    exit_code: int
    signal: int | None
    reason: str
    started_at: float | None
    finished_at: float
    attempt: int
    message: str | None = None


ContainerState = Running | Exited


@dataclass(frozen=True)
class ContainerHandle:
    """A container the runtime knows about, with its current state."""

    pod_uid: str
    namespace: str
    pod_name: str
    container: str
    attempt: int
    state: ContainerState


class ProcessRuntime:
    def __init__(self, state_dir: Path, pods_root: Path, *, log_max_bytes: int = 10 * 2**20,
                 log_keep: int = 3, python: str = sys.executable) -> None:
        self.state_dir = state_dir.resolve()
        self.pods_root = pods_root
        self.log_max_bytes = log_max_bytes
        self.log_keep = log_keep
        self.python = python
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # psutil handles keep their creation time, so ``is_running`` is safe against pid reuse.
        self._processes: dict[tuple[str, str, int], psutil.Process] = {}
        self._usage_handles: dict[str, dict[int, psutil.Process]] = {}

    # ---- paths -----------------------------------------------------------------------------

    def _dir(self, pod_uid: str, container: str) -> Path:
        return self.state_dir / pod_uid / container

    def log_path(self, namespace: str, pod_name: str, pod_uid: str, container: str) -> Path:
        return container_log_path(self.pods_root, namespace, pod_name, pod_uid, container)

    # ---- start -----------------------------------------------------------------------------

    async def start(self, spec: ContainerSpec) -> ContainerHandle:
        """Start the container and return once its process runs (or failed to start).
        Starting a container that already runs returns the running one: never a duplicate."""
        current = self.status(spec.pod_uid, spec.container)
        if isinstance(current, Running):
            return self._handle(spec.pod_uid, spec.container, current)
        directory = self._dir(spec.pod_uid, spec.container)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        write_json_atomically(directory / SPEC, {
            "podUid": spec.pod_uid, "namespace": spec.namespace, "podName": spec.pod_name,
            "container": spec.container, "attempt": spec.attempt})
        log_path = self.log_path(spec.namespace, spec.pod_name, spec.pod_uid, spec.container)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        markers = {ENV_POD_UID: spec.pod_uid, ENV_CONTAINER: spec.container,
                   ENV_RUNTIME_DIR: str(self.state_dir)}
        payload = json.dumps({
            "argv": list(spec.argv), "env": {**spec.env, **markers}, "cwd": spec.working_dir,
            "logPath": str(log_path), "logMaxBytes": self.log_max_bytes, "logKeep": self.log_keep,
        }).encode()
        launcher = self._launch_shim(directory, payload, markers)
        await self._wait_started(directory, launcher)
        state = self.status(spec.pod_uid, spec.container)
        if state is None:
            raise ContainerStartError(f"container {spec.container} of pod {spec.pod_uid} did not start")
        return self._handle(spec.pod_uid, spec.container, state)

    def _launch_shim(self, directory: Path, payload: bytes,
                     markers: Mapping[str, str]) -> subprocess.Popen[bytes]:
        # The shim inherits our environment (to find its interpreter's packages) plus the
        # markers; the container gets only its own environment, which travels on stdin.
        launcher = subprocess.Popen(
            [self.python, "-m", "capstan.runtime.shim", str(directory)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, **markers}, start_new_session=True, close_fds=True)
        assert launcher.stdin is not None
        launcher.stdin.write(payload)
        launcher.stdin.close()
        return launcher

    async def _wait_started(self, directory: Path, launcher: subprocess.Popen[bytes]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_SECONDS
        delay = 0.002
        while loop.time() < deadline:
            launched = launcher.poll()
            if (directory / STATE).exists() or (directory / EXIT).exists():
                if launched is None:
                    await asyncio.to_thread(launcher.wait)  # reap the intermediate process
                return
            if launched not in (None, 0):
                raise ContainerStartError(f"the container shim failed with exit code {launched}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        launcher.kill()
        raise ContainerStartError("the container shim did not report within "
                            f"{START_TIMEOUT_SECONDS:.0f}s")

    def _handle(self, pod_uid: str, container: str, state: ContainerState) -> ContainerHandle:
        meta = _read_json(self._dir(pod_uid, container) / SPEC) or {}
        return ContainerHandle(pod_uid, str(meta.get("namespace", "")), str(meta.get("podName", "")),
                               container, state.attempt, state)

    # ---- status ----------------------------------------------------------------------------

    def status(self, pod_uid: str, container: str) -> ContainerState | None:
        """The container's state, or None when the runtime has never started it."""
        directory = self._dir(pod_uid, container)
        meta = _read_json(directory / SPEC)
        if meta is None:
            return None
        attempt = int(meta.get("attempt", 0))
        exited = _read_json(directory / EXIT)
        if exited is not None:
            self._processes.pop((pod_uid, container, attempt), None)
            return _exited(exited, attempt)
        state = _read_json(directory / STATE)
        if state is None:
            launched = _mtime(directory / SPEC)
            if self._alive(_read_pid(directory / SHIM_PID)) or time.time() - launched < START_TIMEOUT_SECONDS:
                return Running(pid=0, started_at=launched, attempt=attempt)  # still starting
            return self._record_lost(directory, attempt, None)
        pid = int(state["pid"])
        process = self._container_process(pod_uid, container, attempt, pid)
        if process is not None and _running(process):
            return Running(pid=pid, started_at=float(state["startedAt"]), attempt=attempt)
        if self._alive(int(state.get("shimPid", 0))):
            # The process ended and its shim is writing the exit record right now.
            return Running(pid=pid, started_at=float(state["startedAt"]), attempt=attempt)
        exited = _read_json(directory / EXIT)  # the shim may have finished in between
        if exited is not None:
            return _exited(exited, attempt)
        return self._record_lost(directory, attempt, float(state["startedAt"]))

    def _record_lost(self, directory: Path, attempt: int, started: float | None) -> Exited:
        """Neither the process nor its shim exists and nothing was recorded (the machine
        rebooted, or someone SIGKILLed the shim): record that, as the kubelet does."""
        record = {"exitCode": 137, "signal": None, "reason": "ContainerStatusUnknown",
                  "message": "The container could not be located; its exit status was lost",
                  "startedAt": started, "finishedAt": time.time()}
        write_json_atomically(directory / EXIT, record)
        return _exited(record, attempt)

    def _container_process(self, pod_uid: str, container: str, attempt: int,
                           pid: int) -> psutil.Process | None:
        key = (pod_uid, container, attempt)
        process = self._processes.get(key)
        if process is not None and process.pid == pid:
            return process
        try:
            process = psutil.Process(pid)
            environ = process.environ()
        except (psutil.Error, OSError):
            return None
        # A recycled pid belongs to someone else: only trust a process carrying our markers.
        if environ.get(ENV_POD_UID) != pod_uid or environ.get(ENV_CONTAINER) != container:
            return None
        self._processes[key] = process
        return process

    def _alive(self, pid: int) -> bool:
        if pid <= 0:
            return False
        try:
            process = psutil.Process(pid)
            return _running(process) and process.environ().get(ENV_RUNTIME_DIR) == str(self.state_dir)
        except (psutil.Error, OSError):
            return False

    # ---- stop ------------------------------------------------------------------------------

    async def stop(self, pod_uid: str, container: str, grace_seconds: float) -> ContainerState | None:
        """SIGTERM the container's process group, wait up to ``grace_seconds``, then SIGKILL the
        group. Returns once the container is gone and its exit is recorded."""
        state = await self._wait_launched(pod_uid, container)
        if not isinstance(state, Running):
            return state
        if state.pid > 0:
            self._signal_group(pod_uid, container, state, signal.SIGTERM)
            if await self._wait_exited(pod_uid, container, grace_seconds):
                return self.status(pod_uid, container)
        state = self.status(pod_uid, container)
        if isinstance(state, Running):
            if state.pid > 0:
                self._signal_group(pod_uid, container, state, signal.SIGKILL)
            await self._wait_exited(pod_uid, container, START_TIMEOUT_SECONDS)
        return self.status(pod_uid, container)

    async def _wait_launched(self, pod_uid: str, container: str) -> ContainerState | None:
        """The state once the container process exists (a start may be under way)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_SECONDS
        while True:
            state = self.status(pod_uid, container)
            if not isinstance(state, Running) or state.pid > 0 or loop.time() > deadline:
                return state
            await asyncio.sleep(0.01)

    def _signal_group(self, pod_uid: str, container: str, state: Running, signal_number: int) -> None:
        if self._container_process(pod_uid, container, state.attempt, state.pid) is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(state.pid, signal_number)

    async def _wait_exited(self, pod_uid: str, container: str, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        delay = 0.005
        while True:
            if not isinstance(self.status(pod_uid, container), Running):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.001)))
            delay = min(delay * 2, 0.1)

    async def stop_pod(self, pod_uid: str, grace_seconds: float) -> None:
        """Stop every container of a pod concurrently."""
        await asyncio.gather(*(self.stop(pod_uid, name, grace_seconds)
                               for name in self.containers_of(pod_uid)))

    # ---- inventory, adoption and orphans ---------------------------------------------------

    def pod_uids(self) -> list[str]:
        return sorted(p.name for p in self.state_dir.iterdir() if p.is_dir())

    def containers_of(self, pod_uid: str) -> list[str]:
        directory = self.state_dir / pod_uid
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if (p / SPEC).exists())

    def adopt_all(self) -> list[ContainerHandle]:
        """Every container recorded on disk with its current state (running ones keep running;
        ones that ended while nobody watched report their real exit)."""
        handles = []
        for pod_uid in self.pod_uids():
            for container in self.containers_of(pod_uid):
                state = self.status(pod_uid, container)
                if state is not None:
                    handles.append(self._handle(pod_uid, container, state))
        return handles

    def kill_pod(self, pod_uid: str) -> list[int]:
        """SIGKILL every process of one pod, those that escaped their group included, and
        forget the pod. Returns the pids killed."""
        victims = [p for p, uid in self._marked_processes() if uid == pod_uid]
        for process in victims:
            with contextlib.suppress(psutil.Error):
                process.kill()
        _wait_gone(victims, timeout=5.0)
        self.forget(pod_uid)
        return sorted(p.pid for p in victims)

    def _marked_processes(self) -> list[tuple[psutil.Process, str]]:
        """Processes started by this runtime (by their environment markers), with their pod uid."""
        found = []
        for process in psutil.process_iter():
            try:
                environ = process.environ()
            except (psutil.Error, OSError):
                continue
            uid = environ.get(ENV_POD_UID)
            if environ.get(ENV_RUNTIME_DIR) == str(self.state_dir) and uid is not None \
                    and process.pid != os.getpid():
                found.append((process, uid))
        return found

    def kill_orphans(self, keep: Iterable[str]) -> list[int]:
        """SIGKILL every process of every pod whose uid is not in ``keep`` and forget those
        pods; this includes processes that escaped their group (found by their environment).
        Returns the pids killed."""
        keep_set = set(keep)
        victims = {p.pid: p for p, uid in self._marked_processes() if uid not in keep_set}
        for process in victims.values():
            with contextlib.suppress(psutil.Error):
                process.kill()
        _wait_gone(list(victims.values()), timeout=5.0)
        for pod_uid in self.pod_uids():
            if pod_uid not in keep_set:
                self.forget(pod_uid)
        return sorted(victims)

    def forget(self, pod_uid: str) -> None:
        """Drop the runtime's records of a pod (its processes must be gone)."""
        shutil.rmtree(self.state_dir / pod_uid, ignore_errors=True)
        self._usage_handles.pop(pod_uid, None)
        for key in [k for k in self._processes if k[0] == pod_uid]:
            del self._processes[key]

    # ---- resource usage --------------------------------------------------------------------

    def usage(self, pod_uid: str) -> tuple[int, int]:
        """CPU (millicores, averaged since the previous call) and resident memory (bytes) of
        all processes of a pod's running containers and their descendants."""
        millicores = 0.0
        memory = 0
        known = self._usage_handles.get(pod_uid, {})
        seen: dict[int, psutil.Process] = {}
        for container in self.containers_of(pod_uid):
            state = self.status(pod_uid, container)
            if not isinstance(state, Running) or state.pid <= 0:
                continue
            root = self._container_process(pod_uid, container, state.attempt, state.pid)
            if root is None:
                continue
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in family:
                # cpu_percent measures since the previous call on the same handle.
                handle = known.get(process.pid, process)
                try:
                    millicores += handle.cpu_percent(None) * 10
                    memory += handle.memory_info().rss
                except psutil.Error:
                    continue
                seen[process.pid] = handle
        self._usage_handles[pod_uid] = seen
        return round(millicores), memory


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    """Wait until none runs. Zombies count as gone: whoever inherited them reaps them when it
    gets round to it (psutil's own wait would wait for the reaping)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while any(_running(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _exited(record: Mapping[str, Any], attempt: int) -> Exited:
    started = record.get("startedAt")
    return Exited(exit_code=int(record["exitCode"]), signal=record.get("signal"),
                  reason=str(record.get("reason") or "Error"),
                  started_at=float(started) if started is not None else None,
                  finished_at=float(record["finishedAt"]), attempt=attempt, message=record.get("message"))
