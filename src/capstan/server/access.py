"""Access log and last-resort error handling for the API.

The access log records method, path (no query string), status and duration, and nothing
else: request bodies and Secret data never reach a log. Unexpected exceptions are logged by
type and stack frames only, because an exception message may quote object data.
"""

from __future__ import annotations

import json
import logging
import time
import traceback

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capstan.api.errors import ApiError

access_log = logging.getLogger("capstan.server.access")
error_log = logging.getLogger("capstan.server")


def log_unexpected(method: str, path: str, exc: BaseException) -> None:
    frames = "".join(traceback.format_tb(exc.__traceback__))
    error_log.error("internal error on %s %s: %s\n%s", method, path, type(exc).__name__, frames)


def internal_error_body() -> bytes:
    return json.dumps(ApiError("Internal error occurred; see the server log").to_status()).encode()


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception as exc:
            log_unexpected(scope["method"], scope["path"], exc)
            if status == 0:
                status = 500
                body = internal_error_body()
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            access_log.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed_ms)
