"""The process runtime against real processes: start, exit codes, stop with grace, process
groups, log rotation, adoption by a fresh runtime object and orphan clean-up."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from capstan.runtime.process import ContainerSpec, Exited, ProcessRuntime, Running

PY = sys.executable


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    rt = ProcessRuntime(tmp_path / "runtime", tmp_path / "pods")
    yield rt
    rt.kill_orphans(keep=set())


def spec(uid: str, code: str, *, container: str = "main", env: dict[str, str] | None = None,
         cwd: str | None = None, attempt: int = 0) -> ContainerSpec:
    return ContainerSpec(pod_uid=uid, namespace="default", pod_name=f"pod-{uid}", container=container,
                         argv=[PY, "-u", "-c", textwrap.dedent(code)], env=env or {}, working_dir=cwd,
                         attempt=attempt)


async def eventually(check: Callable[[], object], within: float = 20.0) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def exited(rt: ProcessRuntime, uid: str, container: str = "main") -> Exited:
    state = await eventually(lambda: isinstance(s := rt.status(uid, container), Exited) and s)
    assert isinstance(state, Exited)
    return state


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_exit_codes_and_reasons(runtime: ProcessRuntime) -> None:
    await runtime.start(spec("ok", "print('done')"))
    await runtime.start(spec("bad", "import sys; sys.exit(3)"))
    ok, bad = await exited(runtime, "ok"), await exited(runtime, "bad")
    assert (ok.exit_code, ok.signal, ok.reason) == (0, None, "Completed")
    assert (bad.exit_code, bad.signal, bad.reason) == (3, None, "Error")
    assert bad.started_at is not None and bad.started_at <= bad.finished_at


async def test_environment_is_exactly_as_given_plus_markers(runtime: ProcessRuntime, tmp_path: Path) -> None:
    code = """
        import json, os, sys
        print(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "stdin": sys.stdin.read()}))
    """
    await runtime.start(spec("env", code, env={"GREETING": "hello"}, cwd=str(tmp_path)))
    await exited(runtime, "env")
    import json
    output = json.loads(runtime.log_path("default", "pod-env", "env", "main").read_text())
    env = output["env"]
    env.pop("LC_CTYPE", None)  # the interpreter may add this one itself
    assert env == {"GREETING": "hello", "CAPSTAN_POD_UID": "env", "CAPSTAN_CONTAINER": "main",
                   "CAPSTAN_RUNTIME_DIR": str(runtime.state_dir)}
    assert output["cwd"] == str(tmp_path)
    assert output["stdin"] == ""


async def test_missing_executable_is_a_start_error(runtime: ProcessRuntime) -> None:
    handle = await runtime.start(ContainerSpec("nx", "default", "p", "main", ["no-such-binary-xyz"]))
    assert isinstance(handle.state, Exited)
    assert handle.state.reason == "StartError"
    assert handle.state.exit_code == 128
    assert "no-such-binary-xyz" in (handle.state.message or "")


async def test_starting_a_running_container_again_does_not_duplicate_it(runtime: ProcessRuntime) -> None:
    first = await runtime.start(spec("dup", "import time; time.sleep(60)"))
    second = await runtime.start(spec("dup", "import time; time.sleep(60)"))
    assert isinstance(first.state, Running) and isinstance(second.state, Running)
    assert first.state.pid == second.state.pid


async def test_stop_sends_sigterm_and_the_program_may_exit_cleanly(runtime: ProcessRuntime) -> None:
    code = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: (print('bye'), sys.exit(0)))
        print('ready')
        time.sleep(60)
    """
    await runtime.start(spec("term", code))
    log = runtime.log_path("default", "pod-term", "term", "main")
    await eventually(lambda: log.exists() and "ready" in log.read_text())
    state = await runtime.stop("term", "main", grace_seconds=20)
    assert isinstance(state, Exited)
    assert (state.exit_code, state.reason) == (0, "Completed")
    assert "bye" in log.read_text()


