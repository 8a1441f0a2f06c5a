"""The node agent across Capstan restarts: re-adoption after a crash without duplicates, exit
codes of containers that ended meanwhile, no orphans, and the two graceful-shutdown modes."""

from __future__ import annotations

from pathlib import Path

import psutil
from tests.integration.node_kit import container_status, crash_node, local_node, phase, py, start_node, stop_node


def processes_of(uid: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            environ = process.environ()
            if environ.get("CAPSTAN_POD_UID") == uid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def container_processes(uid: str) -> list[psutil.Process]:
    """The container processes themselves (not their shims)."""
    return [p for p in processes_of(uid) if "capstan.runtime.shim" not in " ".join(p.cmdline())]


async def test_a_crashed_agent_is_replaced_without_duplicates_or_orphans(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with local_node(tmp_path) as node:
        await node.create_pod("steady", py("import time; print('up'); time.sleep(120)"),
                              terminationGracePeriodSeconds=1)
        await node.create_pod("ending", py(f"""
            import os, sys, time
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.05)
            sys.exit(5)
        """), restartPolicy="Never")
        await node.create_pod("doomed", py("import time; time.sleep(120)"))
        steady = await node.wait_pod("steady", lambda p: container_status(p).get("state", {}).get("running"))
        ending = await node.wait_pod("ending", lambda p: container_status(p).get("state", {}).get("running"))
        doomed = await node.wait_pod("doomed", lambda p: container_status(p).get("state", {}).get("running"))
        [steady_process] = container_processes(steady["metadata"]["uid"])
        doomed_pids = [p.pid for p in processes_of(doomed["metadata"]["uid"])]

        await crash_node(node)
        # While Capstan is down: one container ends on its own, one pod is deleted for good.
        gate.write_text("")
        doomed["metadata"]["finalizers"] = []
        await node.store.update(doomed)
        await node.store.delete(node.pods_rt, "doomed", "default")
        assert await node.pod("doomed") is None

        start_node(node)
        ending = await node.wait_pod("ending", lambda p: phase(p) == "Failed", "the exit to be recorded")
        terminated = container_status(ending)["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (5, "Error")
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in map(_process, doomed_pids)
                       if p is not None)
        steady = await node.wait_pod("steady", lambda p: container_status(p).get("state", {}).get("running"))
        assert [p.pid for p in container_processes(steady["metadata"]["uid"])] == [steady_process.pid]
        assert container_status(steady)["restartCount"] == 0
        assert node.log(steady) == "up\n"


async def test_graceful_shutdown_stops_containers_and_the_next_start_restarts_them(tmp_path: Path) -> None:
    async with local_node(tmp_path) as node:
        await node.create_pod("svc", py("import time; print('run'); time.sleep(120)"))
        pod = await node.wait_pod("svc", lambda p: container_status(p).get("state", {}).get("running"))
        uid = pod["metadata"]["uid"]
        assert len(container_processes(uid)) == 1
        await stop_node(node)
        assert container_processes(uid) == []
        start_node(node)
        pod = await node.wait_pod("svc", lambda p: container_status(p).get("restartCount") == 1
                                  and container_status(p).get("state", {}).get("running"), "a restart")
        assert container_status(pod)["lastState"]["terminated"]["exitCode"] == 143
        assert len(container_processes(uid)) == 1


async def test_keep_workloads_leaves_containers_running_for_adoption(tmp_path: Path) -> None:
    async with local_node(tmp_path, keep_workloads=True) as node:
        await node.create_pod("kept", py("import time; time.sleep(120)"), terminationGracePeriodSeconds=1)
        pod = await node.wait_pod("kept", lambda p: container_status(p).get("state", {}).get("running"))
        uid = pod["metadata"]["uid"]
        [before] = container_processes(uid)
        await stop_node(node)
        assert [p.pid for p in container_processes(uid)] == [before.pid]
        start_node(node)
        await node.store.delete(node.pods_rt, "kept", "default")
        await node.wait_gone("kept")
        assert processes_of(uid) == []


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
