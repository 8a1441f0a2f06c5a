"""Where container logs live, shared by the node agent (writer) and the API (reader)."""

from __future__ import annotations

from pathlib import Path


def pod_dir(pods_root: Path, namespace: str, name: str, uid: str) -> Path:
    """One folder per pod incarnation; the uid keeps a recreated pod's logs apart."""
    return pods_root / f"{namespace}_{name}_{uid}"


def container_log_path(pods_root: Path, namespace: str, name: str, uid: str, container: str) -> Path:
    """The current log file of a container; rotated files are ``<container>.log.1`` .. ``.N``."""
    return pod_dir(pods_root, namespace, name, uid) / f"{container}.log"
