"""Reading and following container log files for GET .../pods/{name}/log.

The node agent appends to ``<container>.log`` and rotates it to ``<container>.log.1``; we read
the current file. Following polls the file (cheap, portable, no inotify dependency) and checks
every second whether the pod still runs, so the stream ends with the pod.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

READ_CHUNK = 64 * 1024
POLL_SECONDS = 0.2
LIVENESS_EVERY_SECONDS = 1.0


def read_log(path: Path, tail_lines: int | None) -> tuple[bytes, int]:
    """The whole file or its last ``tail_lines`` lines, and the offset where it ended."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if tail_lines is None:
            handle.seek(0)
            return handle.read(size), size
        return _tail(handle, size, tail_lines), size


def _tail(handle: BinaryIO, size: int, lines: int) -> bytes:
    if lines <= 0:
        return b""
    # Read backwards block by block until we hold more line ends than lines wanted; a final
    # line without a newline still counts as a line.
    data = b""
    position = size
    while position > 0:
        step = min(READ_CHUNK, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
        body = data[:-1] if data.endswith(b"\n") else data
        if body.count(b"\n") >= lines:
            break
    body_end = len(data) - 1 if data.endswith(b"\n") else len(data)
    cut = body_end
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1:]


class _Follower:
    """Reads what is appended to a log file, surviving rotation (rename + new file)."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self._handle: BinaryIO | None = None
        self._offset = offset

    def _open_if_present(self) -> None:
        if self._handle is None and self.path.exists():
            self._handle = self.path.open("rb")
            self._handle.seek(self._offset)

    def read_new(self) -> bytes:
        self._open_if_present()
        if self._handle is None:
            return b""
        data = self._handle.read(READ_CHUNK)
        if data:
            return data
        if self._rotated():
            self._handle.close()
            self._handle, self._offset = None, 0
            self._open_if_present()
        return b""

    def _rotated(self) -> bool:
        assert self._handle is not None
        try:
            current = self.path.stat()
        except FileNotFoundError:
            return False
        mine = os.fstat(self._handle.fileno())
        replaced = (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev)
        return replaced or current.st_size < self._handle.tell()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def follow_log(
    path: Path, offset: int, pod_running: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """Yield bytes appended after ``offset`` until ``pod_running()`` says the pod has ended
    (what was written before the end is still delivered). The caller's cancellation stops it."""
    follower = _Follower(path, offset)
    loop = asyncio.get_running_loop()
    next_check = loop.time() + LIVENESS_EVERY_SECONDS
    try:
        while True:
            data = follower.read_new()
            if data:
                yield data
                continue
            if loop.time() >= next_check:
                if not await pod_running():
                    while data := follower.read_new():
                        yield data
                    return
                next_check = loop.time() + LIVENESS_EVERY_SECONDS
            await asyncio.sleep(POLL_SECONDS)
    finally:
        follower.close()
