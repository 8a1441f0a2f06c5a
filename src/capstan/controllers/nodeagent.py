"""The node agent of embedded mode: runs the pods bound to this node as local processes.

It plays the kubelet's part: resolves each container's environment (Secrets, ConfigMaps, the
downward API), starts init containers one by one and then the containers through the
``ProcessRuntime``, restarts them per ``restartPolicy`` with crash-loop back-off, runs probes,
enforces ``activeDeadlineSeconds`` and reports pod status the way the kubelet does.

Deletion: the agent puts the ``capstan.io/node-agent`` finalizer on pods it runs, so a deleted pod
stays Terminating until its processes are stopped (SIGTERM, the grace period, SIGKILL to the
process group); then the finalizer goes and with it the pod.

Restarts of Capstan: the runtime's state lives on disk and its shims outlive us, so on start
the agent adopts the containers of pods that still exist here (no duplicate process), reports
those that ended meanwhile with their real exit status, and kills everything else.

Environment values (which may come from Secrets) never appear in Events or logs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from capstan.api.errors import ApiError, NotFoundError
from capstan.controllers.events import EventRecorder, rfc3339, utcnow
from capstan.controllers.informer import InformerFactory
from capstan.controllers.runtime import Controller, ObjectKey, Result
from capstan.core.scheduling.conditions import set_condition
from capstan.runtime.logs import pod_dir
from capstan.runtime.probes import ProbeCounter, ProbeTiming, run_probe
from capstan.runtime.process import (
    ContainerSpec,
    ContainerStartError,
    ContainerState,
    Exited,
    ProcessRuntime,
    Running,
)
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

FINALIZER = "capstan.io/node-agent"
DEFAULT_GRACE_SECONDS = 30
POD_IP = "127.0.0.1"
INITIAL_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300.0
BACKOFF_RESET_SECONDS = 600.0
CONFIG_RETRY_SECONDS = 2.0
MIN_REQUEUE_SECONDS = 0.01
SHUTDOWN_GRACE_CAP_SECONDS = 25.0
_ENV_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_FIELD_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


class ContainerConfigError(Exception):
    """A container cannot be started as specified (missing Secret key, no command, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Backoff:
    """Crash-loop memory of one container: consecutive quick exits and when to restart."""

    handled_attempt: int = -1
    streak: int = 0
    restart_at: float = 0.0
    delay: float = 0.0


@dataclass
class _Launch:
    """What the agent knows about a container it started (in memory only)."""

    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ports: dict[str, int] = field(default_factory=dict)


def _ts(epoch: float | None) -> str | None:
    return rfc3339(datetime.fromtimestamp(epoch, UTC)) if epoch is not None else None


def _parse_ts(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def expand_references(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, others stay."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)
    return _ENV_REFERENCE.sub(replace, text)


class NodeAgent(Controller):
    name = "node-agent"

    def __init__(self, informers: InformerFactory, store: Store, recorder: EventRecorder,
                 runtime: ProcessRuntime, *, node_name: str, keep_workloads: bool = False, workers: int = 4,
                 poll_seconds: float = 0.25, base_env: Mapping[str, str] | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(informers, workers=workers)
        self.store = store
        self.recorder = recorder
        self.runtime = runtime
        self.node_name = node_name
        self.keep_workloads = keep_workloads
        self.poll_seconds = poll_seconds
        self.base_env = dict(base_env) if base_env is not None else {"PATH": os.environ.get("PATH", os.defpath)}
        self.clock = clock
        self._pods_rt = store.registry.lookup("pods")
        self._secrets_rt = store.registry.lookup("secrets")
        self._configmaps_rt = store.registry.lookup("configmaps")
        self.pods = informers.informer(self._pods_rt)
        self.watch(self.pods)
        self._uids: dict[ObjectKey, str] = {}
        self._backoff: dict[tuple[str, str], _Backoff] = {}
        self._waiting: dict[tuple[str, str], tuple[str, str]] = {}
        self._last_exit: dict[tuple[str, str], Exited] = {}
        self._launches: dict[tuple[str, str, int], _Launch] = {}
        self._ready: dict[tuple[str, str, int], bool] = {}
        self._started: dict[tuple[str, str, int], bool] = {}
        self._probers: dict[tuple[str, str, int, str], asyncio.Task[None]] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[tuple[str, str], object] = {}

    # ---- lifecycle --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.pods.wait_synced()
        await self.adopt()
        workers = [asyncio.create_task(self._worker(), name=f"node-agent-worker-{i}") for i in range(self.workers)]
        poller = asyncio.create_task(self._poll_runtime(stop), name="node-agent-poller")
        try:
            await stop.wait()
        finally:
            # Also when cancelled (as good as a crash): our tasks end, the containers stay.
            self.queue.shutdown()
            children = [poller, *workers, *self._probers.values()]
            for task in children:
                task.cancel()
            await asyncio.gather(*children, return_exceptions=True)
        if self._stopping:
            await asyncio.gather(*self._stopping.values(), return_exceptions=True)
        if not self.keep_workloads:
            await self.stop_all()

    async def adopt(self) -> None:
        """Kill the processes of pods that are gone or not bound here; remember the rest."""
        keep: set[str] = set()
        for pod in self.pods.list():
            if (pod.get("spec") or {}).get("nodeName") == self.node_name:
                uid = pod["metadata"]["uid"]
                keep.add(uid)
                self._uids[(pod["metadata"].get("namespace") or "", pod["metadata"]["name"])] = uid
        killed = await asyncio.to_thread(self.runtime.kill_orphans, keep)
        if killed:
            log.info("killed %d processes of pods that no longer run here", len(killed))
        for pod_uid in set(self.runtime.pod_uids()) - keep:
            self.runtime.forget(pod_uid)

    async def stop_all(self) -> None:
        """Stop every container (graceful shutdown without --keep-workloads). Pod objects are
        left as they are; the next start restarts containers per restartPolicy."""
        graces = {}
        for pod in self.pods.list():
            graces[pod["metadata"]["uid"]] = min(self._grace(pod), SHUTDOWN_GRACE_CAP_SECONDS)
        await asyncio.gather(*(self.runtime.stop_pod(uid, graces.get(uid, DEFAULT_GRACE_SECONDS))
                               for uid in self.runtime.pod_uids()), return_exceptions=True)

    async def _poll_runtime(self, stop: asyncio.Event) -> None:
        """Notice containers that started, ended or vanished and reconcile their pods."""
        while not stop.is_set():
            await asyncio.sleep(self.poll_seconds)
            for key, uid in list(self._uids.items()):
                for container in self.runtime.containers_of(uid):
                    state = self.runtime.status(uid, container)
                    fingerprint = (type(state).__name__, getattr(state, "attempt", None))
                    if self._seen.get((uid, container)) != fingerprint:
                        self._seen[(uid, container)] = fingerprint
                        self.queue.add(key)

    # ---- reconcile --------------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Result | None:
        namespace, name = key
        pod = self.pods.get(name, namespace)
        known_uid = self._uids.get(key)
        if pod is None or (pod.get("spec") or {}).get("nodeName") != self.node_name:
            if known_uid is not None:
                del self._uids[key]
                await self._teardown(known_uid, namespace, name)
            return None
        uid = pod["metadata"]["uid"]
        if known_uid is not None and known_uid != uid:
            await self._teardown(known_uid, namespace, name)  # an older pod of the same name
        self._uids[key] = uid
        if pod["metadata"].get("deletionTimestamp"):
            return await self._terminating(pod)
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return await self._finished(pod)
        if FINALIZER not in (pod["metadata"].get("finalizers") or []):
            pod["metadata"]["finalizers"] = [*(pod["metadata"].get("finalizers") or []), FINALIZER]
            pod = await self.store.update(pod)
        return await self._run_pod(pod)

    async def _run_pod(self, pod: Obj) -> Result | None:
        now = time.time()
        status = pod.get("status") or {}
        start_time = _parse_ts(status.get("startTime")) or now
        deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
        if deadline is not None and now >= start_time + int(deadline):
            return await self._deadline_exceeded(pod)
        wake: list[float] = []
        if deadline is not None:
            wake.append(start_time + int(deadline) - now)
        uid = pod["metadata"]["uid"]
        initialized = True
        init_statuses = []
        for container in pod["spec"].get("initContainers") or []:
            if not initialized:
                init_statuses.append(self._container_status(pod, container, None, init=True))
                continue
            state = await self._drive(pod, container, wake, init=True)
            init_statuses.append(self._container_status(pod, container, state, init=True))
            initialized = isinstance(state, Exited) and state.exit_code == 0
        statuses = []
        for container in pod["spec"]["containers"]:
            state = await self._drive(pod, container, wake) if initialized else None
            statuses.append(self._container_status(pod, container, state))
            if isinstance(state, Running):
                self._ensure_probers(pod, container, state)
        self._cancel_stale_probers(uid)
        await self._write_status(pod, self._pod_status(pod, init_statuses, statuses, initialized,
                                                       start_time))
        future = [w for w in wake if w > 0]
        return Result(requeue_after=min(future)) if future else None

    async def _drive(self, pod: Obj, container: Obj, wake: list[float], *, init: bool = False) -> ContainerState | None:
        """Bring one container towards running (or done); returns its state afterwards."""
        uid, name = pod["metadata"]["uid"], container["name"]
        state = self.runtime.status(uid, name)
        if isinstance(state, Running) or uid in self._stopping:
            return state
        if state is None:
            started = await self._start(pod, container, 0, wake)
            self._plan_restart_if_exited(pod, name, started, wake, init=init)
            return started
        if not self._should_restart(pod, state, init=init):
            return state
        backoff = self._backoff_for(pod, name, state)
        now = time.time()
        if now < backoff.restart_at:
            wake.append(backoff.restart_at - now)
            return state
        self._last_exit[(uid, name)] = state
        started = await self._start(pod, container, state.attempt + 1, wake)
        self._plan_restart_if_exited(pod, name, started, wake, init=init)
        return started

    def _plan_restart_if_exited(self, pod: Obj, name: str, state: ContainerState | None, wake: list[float], *,
                                init: bool) -> None:
        """A container can exit before its start returns (a fast crash): plan its restart now,
        so its status shows the back-off and the pod is looked at again when it is due."""
        if not isinstance(state, Exited) or not self._should_restart(pod, state, init=init):
            return
        backoff = self._backoff_for(pod, name, state)
        wake.append(max(backoff.restart_at - time.time(), MIN_REQUEUE_SECONDS))

    def _should_restart(self, pod: Obj, state: Exited, *, init: bool) -> bool:
        policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        if init:
            return state.exit_code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and state.exit_code != 0)

    def _backoff_for(self, pod: Obj, name: str, state: Exited) -> _Backoff:
        """First restart at once, then 1 s doubling to 5 min; a run of 10 min resets it."""
        key = (pod["metadata"]["uid"], name)
        backoff = self._backoff.setdefault(key, _Backoff())
        if backoff.handled_attempt == state.attempt:
            return backoff
        backoff.handled_attempt = state.attempt
        ran = state.finished_at - state.started_at if state.started_at is not None else 0.0
        if ran >= BACKOFF_RESET_SECONDS:
            backoff.streak = 0
        backoff.delay = 0.0 if backoff.streak == 0 else min(
            INITIAL_BACKOFF_SECONDS * 2 ** (backoff.streak - 1), MAX_BACKOFF_SECONDS)
        backoff.streak += 1
        backoff.restart_at = max(state.finished_at, time.time() - 0.001) + backoff.delay \
            if backoff.delay else 0.0
        if backoff.delay:
            self._spawn_event(pod, "Warning", "BackOff", f"Back-off restarting failed container {name} in pod "
                              f"{pod['metadata']['name']}_{pod['metadata'].get('namespace')}({key[0]})")
        return backoff

    async def _start(self, pod: Obj, container: Obj, attempt: int, wake: list[float]) -> ContainerState | None:
        meta = pod["metadata"]
        uid, name = meta["uid"], container["name"]
        try:
            argv, env, cwd = await self._container_config(pod, container)
        except ContainerConfigError as error:
            self._waiting[(uid, name)] = (error.reason, error.message)
            await self.recorder.record(pod, "Warning", "Failed", f"Error: {error.message}")
            wake.append(CONFIG_RETRY_SECONDS)
            return self.runtime.status(uid, name)
        spec = ContainerSpec(pod_uid=uid, namespace=meta.get("namespace") or "", pod_name=meta["name"],
                             container=name, argv=argv, env=env, working_dir=cwd, attempt=attempt)
        try:
            handle = await self.runtime.start(spec)
        except ContainerStartError as error:
            self._waiting[(uid, name)] = ("RunContainerError", str(error))
            await self.recorder.record(pod, "Warning", "Failed", f"Error: {error}")
            wake.append(CONFIG_RETRY_SECONDS)
            return self.runtime.status(uid, name)
        self._waiting.pop((uid, name), None)
        self._launches[(uid, name, attempt)] = _Launch(env=env, cwd=cwd, ports=_named_ports(container))
        if isinstance(handle.state, Exited) and handle.state.reason == "StartError":
            await self.recorder.record(pod, "Warning", "Failed", f"Error: {handle.state.message}")
        else:
            await self.recorder.record(pod, "Normal", "Started", f"Started container {name}")
        return handle.state

    # ---- container configuration ---------------------------------------------------------------

    async def _container_config(self, pod: Obj, container: Obj) -> tuple[list[str], dict[str, str], str]:
        name = container["name"]
        command = list(container.get("command") or [])
        if not command:
            image = container.get("image") or "(none)"
            raise ContainerConfigError(
                "CreateContainerError",
                f"container {name} has no command: embedded mode runs a container's command on this "
                f"machine and does not run images (image {image} is ignored); set command")
        env = await self.resolve_env(pod, container)
        argv = [expand_references(part, env) for part in [*command, *(container.get("args") or [])]]
        meta = pod["metadata"]
        cwd = container.get("workingDir") or str(
            pod_dir(self.runtime.pods_root, meta.get("namespace") or "", meta["name"], meta["uid"]))
        return argv, env, cwd

    async def resolve_env(self, pod: Obj, container: Obj) -> dict[str, str]:
        """The container's environment: the agent's base (PATH, HOSTNAME), then envFrom, then
        env (later wins), with $(VAR) references expanded as Kubernetes does."""
        namespace = pod["metadata"].get("namespace") or "default"
        env: dict[str, str] = {**self.base_env, "HOSTNAME": pod["metadata"]["name"]}
        sources: dict[tuple[str, str], dict[str, str] | None] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            for kind, ref in (("Secret", source.get("secretRef")), ("ConfigMap", source.get("configMapRef"))):
                if not ref:
                    continue
                data = await self._source_data(kind, ref["name"], namespace, sources)
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise ContainerConfigError("CreateContainerConfigError",
                                               f'{kind.lower()} "{ref["name"]}" not found')
                for key, value in data.items():
                    if _ENV_NAME.match(prefix + key):
                        env[prefix + key] = value
        for var in container.get("env") or []:
            resolved = await self._env_value(pod, var, namespace, sources, env)
            if resolved is not None:
                env[var["name"]] = resolved
        return env

    async def _env_value(self, pod: Obj, var: Obj, namespace: str,
                         sources: dict[tuple[str, str], dict[str, str] | None], env: Mapping[str, str]) -> str | None:
        if "valueFrom" not in var or not var["valueFrom"]:
            return expand_references(str(var.get("value") or ""), env)
        source = var["valueFrom"]
        for kind, ref in (("Secret", source.get("secretKeyRef")), ("ConfigMap", source.get("configMapKeyRef"))):
            if not ref:
                continue
            data = await self._source_data(kind, ref["name"], namespace, sources)
            if data is None:
                if ref.get("optional"):
                    return None
                raise ContainerConfigError("CreateContainerConfigError", f'{kind.lower()} "{ref["name"]}" not found')
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise ContainerConfigError(
                    "CreateContainerConfigError",
                    f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
            return data[ref["key"]]
        if source.get("fieldRef"):
            return self._field_value(pod, str(source["fieldRef"].get("fieldPath") or ""))
        raise ContainerConfigError("CreateContainerConfigError",
                                   f"env {var['name']}: only secretKeyRef, configMapKeyRef and fieldRef "
                                   "are supported in embedded mode")

    async def _source_data(self, kind: str, name: str, namespace: str,
                           cache: dict[tuple[str, str], dict[str, str] | None]) -> dict[str, str] | None:
        if (kind, name) in cache:
            return cache[(kind, name)]
        rt = self._secrets_rt if kind == "Secret" else self._configmaps_rt
        try:
            obj = await self.store.get(rt, name, namespace)
        except NotFoundError:
            cache[(kind, name)] = None
            return None
        data: dict[str, str] = {}
        if kind == "Secret":
            for key, encoded in (obj.get("data") or {}).items():
                try:
                    data[key] = base64.b64decode(encoded).decode("utf-8", errors="replace")
                except (binascii.Error, ValueError):
                    continue
            for key, value in (obj.get("stringData") or {}).items():
                data[key] = value
        else:
            data.update(obj.get("data") or {})
            for key, encoded in (obj.get("binaryData") or {}).items():
                with contextlib.suppress(binascii.Error, ValueError):
                    data[key] = base64.b64decode(encoded).decode("utf-8", errors="replace")
        cache[(kind, name)] = data
        return data

    def _field_value(self, pod: Obj, path: str) -> str:
        meta = pod["metadata"]
        simple = {
            "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"), "spec.nodeName": self.node_name,
            "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName") or "default",
            "status.podIP": POD_IP, "status.hostIP": POD_IP, "status.podIPs": POD_IP, "status.hostIPs": POD_IP,
        }
        if path in simple:
            return str(simple[path] or "")
        subscript = _FIELD_SUBSCRIPT.match(path)
        if subscript:
            return str((meta.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            values = meta.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        raise ContainerConfigError("CreateContainerConfigError", f"unsupported fieldPath: {path}")

    # ---- probes ---------------------------------------------------------------------------------

    def _ensure_probers(self, pod: Obj, container: Obj, state: Running) -> None:
        uid, name = pod["metadata"]["uid"], container["name"]
        for kind in ("startup", "readiness", "liveness"):
            probe = container.get(f"{kind}Probe")
            key = (uid, name, state.attempt, kind)
            if not probe or key in self._probers:
                continue
            self._probers[key] = asyncio.create_task(self._probe_loop(pod, container, state.attempt, kind, probe),
                                                     name=f"probe-{kind}-{name}")

    def _cancel_stale_probers(self, uid: str) -> None:
        for key, task in list(self._probers.items()):
            if key[0] != uid:
                continue
            state = self.runtime.status(uid, key[1])
            if not isinstance(state, Running) or state.attempt != key[2]:
                task.cancel()
                del self._probers[key]

    async def _probe_loop(self, pod: Obj, container: Obj, attempt: int, kind: str, probe: Obj) -> None:
        meta = pod["metadata"]
        uid, name = meta["uid"], container["name"]
        pod_key = (meta.get("namespace") or "", meta["name"])
        timing = ProbeTiming.of(probe)
        counter = ProbeCounter(timing, initial=True if kind == "liveness" else None)
        instance = (uid, name, attempt)
        if kind == "startup":
            self._started[instance] = False
        launch = self._launches.get(instance) or await self._relaunch_info(pod, container)
        await asyncio.sleep(timing.initial_delay)
        while True:
            if kind != "startup" and not self._started.get(instance, True):
                await asyncio.sleep(min(timing.period, 1.0))  # liveness and readiness wait for startup
                continue
            outcome = await run_probe(probe, named_ports=launch.ports, env=launch.env, cwd=launch.cwd)
            changed = counter.record(outcome.success)
            if not outcome.success:
                await self.recorder.record(pod, "Warning", "Unhealthy",
                                           f"{kind.capitalize()} probe failed: {outcome.message}")
            if changed and kind == "readiness":
                self._ready[instance] = bool(counter.verdict)
                self.queue.add(pod_key)
            if changed and kind == "startup" and counter.verdict:
                self._started[instance] = True
                self.queue.add(pod_key)
                return
            if changed and counter.verdict is False and kind in ("liveness", "startup"):
                await self.recorder.record(pod, "Normal", "Killing",
                                           f"Container {name} failed {kind} probe, will be restarted")
                await self.runtime.stop(uid, name, self._grace(pod))
                self.queue.add(pod_key)
                return
            await asyncio.sleep(timing.period)

    async def _relaunch_info(self, pod: Obj, container: Obj) -> _Launch:
        """After an adoption we no longer hold the environment in memory: resolve it again."""
        try:
            _, env, cwd = await self._container_config(pod, container)
        except ContainerConfigError:
            env, cwd = dict(self.base_env), None
        return _Launch(env=env, cwd=cwd, ports=_named_ports(container))

    # ---- status -----------------------------------------------------------------------------

    def _container_status(self, pod: Obj, container: Obj, state: ContainerState | None, *,
                          init: bool = False) -> Obj:
        uid, name = pod["metadata"]["uid"], container["name"]
        previous = _previous_status(pod, name, init)
        status: Obj = {"name": name, "image": container.get("image") or "", "imageID": "",
                       "ready": False, "restartCount": 0, "started": False}
        last = self._last_exit.get((uid, name))
        if state is not None:
            status["restartCount"] = state.attempt
            status["containerID"] = f"capstan://{uid}/{name}/{state.attempt}"
        if last is not None and state is not None and last.attempt < state.attempt:
            status["lastState"] = {"terminated": _terminated(last)}
        elif previous.get("lastState") and previous.get("restartCount") == status["restartCount"]:
            status["lastState"] = previous["lastState"]
        waiting = self._waiting.get((uid, name))
        if isinstance(state, Running):
            instance = (uid, name, state.attempt)
            started = self._started.get(instance, True)
            ready = started and self._ready.get(instance, not container.get("readinessProbe"))
            status.update(state={"running": {"startedAt": _ts(state.started_at)}}, started=started,
                          ready=bool(ready) and not init)
        elif waiting is not None:
            status["state"] = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        elif isinstance(state, Exited):
            backoff = self._backoff.get((uid, name))
            if self._should_restart(pod, state, init=init) and backoff is not None and backoff.restart_at:
                meta = pod["metadata"]
                status["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                    f"back-off {backoff.delay:g}s restarting failed container={name} "
                    f"pod={meta['name']}_{meta.get('namespace')}({uid})")}}
                status["lastState"] = {"terminated": _terminated(state)}
            else:
                status["state"] = {"terminated": _terminated(state)}
        else:
            reason = "PodInitializing" if not init and pod["spec"].get("initContainers") else "ContainerCreating"
            status["state"] = {"waiting": {"reason": reason}}
        return status

    def _pod_status(self, pod: Obj, init_statuses: list[Obj], statuses: list[Obj], initialized: bool,
                    start_time: float) -> Obj:
        old = dict(pod.get("status") or {})
        now = rfc3339(self.clock())
        phase = _phase(pod, init_statuses, statuses, initialized)
        ready = phase == "Running" and all(s["ready"] for s in statuses)
        conditions = old.get("conditions")
        conditions = set_condition(conditions, "PodScheduled", "True", now)
        if initialized:
            conditions = set_condition(conditions, "Initialized", "True", now)
        else:
            conditions = set_condition(conditions, "Initialized", "False", now, reason="ContainersNotInitialized",
                                       message=f"containers with incomplete status: "
                                       f"{_names(s for s in init_statuses if not _succeeded(s))}")
        if ready:
            conditions = set_condition(conditions, "ContainersReady", "True", now)
            conditions = set_condition(conditions, "Ready", "True", now)
        else:
            reason = "PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady"
            message = None if reason == "PodCompleted" else (
                f"containers with unready status: {_names(s for s in statuses if not s['ready'])}")
            conditions = set_condition(conditions, "ContainersReady", "False", now, reason=reason, message=message)
            conditions = set_condition(conditions, "Ready", "False", now, reason=reason, message=message)
        status: Obj = {"phase": phase, "conditions": conditions, "hostIP": POD_IP, "hostIPs": [{"ip": POD_IP}],
                       "podIP": POD_IP, "podIPs": [{"ip": POD_IP}], "startTime": _ts(start_time),
                       "containerStatuses": statuses, "qosClass": _qos_class(pod)}
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        return status

    async def _write_status(self, pod: Obj, status: Obj) -> Obj:
        desired = self._pods_rt.normalize({**pod, "status": status})
        if desired.get("status") == pod.get("status"):
            return pod
        return await self.store.update_status(desired)

    # ---- ending pods ------------------------------------------------------------------------------

    async def _deadline_exceeded(self, pod: Obj) -> Result | None:
        message = "Pod was active on the node longer than the specified deadline"
        await self.recorder.record(pod, "Normal", "DeadlineExceeded", message)
        status = dict(pod.get("status") or {})
        status.update(phase="Failed", reason="DeadlineExceeded", message=message)
        await self._write_status(pod, status)
        self._stop_in_background(pod)
        return None

    async def _finished(self, pod: Obj) -> Result | None:
        """A pod in a terminal phase: make sure nothing of it runs, report the containers'
        final states, then let it go (drop the finalizer)."""
        uid = pod["metadata"]["uid"]
        if any(isinstance(self.runtime.status(uid, c), Running) for c in self.runtime.containers_of(uid)):
            self._stop_in_background(pod)
            return None
        if uid in self._stopping:
            return None
        self._cancel_stale_probers(uid)
        status = dict(pod.get("status") or {})
        status["containerStatuses"] = [
            self._final_status(pod, c) for c in pod["spec"]["containers"]]
        pod = await self._write_status(pod, status)
        await self._drop_finalizer(pod)
        return None

    def _final_status(self, pod: Obj, container: Obj) -> Obj:
        state = self.runtime.status(pod["metadata"]["uid"], container["name"])
        status = self._container_status(pod, container, state)
        if isinstance(state, Exited):
            status["state"] = {"terminated": _terminated(state)}
        status["ready"] = False
        return status

    async def _terminating(self, pod: Obj) -> Result | None:
        """A deleted pod: stop its containers with the grace period, then drop the finalizer."""
        uid = pod["metadata"]["uid"]
        running = [c for c in self.runtime.containers_of(uid) if isinstance(self.runtime.status(uid, c), Running)]
        if running:
            self._stop_in_background(pod)
            return None
        if uid in self._stopping:
            return None
        self._cancel_stale_probers(uid)
        if FINALIZER in (pod["metadata"].get("finalizers") or []):
            status = dict(pod.get("status") or {})
            if status.get("phase") not in ("Succeeded", "Failed"):
                codes = [s.exit_code for c in pod["spec"]["containers"]
                         if isinstance(s := self.runtime.status(uid, c["name"]), Exited)]
                status["phase"] = "Succeeded" if codes and all(code == 0 for code in codes) else "Failed"
            status["containerStatuses"] = [self._final_status(pod, c) for c in pod["spec"]["containers"]]
            with contextlib.suppress(NotFoundError):
                pod = await self._write_status(pod, status)
            await self._drop_finalizer(pod)
        return None

    def _stop_in_background(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if uid in self._stopping:
            return
        key = (meta.get("namespace") or "", meta["name"])
        grace = self._grace(pod)

        async def stop() -> None:
            try:
                for container in self.runtime.containers_of(uid):
                    if isinstance(self.runtime.status(uid, container), Running):
                        await self.recorder.record(pod, "Normal", "Killing", f"Stopping container {container}")
                await self.runtime.stop_pod(uid, grace)
            finally:
                self._stopping.pop(uid, None)
                self.queue.add(key)

        self._stopping[uid] = asyncio.create_task(stop(), name=f"stop-{meta['name']}")

    async def _drop_finalizer(self, pod: Obj) -> None:
        finalizers = pod["metadata"].get("finalizers") or []
        if FINALIZER not in finalizers:
            return
        pod["metadata"]["finalizers"] = [f for f in finalizers if f != FINALIZER]
        with contextlib.suppress(NotFoundError):
            await self.store.update(pod)

    async def _teardown(self, uid: str, namespace: str, name: str) -> None:
        """The pod is gone (or not ours): no process of it may survive; forget its records and logs."""
        task = self._stopping.get(uid)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await self.runtime.stop_pod(uid, 0)
        await asyncio.to_thread(self.runtime.kill_pod, uid)
        for store in (self._backoff, self._waiting, self._last_exit, self._seen):
            for key in [k for k in store if k[0] == uid]:
                del store[key]
        for memory in (self._launches, self._ready, self._started):
            for instance in [k for k in memory if k[0] == uid]:
                del memory[instance]
        for probe_key, prober in list(self._probers.items()):
            if probe_key[0] == uid:
                prober.cancel()
                del self._probers[probe_key]
        shutil.rmtree(pod_dir(self.runtime.pods_root, namespace, name, uid), ignore_errors=True)

    def _grace(self, pod: Obj) -> float:
        spec_grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return float(DEFAULT_GRACE_SECONDS if spec_grace is None else spec_grace)

    def _spawn_event(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        task = asyncio.get_running_loop().create_task(
            self.recorder.record(pod, "Warning" if kind == "Warning" else "Normal", reason, message))
        task.add_done_callback(_ignore_result)


# ---- helpers ------------------------------------------------------------------------------------

def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), ApiError):
        log.warning("recording an event failed: %r", task.exception())


def _named_ports(container: Obj) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}


def _previous_status(pod: Obj, name: str, init: bool) -> Obj:
    field_name = "initContainerStatuses" if init else "containerStatuses"
    for status in (pod.get("status") or {}).get(field_name) or []:
        if status.get("name") == name:
            return dict(status)
    return {}


def _terminated(state: Exited) -> Obj:
    terminated: Obj = {"exitCode": state.exit_code, "reason": state.reason,
                       "startedAt": _ts(state.started_at), "finishedAt": _ts(state.finished_at)}
    if state.signal is not None:
        terminated["signal"] = state.signal
    if state.message:
        terminated["message"] = state.message
    return terminated


def _succeeded(status: Obj) -> bool:
    return ((status.get("state") or {}).get("terminated") or {}).get("exitCode") == 0


def _names(statuses: Any) -> str:
    return "[" + " ".join(s["name"] for s in statuses) + "]"


def _phase(pod: Obj, init_statuses: list[Obj], statuses: list[Obj], initialized: bool) -> str:
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    if not initialized:
        failed_init = any((s.get("state") or {}).get("terminated", {}).get("exitCode", 0) != 0
                          for s in init_statuses if (s.get("state") or {}).get("terminated"))
        return "Failed" if failed_init and policy == "Never" else "Pending"
    states = [s.get("state") or {} for s in statuses]
    if all("terminated" in s for s in states):
        succeeded = all(s["terminated"].get("exitCode") == 0 for s in states)
        # As the kubelet: a container that will be restarted keeps the pod Running, even in
        # the instant between its exit and its restart.
        if policy == "Always" or (policy == "OnFailure" and not succeeded):
            return "Running"
        return "Succeeded" if succeeded else "Failed"
    if any("running" in s for s in states) or any(
            "waiting" in s and (st.get("lastState") or {}).get("terminated") for s, st in zip(states, statuses,
                                                                                          strict=True)):
        return "Running"
    if policy != "Always" and any("terminated" in s for s in states):
        return "Running"
    return "Pending"


def _qos_class(pod: Obj) -> str:
    containers = pod["spec"]["containers"]
    requests_any = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        if limits or requests:
            requests_any = True
        for resource in ("cpu", "memory"):
            if resource not in limits or str(requests.get(resource, limits[resource])) != str(limits[resource]):
                guaranteed = False
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if requests_any else "BestEffort"
