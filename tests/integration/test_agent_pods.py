"""The node agent end to end with the SQLite store and real processes: environment, restart
policies and back-off, probes, deletion with grace, deadlines, init containers."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path

import psutil
import pytest
from tests.integration.node_kit import NODE, condition, container_status, local_node, phase, py

SECRET_VALUE = "s3cr3t-hunter2-value"


async def test_environment_from_secrets_config_maps_and_the_downward_api(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with local_node(tmp_path) as node:
        await node.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "default"},
                           "data": {"password": base64.b64encode(SECRET_VALUE.encode()).decode()}})
        await node.create({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "settings", "namespace": "default"},
                           "data": {"LEVEL": "debug", "MODE": "fast", "bad key": "skipped"}})
        env = [
            {"name": "PLAIN", "value": "plain"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "LEVEL_COPY", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
            {"name": "MISSING_OK", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "GREETING", "value": "hello $(POD_NAME) $$(POD_NAME) $(UNDEFINED)"},
        ]
        code = "import json, os, sys; print(json.dumps(dict(os.environ))); print(sys.argv[1])"
        pod = await node.store.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "envy", "namespace": "default", "labels": {"app": "web"},
                         "annotations": {"note": "n1"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "command": [py("")[0], "-c", code], "args": ["arg=$(LEVEL_COPY)"],
                "workingDir": str(tmp_path), "env": env,
                "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]}]}})
        pod = await node.wait_pod("envy", lambda p: phase(p) == "Succeeded", "envy to succeed")
        dumped, argument = node.log(pod).splitlines()
        seen = json.loads(dumped)
        for noise in ("PATH", "LC_CTYPE", "CAPSTAN_RUNTIME_DIR"):
            seen.pop(noise, None)
        assert seen == {
            "HOSTNAME": "envy", "CFG_LEVEL": "debug", "CFG_MODE": "fast", "PLAIN": "plain",
            "PASSWORD": SECRET_VALUE, "LEVEL_COPY": "debug", "POD_NAME": "envy", "POD_NS": "default",
            "POD_UID": pod["metadata"]["uid"], "APP": "web", "NOTE": "n1", "NODE": NODE,
            "POD_IP": "127.0.0.1", "HOST_IP": "127.0.0.1", "GREETING": "hello envy $(POD_NAME) $(UNDEFINED)",
            "CAPSTAN_POD_UID": pod["metadata"]["uid"], "CAPSTAN_CONTAINER": "main",
        }
        assert argument == "arg=debug"
        # The Secret's value is in the container's environment and nowhere else.
        events = await node.events()
        assert events
        assert all(SECRET_VALUE not in json.dumps(event) for event in events)
        assert SECRET_VALUE not in caplog.text
        assert all(SECRET_VALUE not in p.read_text(errors="replace")
                   for p in (tmp_path / "runtime").rglob("*") if p.is_file())


async def test_a_missing_secret_key_waits_with_a_clear_reason_until_it_exists(tmp_path: Path) -> None:
    async with local_node(tmp_path) as node:
        await node.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "default"},
                           "stringData": {"user": "admin"}})
        await node.create_pod("waits", py("import os; print(os.environ['PASSWORD'])"), restartPolicy="Never",
                              container={"env": [{"name": "PASSWORD", "valueFrom": {
                                  "secretKeyRef": {"name": "creds", "key": "password"}}}]})
        pod = await node.wait_pod("waits", lambda p: container_status(p).get("state", {}).get("waiting"))
        assert container_status(pod)["state"]["waiting"] == {
            "reason": "CreateContainerConfigError", "message": "couldn't find key password in Secret default/creds"}
        assert phase(pod) == "Pending"
        failed = [e for e in await node.events("waits") if e["reason"] == "Failed"]
        assert failed[0]["message"] == "Error: couldn't find key password in Secret default/creds"
        assert failed[0]["type"] == "Warning"

        secret = await node.store.get(node.store.registry.lookup("secrets"), "creds", "default")
        secret["stringData"] = {"password": "pw"}
        await node.store.update(secret)
        pod = await node.wait_pod("waits", lambda p: phase(p) == "Succeeded", "the pod to run once the key exists")
        assert node.log(pod) == "pw\n"


async def test_a_container_without_command_cannot_run_in_embedded_mode(tmp_path: Path) -> None:
    async with local_node(tmp_path) as node:
        await node.create_pod("imageonly", None)
        pod = await node.wait_pod("imageonly", lambda p: container_status(p).get("state", {}).get("waiting", {})
                                  .get("reason") == "CreateContainerError")
        message = container_status(pod)["state"]["waiting"]["message"]
        assert "has no command" in message and "embedded mode" in message


async def test_restart_policy_never_and_on_failure(tmp_path: Path) -> None:
    async with local_node(tmp_path) as node:
        await node.create_pod("fails", py("import sys; sys.exit(3)"), restartPolicy="Never")
        await node.create_pod("succeeds", py("pass"), restartPolicy="OnFailure")
        failed = await node.wait_pod("fails", lambda p: phase(p) == "Failed")
        terminated = container_status(failed)["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
        assert container_status(failed)["restartCount"] == 0
        ok = await node.wait_pod("succeeds", lambda p: phase(p) == "Succeeded")
        assert container_status(ok)["state"]["terminated"]["reason"] == "Completed"
        assert condition(ok, "Ready")["reason"] == "PodCompleted"


async def test_crash_loop_backs_off_first_at_once_then_doubling(tmp_path: Path) -> None:
    async with local_node(tmp_path) as node:
        await node.create_pod("crashy", py("import sys; print('boom'); sys.exit(1)"))  # restartPolicy Always
        pod = await node.wait_pod("crashy", lambda p: container_status(p).get("restartCount", 0) >= 3
                                  and "waiting" in container_status(p).get("state", {}), "three restarts")
        status = container_status(pod)
        assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert status["state"]["waiting"]["message"].startswith(f"back-off {2 ** (status['restartCount'] - 1)}s "
                                                                "restarting failed container=main pod=crashy_default(")
        assert status["lastState"]["terminated"]["exitCode"] == 1
        assert phase(pod) == "Running"
        back_offs = [e for e in await node.events("crashy") if e["reason"] == "BackOff"]
        assert back_offs and back_offs[0]["type"] == "Warning"
        assert back_offs[0]["message"].startswith("Back-off restarting failed container main in pod crashy_default(")
        assert node.log(pod).count("boom") >= 3


async def test_restart_delays_grow(tmp_path: Path) -> None:
    """Record when each restart happens: the first is immediate, then 1 s, then 2 s."""
    async with local_node(tmp_path) as node:
        await node.create_pod("timed", py("import sys; sys.exit(2)"))
        loop = asyncio.get_running_loop()
        seen: dict[int, float] = {}
        deadline = loop.time() + 60
        while len(seen) < 4 and loop.time() < deadline:
            assert node.agent is not None
            pod = await node.pod("timed")
            assert pod is not None
            state = node.runtime.status(pod["metadata"]["uid"], "main")
            if state is not None:
                seen.setdefault(state.attempt, loop.time())
            await asyncio.sleep(0.02)
        assert sorted(seen) == [0, 1, 2, 3]
        assert seen[2] - seen[1] >= 0.9
        assert seen[3] - seen[2] >= 1.9


async def test_readiness_probe_gates_ready(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    async with local_node(tmp_path) as node:
        check = f"import os, sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 1)"
        probe = {"exec": {"command": [py("")[0], "-c", check]}, "periodSeconds": 1, "failureThreshold": 1}
        await node.create_pod("gated", py("import time; time.sleep(60)"), container={"readinessProbe": probe},
                              terminationGracePeriodSeconds=1)
        pod = await node.wait_pod("gated", lambda p: container_status(p).get("state", {}).get("running"))
        assert condition(pod, "Ready")["status"] == "False"
        assert phase(pod) == "Running"
        flag.write_text("")
        pod = await node.wait_pod("gated", lambda p: condition(p, "Ready").get("status") == "True", "ready")
        assert container_status(pod)["ready"] is True
        flag.unlink()
        await node.wait_pod("gated", lambda p: condition(p, "Ready").get("status") == "False", "unready again")


async def test_http_readiness_probe_on_a_named_port(tmp_path: Path) -> None:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with local_node(tmp_path) as node:
        await node.create_pod("web", [py("")[0], "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              container={"ports": [{"name": "http", "containerPort": port}],
                                         "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                                            "periodSeconds": 1}},
                              terminationGracePeriodSeconds=1)
        await node.wait_pod("web", lambda p: condition(p, "Ready").get("status") == "True", "http ready")


async def test_liveness_failure_kills_and_restarts(tmp_path: Path) -> None:
    alive = tmp_path / "alive"
    alive.write_text("")
    async with local_node(tmp_path) as node:
        probe = {"exec": {"command": ["test", "-f", str(alive)]}, "periodSeconds": 1, "failureThreshold": 2}
        await node.create_pod("sick", py("import time; time.sleep(60)"), container={"livenessProbe": probe},
                              terminationGracePeriodSeconds=1)
        await node.wait_pod("sick", lambda p: container_status(p).get("state", {}).get("running"))
        alive.unlink()
        pod = await node.wait_pod("sick", lambda p: container_status(p).get("restartCount", 0) >= 1, "a restart")
        events = {(e["reason"], e["message"]) for e in await node.events("sick")}
        assert ("Killing", "Container main failed liveness probe, will be restarted") in events
        assert any(reason == "Unhealthy" and message.startswith("Liveness probe failed: command exited with 1")
                   for reason, message in events)
        assert container_status(pod)["lastState"]["terminated"]["signal"] == 15


async def test_deletion_waits_for_the_grace_period_then_kills_the_group(tmp_path: Path) -> None:
    async with local_node(tmp_path) as node:
        code = """
            import signal, subprocess, sys, time
            signal.signal(signal.SIGTERM, lambda *a: print('ignoring SIGTERM'))
            subprocess.Popen([sys.executable, "-c",
                              "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
            print('started')
            time.sleep(60)
        """
        pod = await node.create_pod("stubborn", py(code), terminationGracePeriodSeconds=2)
        pod = await node.wait_pod("stubborn", lambda p: "started" in node.log(p))
        assert "capstan.io/node-agent" in pod["metadata"]["finalizers"]
        uid = pod["metadata"]["uid"]
        pids = [p.pid for p in psutil.process_iter() if _marker(p) == uid]
        assert len(pids) >= 2  # the process and its child (and the shim)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await node.store.delete(node.pods_rt, "stubborn", "default")
        terminating = await node.pod("stubborn")
        assert terminating is not None and terminating["metadata"].get("deletionTimestamp")
        await node.wait_gone("stubborn")
        assert loop.time() - began >= 1.9
        assert not any(_alive(pid) for pid in pids)


async def test_active_deadline_fails_the_pod_and_stops_it(tmp_path: Path) -> None:
    async with local_node(tmp_path) as node:
        await node.create_pod("late", py("import time; time.sleep(60)"), activeDeadlineSeconds=1,
                              terminationGracePeriodSeconds=1)
        pod = await node.wait_pod("late", lambda p: phase(p) == "Failed"
                                  and "terminated" in container_status(p).get("state", {}), "deadline")
        assert pod["status"]["reason"] == "DeadlineExceeded"
        assert pod["status"]["message"] == "Pod was active on the node longer than the specified deadline"
        assert container_status(pod)["state"]["terminated"]["exitCode"] == 143
        assert not any(_marker(p) == pod["metadata"]["uid"] for p in psutil.process_iter())


async def test_init_containers_run_first_in_order(tmp_path: Path) -> None:
    out = tmp_path / "order"
    async with local_node(tmp_path) as node:
        await node.store.create({"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": "ordered", "namespace": "default"},
                                 "spec": {"restartPolicy": "Never", "initContainers": [
                                     {"name": "one", "command": py(f"open({str(out)!r}, 'a').write('one ')")},
                                     {"name": "two", "command": py(f"open({str(out)!r}, 'a').write('two ')")}],
                                     "containers": [{"name": "main", "command": py(
                                         f"open({str(out)!r}, 'a').write('main')")}]}})
        pod = await node.wait_pod("ordered", lambda p: phase(p) == "Succeeded")
        assert out.read_text() == "one two main"
        assert condition(pod, "Initialized")["status"] == "True"
        assert [s["state"]["terminated"]["exitCode"] for s in pod["status"]["initContainerStatuses"]] == [0, 0]


def _marker(process: psutil.Process) -> str | None:
    try:
        return process.environ().get("CAPSTAN_POD_UID")
    except (psutil.Error, OSError):
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
