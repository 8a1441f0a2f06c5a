"""The controller work queue: de-duplication, no concurrent processing of a key, back-off."""

from __future__ import annotations

import asyncio

import pytest

from capstan.controllers.workqueue import QueueShutDownError, WorkQueue


async def test_a_key_added_many_times_is_handed_out_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert await queue.get() == "a"
    assert await queue.get() == "b"
    assert len(queue) == 0


async def test_a_key_added_while_processing_comes_back_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # while a worker holds it
    assert len(queue) == 0, "a key in processing must not be handed to a second worker"
    queue.done(key)
    assert len(queue) == 1
    assert await queue.get() == "a"


async def test_rate_limited_retries_back_off_exponentially_and_forget_resets() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.05)
    delays = [queue.add_rate_limited("a") for _ in range(5)]
    assert delays == [0.01, 0.02, 0.04, 0.05, 0.05]
    queue.forget("a")
    assert queue.failures("a") == 0
    assert await asyncio.wait_for(queue.get(), timeout=2) == "a"


async def test_add_after_releases_the_key_later_not_sooner() -> None:
    queue: WorkQueue[str] = WorkQueue()
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("late", 0.2)
    queue.add_after("early", 0.05)
    assert await asyncio.wait_for(queue.get(), timeout=5) == "early"
    assert await asyncio.wait_for(queue.get(), timeout=5) == "late"
    assert loop.time() - start >= 0.2


async def test_shutdown_wakes_waiting_workers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shutdown()
    with pytest.raises(QueueShutDownError):
        await asyncio.wait_for(waiter, timeout=2)
