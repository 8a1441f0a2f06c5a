"""The per-container shim: ``python -m capstan.runtime.shim <container-state-dir>``.

A shim outlives the Capstan process that started it (it detaches into its own session), so a
container keeps running, keeps logging and gets its exit status recorded even while Capstan is
down or after it was killed with SIGKILL. The runtime finds everything in the state directory:

* ``shim.pid``   the shim's pid, written first thing;
* ``state.json`` the container process (pid = its process group id) and start time;
* ``exit.json``  exit code, signal, reason and finish time, written atomically when it ends.

The spec (argv, env, cwd, log settings) arrives as JSON on stdin, so environment values, which
may hold Secrets, are never written to disk. Only the standard library is imported: the shim's
start-up time is part of every container start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

SHIM_PID = "shim.pid"
STATE = "state.json"
EXIT = "exit.json"
SHIM_LOG = "shim.log"

DRAIN_SECONDS = 2.0


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Readers see the old file or the whole new one, never a partial write."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class RotatingLog:
    """Appends to ``path``; when it reaches ``max_bytes`` renames it to ``.1`` (shifting older
    files up to ``.keep``) and starts a new file. Readers following the file notice the rename;
    nothing is ever truncated in place, so no line is lost as with copytruncate."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = max(keep, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: BinaryIO = path.open("ab")
        self._size = self._handle.tell()

    def write(self, data: bytes) -> None:
        while data:
            if self._size >= self.max_bytes:
                self._rotate()
            room = self.max_bytes - self._size
            cut = _cut_point(data, room)
            self._handle.write(data[:cut])
            self._handle.flush()
            self._size += cut
            data = data[cut:]

    def _rotate(self) -> None:
        self._handle.close()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._handle = self.path.open("ab")
        self._size = 0

    def close(self) -> None:
        self._handle.close()


def _cut_point(data: bytes, room: int) -> int:
    """How much of ``data`` goes into a file with ``room`` bytes left: up to the last line end
    that fits, so rotated files hold whole lines; a single over-long line is split."""
    if len(data) <= room:
        return len(data)
    newline = data.rfind(b"\n", 0, room)
    return newline + 1 if newline >= 0 else max(room, 1)


def _pump(source: BinaryIO, log: RotatingLog) -> None:
    fd = source.fileno()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        log.write(chunk)


def _exit_record(returncode: int, started: float, finished: float) -> dict[str, Any]:
    if returncode < 0:
        signal_number = -returncode
        return {"exitCode": 128 + signal_number, "signal": signal_number, "reason": "Error",
                "startedAt": started, "finishedAt": finished}
    return {"exitCode": returncode, "signal": None, "reason": "Completed" if returncode == 0 else "Error",
            "startedAt": started, "finishedAt": finished}


def _detach() -> None:
    """Double fork: the intermediate process exits at once (the runtime reaps it), the shim is
    re-parented to init and becomes a session leader, immune to its starter's fate."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def _redirect_own_stdio(state_dir: Path) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    shim_log = os.open(state_dir / SHIM_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(shim_log, 1)
    os.dup2(shim_log, 2)
    os.close(shim_log)


def run(state_dir: Path, spec: dict[str, Any]) -> int:
    (state_dir / SHIM_PID).write_text(str(os.getpid()))
    _redirect_own_stdio(state_dir)
    log = RotatingLog(Path(spec["logPath"]), int(spec["logMaxBytes"]), int(spec["logKeep"]))
    started = time.time()
    try:
        child = subprocess.Popen(
            spec["argv"], env=spec["env"], cwd=spec.get("cwd") or None, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0, close_fds=True)
    except (OSError, ValueError) as exc:
        write_json_atomically(state_dir / EXIT, {
            "exitCode": 128, "signal": None, "reason": "StartError", "message": _start_error(exc, spec),
            "startedAt": started, "finishedAt": time.time()})
        return 0

    def forward(signal_number: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal_number)

    for signal_number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signal_number, forward)
    write_json_atomically(state_dir / STATE, {
        "shimPid": os.getpid(), "pid": child.pid, "startedAt": started})
    assert child.stdout is not None
    pump = threading.Thread(target=_pump, args=(child.stdout, log), daemon=True)
    pump.start()
    returncode = child.wait()
    finished = time.time()
    # As when a container's init process ends: whatever it left behind in its group goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    pump.join(DRAIN_SECONDS)
    write_json_atomically(state_dir / EXIT, _exit_record(returncode, started, finished))
    return 0


def _start_error(exc: BaseException, spec: dict[str, Any]) -> str:
    if isinstance(exc, FileNotFoundError) and spec.get("cwd") and not Path(spec["cwd"]).is_dir():
        return f"working directory {spec['cwd']!r} does not exist"
    if isinstance(exc, FileNotFoundError):
        return f"exec: {spec['argv'][0]!r}: executable file not found in $PATH"
    if isinstance(exc, PermissionError):
        return f"exec: {spec['argv'][0]!r}: permission denied"
    return f"starting {spec['argv'][0]!r} failed: {exc}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m capstan.runtime.shim <container-state-dir>", file=sys.stderr)
        return 2
    state_dir = Path(argv[0])
    spec = json.loads(sys.stdin.buffer.read())
    _detach()
    return run(state_dir, spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
