"""A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) for
tests, driven through hack/kube-build, hack/kube-up and hack/kube-down.

Tests normally get a running cluster from the session fixture ``kube_cluster`` (tests/k8s/conftest.py);
this module holds the pieces so other test packages can reuse them.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack"

# A cold build compiles all of Kubernetes with one package at a time under nice; on a busy 2-core machine
# that can approach an hour. A cached build returns in seconds.
BUILD_TIMEOUT_S = 90 * 60
UP_TIMEOUT_S = 10 * 60

T = TypeVar("T")


@dataclass(frozen=True)
class KubeCluster:
    """Where a running control plane is and how to authenticate to it as a cluster admin."""

    kubeconfig: Path
    server: str
    token: str
    ca_file: Path
    state_dir: Path
    has_kwok: bool

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, timeout: float = 30.0) -> httpx.Client:
        """An httpx client for the API server, authenticated with the admin bearer token."""
        return httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {self.token}"},
            verify=self.ssl_context(),
            timeout=timeout,
        )

    def log_path(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"


def read_cluster_env(state_dir: Path) -> dict[str, str]:
    """Parse STATE_DIR/cluster.env (KEY=value lines, values optionally double-quoted) written by kube-up."""
    env: dict[str, str] = {}
    for line in (state_dir / "cluster.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key.strip()] = value.strip().strip('"')
    return env


def build_binaries() -> None:
    """Run hack/kube-build; fast when the binaries are already cached. Progress goes to our stderr."""
    if shutil.which("go") is None:
        raise RuntimeError("go is not installed: hack/kube-build needs go >= 1.26 to build the control plane")
    # Output is inherited: pytest shows it with the failure, or live with -s during a long cold build.
    subprocess.run([str(HACK / "kube-build")], check=True, timeout=BUILD_TIMEOUT_S)


def start_cluster(state_dir: Path) -> KubeCluster:
    """Start (or reuse) the control plane whose state lives in ``state_dir``; returns once /readyz is ok."""
    result = subprocess.run(
        [str(HACK / "kube-up"), str(state_dir)],
        check=False,
        timeout=UP_TIMEOUT_S,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/kube-up {state_dir} failed ({result.returncode}):\n{result.stderr}")
    env = read_cluster_env(state_dir)
    return KubeCluster(
        kubeconfig=Path(result.stdout.strip().splitlines()[-1]),
        server=env["KUBE_SERVER"],
        token=env["KUBE_TOKEN"],
        ca_file=Path(env["KUBE_CA_FILE"]),
        state_dir=state_dir,
        has_kwok=env.get("KUBE_HAVE_KWOK") == "1",
    )


def stop_cluster(state_dir: Path, keep_dir: bool = False) -> None:
    args = [str(HACK / "kube-down")] + (["--keep-dir"] if keep_dir else []) + [str(state_dir)]
    subprocess.run(args, check=True, timeout=120)


def wait_until(
    fetch: Callable[[], T],
    accept: Callable[[T], bool],
    what: str,
    timeout: float = 120.0,
    interval: float = 0.5,
) -> T:
    """Fetch repeatedly until ``accept`` approves the value, and return that value; fail with ``what`` and
    the last value seen on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


def default_state_dir() -> Path | None:
    """A state directory named by CAPSTAN_KUBE_STATE: use (and keep) that cluster instead of a private one."""
    value = os.environ.get("CAPSTAN_KUBE_STATE")
    return Path(value) if value else None
