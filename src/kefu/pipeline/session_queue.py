"""One turn of a session at a time: in this process, and across workers and replicas when they share sessions.

Two messages of one session sent in quick succession would otherwise both load the same dialogue state, and the
second save would fail as a conflict (a fallback reply). In a process, an asyncio lock per session queues them.
Across processes a second lock is needed, from what the processes share:

- Redis (`KEFU_REDIS_URL`, several workers or replicas): a Redis lock per session (`SET NX PX`, released only by
  its holder, expiring on its own if a worker dies mid-turn);
- a SQLite file (`kefu serve --workers N` on one machine, no Redis): a byte-range lock per session in one lock
  file under the data dir, released by the kernel if a worker dies.

A turn that cannot get the cross-worker lock within `wait_s` goes on without it (and may then conflict): a worker
that died holding a Redis lock must not stop its session for longer than that.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

log = logging.getLogger(__name__)


class WorkerLocks(Protocol):
    """A lock per session shared by every process that serves the sessions."""

    def hold(self, session_id: str) -> AbstractAsyncContextManager[None]: ...

    async def aclose(self) -> None: ...


class SessionQueue:
    """Turns of one session run one after another: each customer message is stored as it arrives, and the next is
    answered once the one before has its reply (and has saved the dialogue state it changed).

    `workers`: the lock shared with other processes, when several serve the same sessions; None in a lone worker.
    """

    def __init__(self, workers: WorkerLocks | None = None) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.workers = workers

    def __len__(self) -> int:
        """Sessions with a turn running or waiting in this process."""
        return len(self._locks)

    @asynccontextmanager
    async def turn(self, session_id: str) -> AsyncIterator[None]:
        entry = self._locks.get(session_id)
        lock = entry[0] if entry is not None else asyncio.Lock()
        self._locks[session_id] = (lock, (entry[1] if entry is not None else 0) + 1)
        try:
            async with lock:
                if self.workers is None:
                    yield
                else:
                    # Only this process's current turn of the session waits here: the rest queue on `lock`.
                    async with self.workers.hold(session_id):
                        yield
        finally:
            lock, users = self._locks[session_id]
            if users == 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)


class RedisWorkerLocks:
    """A Redis lock per session; `expire_s` bounds how long a dead worker's lock outlives it.

    A Redis that does not answer holds a turn up for `timeout_s` per command at most; the turn then goes on.
    """

    def __init__(
        self, redis_url: str, *, expire_s: float, wait_s: float, poll_s: float = 0.01, timeout_s: float = 1.0
    ) -> None:
        self._client = Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._expire_s = expire_s
        self._wait_s = wait_s
        self._poll_s = poll_s

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        lock = self._client.lock(
            f"kefu:turn:{session_id}",
            timeout=self._expire_s,
            sleep=self._poll_s,
            blocking_timeout=self._wait_s,
            thread_local=False,
        )
        try:
            acquired = await lock.acquire()
        except RedisError as exc:
            log.warning("session lock unavailable (%s): the turn goes on without it", type(exc).__name__)
            acquired = False
        if not acquired:
            log.warning("session lock not acquired in %.0f s: the turn goes on without it", self._wait_s)
            yield
            return
        try:
            yield
        finally:
            try:
                await lock.release()
            except (LockError, RedisError) as exc:  # expired during a very long turn, or Redis went away
                log.warning("session lock release failed: %s", type(exc).__name__)

    async def aclose(self) -> None:
        await self._client.aclose()


class FileWorkerLocks:
    """A byte-range lock per session in one lock file (`fcntl` record locks): the byte at a 62-bit hash of the
    session id. Sessions never share a lock; the kernel releases a dead worker's locks.

    Record locks belong to a process, not to a task: two turns of one process are kept apart by `SessionQueue`'s
    own lock before they get here. While another worker holds a session, its lock is tried every `poll_s`.
    """

    def __init__(self, path: Path, *, wait_s: float, poll_s: float = 0.005) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._wait_s = wait_s
        self._poll_s = poll_s

    @staticmethod
    def offset(session_id: str) -> int:
        return int.from_bytes(hashlib.blake2b(session_id.encode(), digest_size=8).digest(), "big") >> 2

    def _try(self, offset: int) -> bool:
        assert self._fd is not None, "session locks used after aclose()"
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    @asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        offset = self.offset(session_id)
        deadline = time.monotonic() + self._wait_s
        while not self._try(offset):
            if time.monotonic() >= deadline:
                log.warning("session lock not acquired in %.0f s: the turn goes on without it", self._wait_s)
                yield
                return
            await asyncio.sleep(self._poll_s)
        try:
            yield
        finally:
            if self._fd is not None:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)

    async def aclose(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
