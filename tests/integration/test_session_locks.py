"""Two workers answering one session take turns: a lock shared through lock files (SQLite, one machine) or Redis.

Each `SessionQueue` here stands for one worker; they share only what two processes would share.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kefu.pipeline.session_queue import FileWorkerLocks, RedisWorkerLocks, SessionQueue, WorkerLocks


class Workers:
    """Makes the shared lock of each simulated worker; `prefix` keeps this run's sessions apart on a shared Redis."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind, self.tmp_path, self.request = kind, tmp_path, request
        self.prefix = uuid.uuid4().hex
        self.made: list[WorkerLocks] = []

    def queue(self, wait_s: float) -> SessionQueue:
        locks: WorkerLocks
        if self.kind == "files":
            locks = FileWorkerLocks(self.tmp_path / "locks", wait_s=wait_s)
        else:
            locks = RedisWorkerLocks(self.request.getfixturevalue("redis_url"), expire_s=30, wait_s=wait_s)
        self.made.append(locks)
        return SessionQueue(locks)


@pytest.fixture(params=["files", pytest.param("redis", marks=pytest.mark.redis)])
async def workers(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Workers]:
    made = Workers(request.param, tmp_path, request)
    yield made
    for locks in made.made:
        await locks.aclose()


async def test_a_session_answered_by_two_workers_takes_turns(workers: Workers) -> None:
    worker_a, worker_b = workers.queue(10.0), workers.queue(10.0)
    session, other = f"{workers.prefix}-s1", f"{workers.prefix}-s2"
    if isinstance(worker_a.workers, FileWorkerLocks):
        while worker_a.workers.path(other) == worker_a.workers.path(session):
            other += "x"  # another stripe
    order: list[str] = []
    release, a_started = asyncio.Event(), asyncio.Event()

    async def turn(worker: SessionQueue, session_id: str, name: str, *, wait: bool = False) -> None:
        async with worker.turn(session_id):
            order.append(f"{name} start")
            if wait:
                a_started.set()
                await release.wait()
            order.append(f"{name} end")

    first = asyncio.create_task(turn(worker_a, session, "a", wait=True))
    await a_started.wait()
    second = asyncio.create_task(turn(worker_b, session, "b"))
    await asyncio.wait_for(turn(worker_b, other, "c"), 5)  # another session is not held up
    await asyncio.sleep(0.2)
    assert order == ["a start", "c start", "c end"], "worker B answered the session while A was answering it"
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert order[3:] == ["a end", "b start", "b end"]


async def test_a_lock_held_too_long_is_given_up_after_the_wait(workers: Workers) -> None:
    stuck, waiting = workers.queue(0.3), workers.queue(0.3)
    session = f"{workers.prefix}-stuck"
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        async with stuck.turn(session):
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await entered.wait()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with waiting.turn(session):  # goes on without the lock instead of waiting forever
        waited = loop.time() - started
    assert 0.25 <= waited < 5
    release.set()
    await holder
