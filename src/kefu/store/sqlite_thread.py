"""Whole SQLite transactions on one file, each on one connection: one for writing, one for reading.

A brief transaction (a few indexed rows: a customer's message, a reply, a dialogue state) runs on the event loop:
at once when its connection is free and, for a write, nobody else is writing the file; else once the connection's
thread has let go of it, or has waited for another worker's write. Anything else, and a brief write that meets a
writer outside the lock file, runs on the connection's own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from kefu.store.json_columns import json_text
from kefu.store.prepared import run_on_sqlite, sqlite_connection

T = TypeVar("T")

BUSY_TIMEOUT_MS = 30_000
"""How long a transaction on a connection's thread waits for a writer that does not take turns through the lock
file (the WAL checkpointer's RESTART, an operator's `sqlite3` shell)."""


class _Busy(Exception):
    """A brief write found SQLite's write lock taken by a writer outside the lock file."""


class _NotNow:
    """Why `_Lane.now` could not run a transaction on the calling thread."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"<not now: {self.why}>"


IN_USE = _NotNow("the lane's thread is using the connection")
ELSEWHERE = _NotNow("another writer holds the lock file")
LOCKED_OUT = _NotNow("a writer outside the lock file holds SQLite's write lock")


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _chain(source: asyncio.Future[T], target: asyncio.Future[T]) -> None:
    """Settle `target` as `source` settles (unless `target` was cancelled meanwhile)."""

    def settle(done: asyncio.Future[T]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif (exc := done.exception()) is not None:
            target.set_exception(exc)
        else:
            target.set_result(done.result())

    source.add_done_callback(settle)


def is_sqlite_file(url: URL) -> bool:
    """A SQLite database in a file (an in-memory one cannot be shared with a second engine)."""
    database = url.database or ""
    return (
        url.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and url.query.get("mode") != "memory"
        and not database.startswith("file::memory:")
    )


class _Lane:
    """One SQLite connection running whole transactions one at a time: on the caller's thread when it is free
    (`now`), else on the lane's own thread (`later`)."""

    def __init__(self, url: URL, name: str, *, read_only: bool, write_lock: Path | None = None) -> None:
        from kefu.store.database import enable_sqlite_pragmas

        self._engine = create_engine(
            url.set(drivername="sqlite+pysqlite"),
            # One connection, used by one thread at a time (`_in_use`); closed from whichever thread closes us.
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            poolclass=StaticPool,
            hide_parameters=True,  # customer text stays out of exception messages (and so out of logs)
            json_serializer=json_text,
        )
        enable_sqlite_pragmas(self._engine)

        @event.listens_for(self._engine, "connect")
        def _lane_connection(dbapi_conn: Any, _record: Any) -> None:
            if read_only:
                # A transaction sent here as a read that writes fails loudly instead of racing the writer.
                dbapi_conn.execute("PRAGMA query_only=ON")
            else:
                # The writer emits its own BEGIN IMMEDIATE (sqlite3's implicit BEGIN is deferred, and takes the
                # write lock only at the first write: a transaction that began by reading could then fail with
                # SQLITE_BUSY_SNAPSHOT). No busy wait unless the lane's thread asks for one (`_begin_writing`).
                dbapi_conn.isolation_level = None
                dbapi_conn.execute("PRAGMA busy_timeout=0")

        self._read_only = read_only
        self._write_lock = write_lock
        self._lock_fd: int | None = None
        self._turns = 0
        """Transactions of this lane holding (or about to hold) a turn on the lock file: it is taken by the first and
        released by the last. `flock` on a descriptor that holds the lock succeeds at once, so the count, not the
        kernel, decides when to let it go."""
        self._waiting_turn = False
        """The lane's thread is waiting for the lock file (no one else here may take it meanwhile: they queue)."""
        self._turns_lock = threading.Lock()
        self._queued: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        """Brief transactions waiting for this lane's turn on the lock file (touched on the event loop only)."""
        self._turn_asked = False
        """The lane's thread has been asked to wait for the lock file for `_queued`."""
        self._in_use = threading.Lock()
        """Held by whichever thread runs a transaction on the connection: the event loop's or the lane's."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: Connection | None = None
        """Opened by the first transaction and kept: checking a connection out of the pool and back in (with its
        reset rollback) for every transaction cost a tenth of a millisecond each."""
        self._waiters: list[asyncio.Future[None]] = []
        """Brief transactions waiting for the lane's thread to let go of the connection."""
        self._waiters_lock = threading.Lock()

    async def brief(self, fn: Callable[[Connection], T]) -> T:
        """`fn` in one transaction on the event loop as soon as the connection is free and it is this lane's turn
        to write.

        While the lane's thread uses the connection, it waits for the thread to let go of it rather than queue
        behind it: a transaction queued on the thread waits for the GIL after every SQLite call, so a queue, once
        started (by one write that met the WAL checkpointer), would have kept every later one off the event loop.
        When another writer (a second worker) holds the lock file, it queues for the file (`_queue_for_turn`). Only
        a writer outside the lock file (the WAL checkpointer, an operator's `sqlite3` shell) sends it to the
        thread, which waits for SQLite's write lock.
        """
        while True:
            result = self.now(fn)
            if result is IN_USE:
                waiter = asyncio.get_running_loop().create_future()
                with self._waiters_lock:
                    self._waiters.append(waiter)
                if self._in_use.locked():  # else it was let go of meanwhile: try again now
                    await waiter  # woken as the connection is let go of (`_let_go`)
            elif result is ELSEWHERE:
                return await self._queue_for_turn(fn)
            elif result is LOCKED_OUT:
                return await self.later(fn)
            else:
                return cast(T, result)

    def _queue_for_turn(self, fn: Callable[[Connection], T]) -> asyncio.Future[T]:
        """`fn`'s result, once the lane's thread has waited (in the kernel) for the lock file to be free and the
        event loop has taken it and run every transaction queued meanwhile, one after the other in one callback.

        The file is held only while the loop writes. In the two-worker load test, writes run on the thread instead
        had held it through their GIL waits too (1.5 ms each for 0.3 ms of work) and waited 47 ms on average for
        their turn, the thread spending 0.16 cores; a turn taken by the thread and handed to the loop was held
        while the loop got round to it (2–4 ms). Now a turn lasts 0.8 ms and a write that finds the file taken
        waits 27 ms, at the same load.
        """
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        self._queued.append((fn, result))
        if not self._turn_asked:
            self._turn_asked = True
            self._executor.submit(self._take_turn_for, loop)
        return result

    def _take_turn_for(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the lane's thread: wait for the lock file to be free, then have `loop` run what queued for it."""
        try:
            self._take_turn(blocking=True)
            self._end_turn()
        except OSError as exc:
            loop.call_soon_threadsafe(self._run_queued, exc)
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(self._run_queued, None)

    def _run_queued(self, failed: OSError | None) -> None:
        """On the event loop, the lock file found free (unless `failed`): take it and run the queued transactions,
        or, if another writer took it first, have the thread wait again."""
        self._turn_asked = False
        if failed is None and not self._take_turn(blocking=False):
            self._turn_asked = True
            self._executor.submit(self._take_turn_for, asyncio.get_running_loop())
            return
        queued, self._queued = self._queued, []
        try:
            for fn, result in queued:
                if result.done():  # its caller was cancelled
                    continue
                if failed is not None:
                    result.set_exception(failed)
                    continue
                try:
                    outcome = self.now(fn)  # this lane holds the file: a turn is taken at once
                except Exception as exc:  # the transaction failed: its caller gets the error
                    result.set_exception(exc)
                    continue
                if isinstance(outcome, _NotNow):  # the thread is using the connection, or SQLite is locked out
                    _chain(asyncio.ensure_future(self.later(fn)), result)
                else:
                    result.set_result(outcome)
        finally:
            if failed is None:
                self._end_turn()

    def now(self, fn: Callable[[Connection], T]) -> T | _NotNow:
        """`fn` in one transaction on the calling thread, or `IN_USE` / `ELSEWHERE` / `LOCKED_OUT` without having
        run it: the connection is in use, or (a write) another writer holds the lock file / SQLite's write lock."""
        if not self._in_use.acquire(blocking=False):
            return IN_USE
        try:
            if not self._take_turn(blocking=False):
                return ELSEWHERE
            try:
                result = self._transaction(fn, wait=False)
            except _Busy:
                return LOCKED_OUT
            finally:
                self._end_turn()
            return result
        finally:
            self._let_go()

    async def later(self, fn: Callable[[Connection], T]) -> T:
        """`fn` in one transaction on the lane's thread, after the transactions queued before it."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._on_thread, fn)

    def _on_thread(self, fn: Callable[[Connection], T]) -> T:
        self._in_use.acquire()
        try:
            self._take_turn(blocking=True)
            try:
                return self._transaction(fn, wait=True)
            finally:
                self._end_turn()
        finally:
            self._let_go()

    def _let_go(self) -> None:
        """Free the connection, and wake every brief transaction waiting for it (on its own event loop)."""
        self._in_use.release()
        if not self._waiters:
            return
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits any more
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)

    def _transaction(self, fn: Callable[[Connection], T], *, wait: bool) -> T:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = self._engine.connect()
        with conn.begin():  # an invalidated connection (a failed file) reconnects
            if not self._read_only:
                self._begin_writing(conn, wait=wait)
            return fn(conn)

    @staticmethod
    def _begin_writing(conn: Connection, *, wait: bool) -> None:
        """Take SQLite's write lock for the whole transaction; without `wait`, raise `_Busy` if it is taken."""
        if not wait:
            # Every write transaction begins so: straight on the sqlite3 connection, without SQLAlchemy's per-call
            # work (store/prepared.py).
            raw = sqlite_connection(conn)
            assert raw is not None  # a lane's engine is always pysqlite
            try:
                run_on_sqlite(conn, raw, "BEGIN IMMEDIATE")
            except OperationalError as exc:
                if isinstance(exc.orig, sqlite3.OperationalError) and exc.orig.sqlite_errorcode & 0xFF in (
                    sqlite3.SQLITE_BUSY,
                    sqlite3.SQLITE_LOCKED,
                ):
                    raise _Busy from None
                raise
            return
        conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            conn.exec_driver_sql("PRAGMA busy_timeout=0")

    def _take_turn(self, *, blocking: bool) -> bool:
        """Take the lock file for the whole write transaction, as every writer through a `SQLiteThread` does.

        Two workers writing one SQLite file otherwise meet in SQLite's own lock, whose loser polls it with sleeps
        of 1, 2, 5, 10… ms. The kernel hands an `flock` lock to the next waiter as soon as it is released, and
        releases it when its process dies. It belongs to the open file, so the writing lanes of two stores of one
        process (conversations, knowledge), each with its own descriptor, take turns through it as well; within a
        lane `_in_use` does (a second `flock` on the same descriptor would succeed).
        """
        if self._read_only or self._write_lock is None:
            return True
        with self._turns_lock:
            if self._turns:
                self._turns += 1
                return True
            if self._lock_fd is None:
                self._lock_fd = os.open(self._write_lock, os.O_RDWR | os.O_CREAT, 0o600)
            if not blocking:
                if self._waiting_turn:
                    return False
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                self._turns = 1
                return True
            self._waiting_turn = True  # only the lane's thread blocks, so one at a time
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # in the kernel, outside the GIL
        except BaseException:
            with self._turns_lock:
                self._waiting_turn = False
            raise
        with self._turns_lock:  # in one step: no one here may take the file, and let it go, in between
            self._waiting_turn = False
            self._turns += 1
        return True

    def _end_turn(self) -> None:
        if self._read_only or self._write_lock is None:
            return
        with self._turns_lock:
            self._turns -= 1
            if not self._turns and self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
        self._engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)


