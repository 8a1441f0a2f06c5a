"""A small real control plane for the Store contract suite: etcd, kube-apiserver and a kube-controller-manager
that runs only the garbage collector and the namespace controller.

Why not the full cluster of hack/kube-up: the contract tests check storage semantics, object by object. The
other controllers of a full control plane write to the same objects while a test runs (the deployment
controller sets a Deployment's status right after it is created, the scheduler marks every Pod unschedulable,
the root-CA publisher adds a ConfigMap to every namespace), so exact assertions would race with them. The
garbage collector (owner references) and the namespace controller (namespace deletion) are part of what the
Store contract promises, so they run.

The API server runs with the defaults of a real cluster, except:

* ``--watch-cache-sizes=configmaps#0``: watches of ConfigMaps are served straight from etcd, so a test can
  compact etcd (``StoreCluster.compact``) and get a real 410 for an old version. Every other kind is served
  from the watch cache, as usual.
* ``--disable-admission-plugins=ServiceAccount``: test namespaces have no "default" ServiceAccount (no
  controller creates one here), and Pods should be stored as given.

Binaries come from hack/kube-build (``binaries_available`` says whether they are there). The cluster starts on
first use and is stopped when the Python process exits, unless CAPSTAN_KUBE_STORE_STATE names a directory to
keep it in (then it is reused by later runs while healthy).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
START_TIMEOUT_S = 180.0
MISSING_BINARIES = "Kubernetes test binaries not built: run hack/kube-build"


def kube_bin_dir() -> Path:
    """Where hack/kube-build puts the binaries (mirrors hack/lib/kube-common.sh)."""
    common = (REPO_ROOT / "hack" / "lib" / "kube-common.sh").read_text()
    found = re.search(r"^KUBE_VERSION=(\S+)", common, re.MULTILINE)
    version = found.group(1) if found else "1.36.3"
    cache_root = os.environ.get("CAPSTAN_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "capstan")
    return Path(cache_root) / f"kube-v{version}" / "bin"


def binaries_available() -> bool:
    return all(os.access(kube_bin_dir() / name, os.X_OK) for name in COMPONENTS)


@dataclass(frozen=True)
class StoreCluster:
    state_dir: Path
    server: str
    token: str
    ca_file: Path
    etcd_url: str

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def compact(self, revision: int) -> None:
        """Compact etcd's history up to ``revision`` (the API server's resourceVersion is etcd's revision)."""
        response = httpx.post(f"{self.etcd_url}/v3/kv/compaction", json={"revision": str(revision)},
                              timeout=30)
        if response.status_code != 200 and "compacted" not in response.text:
            raise RuntimeError(f"etcd compaction to {revision} failed: {response.text}")


_lock = threading.Lock()
_cluster: StoreCluster | None = None
_children: list[subprocess.Popen[bytes]] = []


def store_cluster() -> StoreCluster:
    """The process-wide contract cluster, started on first call."""
    global _cluster
    with _lock:
        if _cluster is None:
            keep = os.environ.get("CAPSTAN_KUBE_STORE_STATE")
            state = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="capstan-kube-store-"))
            _cluster = _reuse(state) or _start(state)
            if not keep:
                atexit.register(_stop_and_remove, state)
        return _cluster


def stop(state_dir: Path) -> None:
    """Stop the processes started in ``state_dir`` (newest first) by their recorded PIDs."""
    for name in reversed(COMPONENTS):
        pid = _recorded_pid(state_dir, name)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        (state_dir / "pids" / f"{name}.pid").unlink(missing_ok=True)


def _stop_and_remove(state_dir: Path) -> None:
    stop(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)


# ---- starting ----------------------------------------------------------------------------------------------


def _reuse(state: Path) -> StoreCluster | None:
    env_file = state / "cluster.json"
    if not env_file.exists():
        return None
    cluster = _from_json(state, json.loads(env_file.read_text()))
    if all(_alive(_recorded_pid(state, name)) for name in COMPONENTS) and _ready(cluster):
        return cluster
    stop(state)
    return None


