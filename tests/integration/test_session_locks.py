"""Two workers answering one session take turns: a lock shared through a lock file (SQLite, one machine) or Redis.

The worker under test is a `SessionQueue` here; the other worker holds the session's lock from another process
(lock-file locks belong to a process) or through its own Redis client.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from kefu.pipeline.session_queue import FileWorkerLocks, RedisWorkerLocks, SessionQueue, WorkerLocks

_HOLDER = """
import asyncio, sys
from pathlib import Path
from kefu.pipeline.session_queue import FileWorkerLocks

async def main() -> None:
    locks = FileWorkerLocks(Path(sys.argv[1]), wait_s=5)
    async with locks.hold(sys.argv[2]):
        print("held", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await locks.aclose()

asyncio.run(main())
"""


class Workers:
    """The worker under test, and another one that answers a session of its own choosing meanwhile."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind, self.request = kind, request
        self.lock_file = tmp_path / "locks" / "sessions.lock"
        self.prefix = uuid.uuid4().hex  # this run's sessions, apart from others' on a shared Redis
        self.made: list[WorkerLocks] = []

    def locks(self, wait_s: float) -> WorkerLocks:
        locks: WorkerLocks
        if self.kind == "files":
            locks = FileWorkerLocks(self.lock_file, wait_s=wait_s)
        else:
            locks = RedisWorkerLocks(self.request.getfixturevalue("redis_url"), expire_s=30, wait_s=wait_s)
        self.made.append(locks)
        return locks

    @asynccontextmanager
    async def other_worker_answering(self, session_id: str) -> AsyncIterator[None]:
        if self.kind == "redis":
            async with SessionQueue(self.locks(10.0)).turn(session_id):
                yield
            return
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLDER,
            str(self.lock_file),
            session_id,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert await asyncio.wait_for(holder.stdout.readline(), 60) == b"held\n"
            yield
        finally:
            holder.stdin.write(b"done\n")
            await holder.stdin.drain()
            await asyncio.wait_for(holder.wait(), 30)


@pytest.fixture(params=["files", pytest.param("redis", marks=pytest.mark.redis)])
async def workers(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Workers]:
    made = Workers(request.param, tmp_path, request)
    yield made
    for locks in made.made:
        await locks.aclose()


async def test_a_session_another_worker_is_answering_waits_and_others_do_not(workers: Workers) -> None:
    worker = SessionQueue(workers.locks(10.0))
    session, other = f"{workers.prefix}-s1", f"{workers.prefix}-s2"
    answered: list[str] = []

    async def turn(session_id: str) -> None:
        async with worker.turn(session_id):
            answered.append(session_id)

    async with workers.other_worker_answering(session):
        waiting = asyncio.create_task(turn(session))
        await asyncio.wait_for(turn(other), 5)  # another session is not held up
        await asyncio.sleep(0.2)
        assert answered == [other], "this worker answered the session while the other one was answering it"
    await asyncio.wait_for(waiting, 5)  # the other worker is done: this one goes on at once
    assert answered == [other, session]


async def test_a_lock_held_too_long_is_given_up_after_the_wait(workers: Workers) -> None:
    worker = SessionQueue(workers.locks(0.3))
    session = f"{workers.prefix}-stuck"
    async with workers.other_worker_answering(session):
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with worker.turn(session):  # goes on without the lock instead of waiting forever
            waited = loop.time() - started
    assert 0.25 <= waited < 5


async def test_a_redis_that_does_not_answer_holds_a_turn_up_for_its_timeout_only() -> None:
    silent: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    worker = SessionQueue(RedisWorkerLocks(f"redis://127.0.0.1:{port}/0", expire_s=30, wait_s=60, timeout_s=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(10), worker.turn("s1"):  # goes on without the lock
            waited = loop.time() - started
    finally:
        assert worker.workers is not None
        await worker.workers.aclose()
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()
    assert waited < 5
