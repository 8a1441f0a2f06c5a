"""Bearer-token authentication: the token file, the client config file and the ASGI guard."""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml
from starlette.types import ASGIApp, Receive, Scope, Send

from capstan.api.errors import UnauthorizedError

TOKEN_FILE = "token"
CLIENT_CONFIG_FILE = "config.yaml"
# Probes must work without credentials, like the kubelet's /healthz; nothing else does.
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/readyz"})


def _write_private(path: Path, text: str) -> None:
    """Write a file that only the owner may read, without a window where it is readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply when the file already existed
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def load_or_create_token(data_dir: Path) -> str:
    """The API token of this data directory, generated on first start (mode 0600)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / TOKEN_FILE
    if path.exists():
        if path.stat().st_mode & 0o777 != 0o600:
            path.chmod(0o600)
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token


def write_client_config(data_dir: Path, server_url: str, token: str) -> Path:
    """Write DATA/config.yaml so that the CLI on this machine finds the server (mode 0600)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CLIENT_CONFIG_FILE
    _write_private(path, yaml.safe_dump({"server": server_url, "token": token}, sort_keys=False))
    return path


def _unauthorized_body() -> bytes:
    status = UnauthorizedError("Unauthorized").to_status()
    return json.dumps(status).encode()


class BearerTokenMiddleware:
    """Refuse every request without ``Authorization: Bearer <token>`` (401 Status)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = _unauthorized_body()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="capstan"')]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        if scope["path"] in UNAUTHENTICATED_PATHS and scope["method"] in ("GET", "HEAD"):
            return True
        presented = _header(scope, b"authorization")
        # compare_digest: the time taken must not reveal how much of the token matched.
        return presented is not None and hmac.compare_digest(presented, self._expected)


def _header(scope: Scope, name: bytes) -> bytes | None:
    headers: Any = scope.get("headers") or []
    for key, value in headers:
        if key.lower() == name:
            return bytes(value)
    return None