async def test_stop_kills_the_whole_group_after_the_grace_period(runtime: ProcessRuntime, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """
    await runtime.start(spec("stubborn", code))
    await eventually(lambda: pid_file.exists() and pid_file.read_text())
    grandchild = int(pid_file.read_text())
    loop = asyncio.get_running_loop()
    began = loop.time()
    state = await runtime.stop("stubborn", "main", grace_seconds=0.5)
    assert loop.time() - began >= 0.5
    assert isinstance(state, Exited)
    assert (state.exit_code, state.signal) == (137, 9)
    await eventually(lambda: not pid_alive(grandchild))


async def test_leftover_processes_die_with_the_main_process(runtime: ProcessRuntime, tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    code = f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
    """
    await runtime.start(spec("leftover", code))
    assert (await exited(runtime, "leftover")).exit_code == 0
    await eventually(lambda: not pid_alive(int(pid_file.read_text())))


async def test_logs_rotate_by_size_keeping_whole_lines(tmp_path: Path) -> None:
    rt = ProcessRuntime(tmp_path / "runtime", tmp_path / "pods", log_max_bytes=1000, log_keep=2)
    try:
        await rt.start(spec("logs", "for i in range(300): print(f'line {i:04d}')"))  # 10 bytes a line
        await exited(rt, "logs")
        log = rt.log_path("default", "pod-logs", "logs", "main")
        files = sorted(p.name for p in log.parent.iterdir())
        assert files == ["main.log", "main.log.1", "main.log.2"]
        rotated = [log.with_name("main.log.2"), log.with_name("main.log.1"), log]
        for path in rotated:
            assert path.stat().st_size <= 1000
        text = "".join(p.read_text() for p in rotated)
        lines = text.splitlines()
        assert lines[-1] == "line 0299"
        assert all(line.startswith("line ") and len(line) == 9 for line in lines)
        numbers = [int(line[5:]) for line in lines]
        assert numbers == list(range(numbers[0], 300))  # contiguous: nothing lost inside the kept files
    finally:
        rt.kill_orphans(keep=set())


async def test_a_new_runtime_adopts_running_containers_and_their_exit_codes(tmp_path: Path) -> None:
    gate = tmp_path / "finish"
    code = f"""
        import os, sys, time
        while not os.path.exists({str(gate)!r}):
            time.sleep(0.02)
        sys.exit(7)
    """
    first = ProcessRuntime(tmp_path / "runtime", tmp_path / "pods")
    handle = await first.start(spec("adopt", code, attempt=2))
    assert isinstance(handle.state, Running)
    del first  # the agent crashed: nothing in memory survives

    second = ProcessRuntime(tmp_path / "runtime", tmp_path / "pods")
    try:
        [adopted] = second.adopt_all()
        assert (adopted.pod_uid, adopted.container, adopted.attempt) == ("adopt", "main", 2)
        assert isinstance(adopted.state, Running) and adopted.state.pid == handle.state.pid
        again = await second.start(spec("adopt", code, attempt=2))
        assert isinstance(again.state, Running) and again.state.pid == handle.state.pid

        gate.write_text("")
        del second
        third = ProcessRuntime(tmp_path / "runtime", tmp_path / "pods")
        state = await exited(third, "adopt")
        assert (state.exit_code, state.reason, state.attempt) == (7, "Error", 2)
    finally:
        ProcessRuntime(tmp_path / "runtime", tmp_path / "pods").kill_orphans(keep=set())


async def test_kill_orphans_kills_unknown_pods_even_escaped_processes(runtime: ProcessRuntime,
                                                                      tmp_path: Path) -> None:
    pid_file = tmp_path / "escaped.pid"
    code = f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """
    kept = await runtime.start(spec("keep", "import time; time.sleep(60)"))
    orphan = await runtime.start(spec("orphan", code))
    await eventually(lambda: pid_file.exists() and pid_file.read_text())
    escaped = int(pid_file.read_text())
    assert isinstance(orphan.state, Running) and isinstance(kept.state, Running)

    killed = runtime.kill_orphans(keep={"keep"})

    assert orphan.state.pid in killed and escaped in killed
    await eventually(lambda: not pid_alive(escaped) and not pid_alive(orphan.state.pid))
    assert pid_alive(kept.state.pid)
    assert runtime.pod_uids() == ["keep"]


async def test_usage_reports_memory_and_cpu_of_a_busy_pod(runtime: ProcessRuntime) -> None:
    await runtime.start(spec("busy", "x = bytearray(50 * 2**20)\nwhile True: pass"))
    runtime.usage("busy")
    await asyncio.sleep(0.5)
    cpu, memory = runtime.usage("busy")
    assert memory > 50 * 2**20
    assert cpu > 100  # at least a tenth of a core, even on a loaded machine


def test_state_dir_markers_keep_runtimes_apart(tmp_path: Path) -> None:
    first = ProcessRuntime(tmp_path / "a", tmp_path / "pods")
    second = ProcessRuntime(tmp_path / "b", tmp_path / "pods")
    assert first.state_dir != second.state_dir
    assert os.fspath(first.state_dir).endswith("a")