def _start(state: Path) -> StoreCluster:
    bin_dir = kube_bin_dir()
    for name in ("pids", "logs", "pki"):
        (state / name).mkdir(parents=True, exist_ok=True)
    etcd_port, etcd_peer, api_port, kcm_port = _free_ports(4)
    server = f"https://127.0.0.1:{api_port}"
    token = secrets.token_hex(24)
    pki = state / "pki"
    _make_pki(pki, state / "logs" / "openssl.log")
    (state / "tokens.csv").write_text(f'{token},capstan-admin,capstan-admin,"system:masters"\n')
    (state / "tokens.csv").chmod(0o600)
    cluster = StoreCluster(state, server, token, pki / "ca.crt", f"http://127.0.0.1:{etcd_port}")
    _write_kubeconfig(cluster)

    _spawn(state, bin_dir, "etcd", [
        "--name=capstan", f"--data-dir={state / 'etcd-data'}",
        f"--listen-client-urls={cluster.etcd_url}", f"--advertise-client-urls={cluster.etcd_url}",
        f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
        f"--initial-cluster=capstan=http://127.0.0.1:{etcd_peer}",
        "--unsafe-no-fsync=true", "--log-level=warn"])
    _wait(state, "etcd", lambda: _http_ok(f"{cluster.etcd_url}/health"))
    _spawn(state, bin_dir, "kube-apiserver", [
        f"--etcd-servers={cluster.etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={api_port}", f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}", f"--token-auth-file={state / 'tokens.csv'}",
        "--authorization-mode=RBAC", f"--service-account-issuer={server}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true",
        "--endpoint-reconciler-type=none", "--profiling=false",
        "--disable-admission-plugins=ServiceAccount", "--watch-cache-sizes=configmaps#0"])
    _wait(state, "kube-apiserver", lambda: _ready(cluster))
    _spawn(state, bin_dir, "kube-controller-manager", [
        f"--kubeconfig={cluster.kubeconfig}", f"--authentication-kubeconfig={cluster.kubeconfig}",
        f"--authorization-kubeconfig={cluster.kubeconfig}", "--bind-address=127.0.0.1",
        f"--secure-port={kcm_port}", "--leader-elect=false", "--profiling=false",
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        "--controllers=garbagecollector,namespace", f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}"])
    _wait(state, "kube-controller-manager",
          lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", verify=False))
    (state / "cluster.json").write_text(json.dumps({
        "server": server, "token": token, "ca_file": str(cluster.ca_file), "etcd_url": cluster.etcd_url}))
    return cluster


def _from_json(state: Path, data: dict[str, str]) -> StoreCluster:
    return StoreCluster(state, data["server"], data["token"], Path(data["ca_file"]), data["etcd_url"])


def _make_pki(pki: Path, log: Path) -> None:
    def run(*args: str) -> None:
        with log.open("a") as out:
            subprocess.run(["openssl", *args], check=True, stdout=out, stderr=out)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=capstan-store-ca",
        "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
        "-keyout", str(pki / "apiserver.key"), "-out", str(pki / "apiserver.csr"))
    ext = pki / "apiserver.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                   "authorityKeyIdentifier=keyid\n")
    run("x509", "-req", "-in", str(pki / "apiserver.csr"), "-CA", str(pki / "ca.crt"),
        "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "3650", "-out", str(pki / "apiserver.crt"),
        "-extfile", str(ext))
    run("genrsa", "-out", str(pki / "sa.key"), "2048")
    run("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def _write_kubeconfig(cluster: StoreCluster) -> None:
    cluster.kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: store\n  cluster:\n    server: {cluster.server}\n"
        f"    certificate-authority: {cluster.ca_file}\n"
        f"users:\n- name: admin\n  user:\n    token: {cluster.token}\n"
        "contexts:\n- name: store\n  context: {cluster: store, user: admin}\ncurrent-context: store\n")
    cluster.kubeconfig.chmod(0o600)


def _spawn(state: Path, bin_dir: Path, name: str, args: list[str]) -> None:
    log = (state / "logs" / f"{name}.log").open("wb")
    # A session of its own: a Ctrl-C aimed at pytest does not kill the cluster half-way; stop() kills
    # the group.
    process = subprocess.Popen([str(bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    _children.append(process)  # keeps the handle (and so no ResourceWarning) while the process lives
    (state / "pids" / f"{name}.pid").write_text(str(process.pid))


def _wait(state: Path, name: str, ready: Callable[[], bool]) -> None:
    pid = _recorded_pid(state, name)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if not _alive(pid) or time.monotonic() > deadline:
            tail = (state / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-30:]
            stop(state)
            raise RuntimeError(f"{name} did not become ready (state in {state}):\n" + "\n".join(tail))
        time.sleep(0.3)


def _ready(cluster: StoreCluster) -> bool:
    try:
        response = httpx.get(f"{cluster.server}/readyz", headers={"Authorization": f"Bearer {cluster.token}"},
                             verify=cluster.ssl_context(), timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _http_ok(url: str, verify: bool = True) -> bool:
    try:
        return httpx.get(url, verify=verify, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _recorded_pid(state: Path, name: str) -> int | None:
    try:
        return int((state / "pids" / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[-1][:1] != "Z"
