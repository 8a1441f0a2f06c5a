"""Acknowledged writes survive kill -9 of the process that made them.

A child process creates ConfigMaps in a loop and prints each name only after ``create``
returned. The parent kills it with SIGKILL at a random moment, reopens the file and checks that
every acknowledged object is there, the database is intact and resource versions keep growing.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capstan.api.registry import default_registry
from capstan.store.sqlite import SqliteStore

pytestmark = pytest.mark.slow

ROUNDS = 12
STARTUP_SECONDS = 60.0

CHILD = r"""
import asyncio, sys
from capstan.api.registry import default_registry
from capstan.store.sqlite import SqliteStore

async def main(path, prefix):
    registry = default_registry()
    configmaps = registry.lookup("configmaps")
    store = await SqliteStore.open(path, registry)
    i = 0
    while True:
        name = f"{prefix}-{i}"
        obj = await store.create({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": name, "namespace": "default"},
                                  "data": {"payload": "x" * (i % 500)}})
        if i % 3 == 0:  # some updates too, so the kill also lands between update statements
            obj = await store.patch(configmaps, name, "default", {"data": {"n": str(i)}})
        print(name, obj["metadata"]["resourceVersion"], flush=True)
        i += 1

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _run_round(path: Path, prefix: str, rng: random.Random) -> list[tuple[str, int]]:
    """Start a writer, kill -9 it at a random point, return the (name, rv) it acknowledged."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), prefix], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert child.stdout is not None
    acknowledged: list[tuple[str, int]] = []
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        first = child.stdout.readline()  # blocks until the first write was acknowledged
        assert first, f"writer died before writing: {child.stderr.read() if child.stderr else ''}"
        assert time.monotonic() < deadline
        name, version = first.split()
        acknowledged.append((name, int(version)))
        time.sleep(rng.uniform(0.0, 0.4))
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    for line in rest.splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill was never acknowledged
            acknowledged.append((parts[0], int(parts[1])))
    assert child.returncode == -signal.SIGKILL
    return acknowledged


def _integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


async def _check_after_crash(path: Path, acknowledged: list[tuple[str, int]], previous_max: int) -> int:
    registry = default_registry()
    configmaps = registry.lookup("configmaps")
    store = await SqliteStore.open(path, registry)
    try:
        stored = {item["metadata"]["name"]: item
                  for item in (await store.list(configmaps, "default")).items}
        missing = [name for name, _ in acknowledged if name not in stored]
        assert not missing, f"acknowledged but lost after kill -9: {missing[:5]}"
        for name, version in acknowledged:
            assert int(stored[name]["metadata"]["resourceVersion"]) == version
        newest = max(int(item["metadata"]["resourceVersion"]) for item in stored.values())
        assert newest > previous_max
        probe = await store.create({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"generateName": "probe-", "namespace": "default"}})
        assert int(probe["metadata"]["resourceVersion"]) > newest
        return int(probe["metadata"]["resourceVersion"])
    finally:
        await store.close()


def test_acknowledged_creates_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    rng = random.Random()
    previous_max = 0
    total = 0
    for round_number in range(ROUNDS):
        acknowledged = _run_round(path, f"round{round_number}", rng)
        total += len(acknowledged)
        assert _integrity(path) == "ok"
        previous_max = asyncio.run(_check_after_crash(path, acknowledged, previous_max))
    assert total >= ROUNDS
