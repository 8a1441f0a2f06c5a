"""Runs a real `capstan server` process for end-to-end tests and talks to it like a user.

The server is started as a separate OS process (as users run it) so tests can kill -9 it,
restart it on the same data directory, and inspect the container processes it leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

LISTENING = re.compile(r"listening on (http://[0-9.]+:[0-9]+)")


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05,
             message: str = "condition") -> Any:
    """Poll until ``predicate`` returns something truthy; fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {last!r}")


@dataclass
class CapstanServer:
    data_dir: Path
    cpu: str | None = None
    memory: str | None = None
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "server.log"

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "capstan.cli.main", "server", "--data-dir", str(self.data_dir),
                "--port", "0", *self.extra_args]
        if self.cpu:
            args += ["--cpu", self.cpu]
        if self.memory:
            args += ["--memory", self.memory]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        offset = 0

        def listening() -> str | None:
            nonlocal offset
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"capstan server exited early:\n{self.log_path.read_text()[-3000:]}")
            found = LISTENING.findall(self.log_path.read_text())
            return found[-1] if found and len(found) > offset else None

        offset = len(LISTENING.findall(self.log_path.read_text())) if self.log_path.exists() else 0
        self.url = wait_for(listening, timeout=timeout, message="the server to listen")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # ---- talking to it --------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.data_dir / "config.yaml"

    @property
    def token(self) -> str:
        return str(yaml.safe_load(self.config_path.read_text())["token"])

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSTAN_")}
        env["CAPSTAN_CONFIG"] = str(self.config_path)
        return env

    def cli(self, *args: str, check: bool = True, stdin: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "capstan.cli.main", *args], env=self.env(),
                                capture_output=True, text=True, input=stdin, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"capstan {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def processes(self, pod_uids: set[str] | None = None) -> dict[str, list[psutil.Process]]:
        return container_processes(self.data_dir, pod_uids)

    def get_json(self, path: str) -> dict[str, Any]:
        response = self.api("GET", path)
        response.raise_for_status()
        return dict(response.json())

    def pods(self, namespace: str = "default", selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else {}
        response = self.api("GET", f"/api/v1/namespaces/{namespace}/pods", params=params)
        response.raise_for_status()
        return list(response.json()["items"])

    def apply(self, manifest: dict[str, Any] | str) -> str:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.cli("apply", "-f", "-", stdin=text).stdout


def container_processes(data_dir: Path, pod_uids: set[str] | None = None) -> dict[str, list[psutil.Process]]:
    """Live container processes (not shims) of the server using ``data_dir``, by pod uid, found
    through the CAPSTAN_* environment markers the node agent gives every container (so other
    servers' containers on the same machine are never counted or killed)."""
    runtime_dir = str((data_dir / "runtime").resolve())
    found: dict[str, list[psutil.Process]] = {}
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            if "CAPSTAN_POD_UID" not in env or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if env.get("CAPSTAN_RUNTIME_DIR") != runtime_dir:
                continue
            if "capstan.runtime.shim" in " ".join(proc.cmdline()):
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        uid = env["CAPSTAN_POD_UID"]
        if pod_uids is None or uid in pod_uids:
            found.setdefault(uid, []).append(proc)
    return found


def kill_all_containers(data_dir: Path) -> None:
    for procs in container_processes(data_dir).values():
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
