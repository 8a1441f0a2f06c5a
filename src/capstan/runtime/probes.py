"""Container probes (exec, httpGet, tcpSocket) and their success/failure thresholds.

Probes take the wire form of a core/v1 Probe (camelCase dict). Everything runs against the
local machine: httpGet and tcpSocket connect to 127.0.0.1 unless the probe names a host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ProbeOutcome:
    success: bool
    message: str = ""


@dataclass(frozen=True)
class ProbeTiming:
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def of(cls, probe: Mapping[str, Any]) -> ProbeTiming:
        return cls(initial_delay=float(probe.get("initialDelaySeconds") or 0),
                   period=float(probe.get("periodSeconds") or 10),
                   timeout=float(probe.get("timeoutSeconds") or 1),
                   success_threshold=int(probe.get("successThreshold") or 1),
                   failure_threshold=int(probe.get("failureThreshold") or 3))


class ProbeCounter:
    """Turns single outcomes into a verdict: it flips only after ``success_threshold``
    consecutive successes or ``failure_threshold`` consecutive failures."""

    def __init__(self, timing: ProbeTiming, *, initial: bool | None = None) -> None:
        self.timing = timing
        self.verdict = initial
        self._successes = 0
        self._failures = 0

    def record(self, success: bool) -> bool:
        """Record one outcome; True when the verdict changed."""
        if success:
            self._successes += 1
            self._failures = 0
            if self._successes >= self.timing.success_threshold and self.verdict is not True:
                self.verdict = True
                return True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= self.timing.failure_threshold and self.verdict is not False:
                self.verdict = False
                return True
        return False


def resolve_port(port: int | str, named_ports: Mapping[str, int]) -> int:
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    if port not in named_ports:
        raise ValueError(f"the container declares no port named {port!r}")
    return named_ports[port]


async def run_probe(probe: Mapping[str, Any], *, named_ports: Mapping[str, int] | None = None,
                    env: Mapping[str, str] | None = None, cwd: str | None = None) -> ProbeOutcome:
    """Run one probe attempt with its timeout."""
    timeout = ProbeTiming.of(probe).timeout
    ports = named_ports or {}
    try:
        if probe.get("exec"):
            return await _exec_probe(list(probe["exec"].get("command") or []), timeout, env, cwd)
        if probe.get("httpGet"):
            return await _http_probe(probe["httpGet"], timeout, ports)
        if probe.get("tcpSocket"):
            return await _tcp_probe(probe["tcpSocket"], timeout, ports)
    except ValueError as exc:
        return ProbeOutcome(False, str(exc))
    return ProbeOutcome(False, "the probe has no exec, httpGet or tcpSocket handler")


async def _exec_probe(argv: list[str], limit: float, env: Mapping[str, str] | None,
                      cwd: str | None) -> ProbeOutcome:
    if not argv:
        return ProbeOutcome(False, "exec probe without a command")
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=dict(env) if env is not None else None, cwd=cwd,
            start_new_session=True)
    except OSError as exc:
        return ProbeOutcome(False, f"exec probe could not start {argv[0]!r}: {exc.strerror}")
    try:
        output, _ = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return ProbeOutcome(False, f"command timed out after {limit:g}s")
    text = output.decode(errors="replace").strip()[:1024]
    if process.returncode == 0:
        return ProbeOutcome(True, text)
    return ProbeOutcome(False, f"command exited with {process.returncode}: {text}" if text
                        else f"command exited with {process.returncode}")


async def _http_probe(action: Mapping[str, Any], limit: float, ports: Mapping[str, int]) -> ProbeOutcome:
    port = resolve_port(action["port"], ports)
    scheme = str(action.get("scheme") or "HTTP").lower()
    host = action.get("host") or DEFAULT_HOST
    path = str(action.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
    url = f"{scheme}://{host}:{port}{path}"
    try:
        async with httpx.AsyncClient(timeout=limit, verify=False) as client:
            response = await client.get(url, headers=headers)
    except httpx.TimeoutException:
        return ProbeOutcome(False, f'Get "{url}": timed out after {limit:g}s')
    except httpx.HTTPError as exc:
        return ProbeOutcome(False, f'Get "{url}": {exc}')
    if 200 <= response.status_code < 400:
        return ProbeOutcome(True, f"HTTP probe succeeded with statuscode: {response.status_code}")
    return ProbeOutcome(False, f"HTTP probe failed with statuscode: {response.status_code}")


async def _tcp_probe(action: Mapping[str, Any], limit: float, ports: Mapping[str, int]) -> ProbeOutcome:
    port = resolve_port(action["port"], ports)
    host = action.get("host") or DEFAULT_HOST
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), limit)
    except TimeoutError:
        return ProbeOutcome(False, f"dial tcp {host}:{port}: i/o timeout")
    except OSError as exc:
        return ProbeOutcome(False, f"dial tcp {host}:{port}: {exc.strerror or exc}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeOutcome(True)
