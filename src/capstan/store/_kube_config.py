"""Where a Kubernetes API server is and how to authenticate to it: kubeconfig files, the in-cluster service
account, and explicit overrides. Only what the Store needs: bearer tokens (inline or from a file), client
certificates, a CA bundle or ``insecure-skip-tls-verify``. Exec and auth-provider plugins are not supported.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(Exception):
    """The connection settings are missing or cannot be used."""


@dataclass(frozen=True)
class Connection:
    server: str
    token: str | None = None
    token_file: Path | None = None  # re-read on every connect (projected service-account tokens rotate)
    ca_file: Path | None = None
    ca_data: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    insecure_skip_tls_verify: bool = False

    def bearer_token(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return None

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https://"):
            return False
        if self.insecure_skip_tls_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.ca_data is not None:
            context = ssl.create_default_context(cadata=self.ca_data.decode())
        elif self.ca_file is not None:
            context = ssl.create_default_context(cafile=str(self.ca_file))
        else:
            context = ssl.create_default_context()
        if self.client_cert is not None and self.client_key is not None:
            _load_client_pair(context, self.client_cert, self.client_key)
        return context


def default_kubeconfig_path() -> Path:
    """$KUBECONFIG (its first entry) or ~/.kube/config, as kubectl looks for it."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((part for part in env.split(os.pathsep) if part), "")
    return Path(first).expanduser() if first else Path.home() / ".kube" / "config"


def from_kubeconfig(path: Path, context: str | None = None) -> Connection:
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    context_name = context or config.get("current-context")
    if not context_name:
        raise KubeConfigError(f"{path}: no current-context and no context given")
    ctx = _named(config, "contexts", context_name, path).get("context") or {}
    cluster = _named(config, "clusters", ctx.get("cluster"), path).get("cluster") or {}
    user = _named(config, "users", ctx.get("user"), path).get("user") or {} if ctx.get("user") else {}
    if "server" not in cluster:
        raise KubeConfigError(f"{path}: cluster {ctx.get('cluster')!r} has no server")
    base = path.parent
    if "exec" in user or "auth-provider" in user:
        raise KubeConfigError(f"{path}: user {ctx.get('user')!r} needs an exec/auth-provider plugin, "
                              "which Capstan does not run; use a token or a client certificate")
    return Connection(
        server=str(cluster["server"]).rstrip("/"),
        token=user.get("token"),
        token_file=_relative(base, user.get("tokenFile")),
        ca_file=_relative(base, cluster.get("certificate-authority")),
        ca_data=_b64(cluster.get("certificate-authority-data")),
        client_cert=_b64(user.get("client-certificate-data")) or _read(base, user.get("client-certificate")),
        client_key=_b64(user.get("client-key-data")) or _read(base, user.get("client-key")),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify")),
    )


def in_cluster() -> Connection:
    """The Pod's service account, as every in-cluster client finds it."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError("not running in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    if ":" in host:
        host = f"[{host}]"
    return Connection(server=f"https://{host}:{port}", token_file=IN_CLUSTER_DIR / "token",
                      ca_file=IN_CLUSTER_DIR / "ca.crt")


def _named(config: dict[str, Any], section: str, name: Any, path: Path) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if entry.get("name") == name:
            return dict(entry)
    raise KubeConfigError(f"{path}: no entry named {name!r} in {section}")


def _relative(base: Path, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _read(base: Path, value: str | None) -> bytes | None:
    path = _relative(base, value)
    return path.read_bytes() if path is not None else None


def _b64(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None


def _load_client_pair(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl only loads certificate chains from files; keep them private and remove them right after.
    with tempfile.TemporaryDirectory(prefix="capstan-kube-") as tmp:
        cert_path, key_path = Path(tmp) / "client.crt", Path(tmp) / "client.key"
        for path, data in ((cert_path, cert), (key_path, key)):
            path.touch(mode=0o600)
            path.write_bytes(data)
        context.load_cert_chain(str(cert_path), str(key_path))