class SQLiteThread:
    """Runs blocking SQLAlchemy Core transactions on one SQLite file: writes one at a time on the writing
    connection, reads one at a time on a second, read-only connection; a brief one on the event loop when it can
    start at once, any other on the connection's own thread.

    The async engine's driver, aiosqlite, makes every cursor, execute, fetch, commit and rollback a round trip
    between the event loop and a connection thread: a dozen per customer turn. A transaction run here as one
    function costs one round trip, on one long-lived connection.

    Even one round trip per transaction was too many. In the one-worker load test a writing thread was busy 98% of
    the time, each transaction taking 1.6–2.3 ms of wall time for 0.34 ms of CPU: SQLite's C code lets go of the
    GIL for every statement, and each time the thread had to wait for the event loop to hand it back. Run on the
    event loop instead, a turn's three brief writes cost it about 1 ms of CPU and wait for nothing: in interleaved
    load tests one worker went from 108–117 to 165–179 turns/s (the store change alone), and the overhead
    benchmark's CPU per turn from 4.7 to 2.8–3.0 ms. A brief transaction that would have to wait never blocks the
    loop: if its connection is busy on the thread, it waits for the thread to let go; if another writer (a second
    worker, the knowledge store) holds the lock file, the thread waits for it and the loop then writes; only if a
    writer outside the lock file (an operator's `sqlite3` shell, the WAL checkpointer's RESTART) holds SQLite's
    write lock does it run on the thread, which sleeps in SQLite's busy handler.

    The write-ahead log lets a reader run beside the writer, each on its own snapshot. A read started after a
    write has committed sees it, so a turn that writes, then reads, reads its own write.
    """

    def __init__(self, url: URL) -> None:
        # Workers of one `kefu serve` write the same file: their writing lanes take turns through a lock file.
        database = (url.database or "").removeprefix("file:")  # an operator's `?uri=true` URL names it so
        lock = Path(f"{database}.write-lock") if database else None
        self._writer = _Lane(url, "kefu-sqlite", read_only=False, write_lock=lock)
        self._reader = _Lane(url, "kefu-sqlite-read", read_only=True)

    async def run(self, fn: Callable[[Connection], T], *, write: bool = True, brief: bool = False) -> T:
        """`fn(connection)` in one transaction, committed when it returns and rolled back when it raises; on the
        reading connection (which refuses writes) unless `write`.

        `brief`: a few indexed rows, so it may run on the event loop (`fn` then blocks it for the transaction's
        CPU time, a fraction of a millisecond). Leave it off for anything that reads or writes many rows.
        Cancelling the caller does not stop a transaction already running; it finishes (or fails) on its own.
        """
        lane = self._writer if write else self._reader
        return await (lane.brief(fn) if brief else lane.later(fn))

    async def aclose(self) -> None:
        """Let running transactions finish, then close the connections."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._writer.close()
        self._reader.close()
