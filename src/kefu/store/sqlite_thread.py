"""Whole SQLite transactions on dedicated threads (one writing, one reading): one round trip from the event loop
per transaction."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

T = TypeVar("T")


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
    """One SQLite connection, used only from its own thread, running whole transactions one at a time."""

    def __init__(self, url: URL, name: str, *, read_only: bool, write_lock: Path | None = None) -> None:
        from kefu.store.database import enable_sqlite_pragmas

        self._engine = create_engine(
            url.set(drivername="sqlite+pysqlite"),
            # One connection, used only from this lane's thread; closed from whichever thread closes us.
            connect_args={"timeout": 30, "check_same_thread": False},
            poolclass=StaticPool,
            hide_parameters=True,  # customer text stays out of exception messages (and so out of logs)
        )
        enable_sqlite_pragmas(self._engine)
        if read_only:

            @event.listens_for(self._engine, "connect")
            def _query_only(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
                # A transaction sent here as a read that writes fails loudly instead of racing the writer.
                dbapi_conn.execute("PRAGMA query_only=ON")

        self._write_lock = write_lock
        self._lock_fd: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: Connection | None = None
        """Opened on the thread by its first transaction and kept: checking a connection out of the pool and
        back in (with its reset rollback) for every transaction cost a tenth of a millisecond each."""

    async def run(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, fn)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = self._engine.connect()
        with self._writers_in_turn(), conn.begin():  # an invalidated connection (a failed file) reconnects
            return fn(conn)

    @contextmanager
    def _writers_in_turn(self) -> Iterator[None]:
        """Hold the lock file for the whole write transaction, as every writer through a `SQLiteThread` does.

        Two workers writing one SQLite file otherwise meet in SQLite's own lock, whose loser polls it with sleeps
        of 1, 2, 5, 10… ms, and a transaction that began by reading may not be able to write at all once the other
        has committed (SQLITE_BUSY_SNAPSHOT). The kernel hands an `flock` lock to the next waiter as soon as it is
        released, and releases it when its process dies. It belongs to the open file, so the writing threads of
        two stores of one process (conversations, knowledge) take turns through it as well.
        """
        if self._write_lock is None:
            yield
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self._write_lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # blocks in the kernel, outside the GIL
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
        self._engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)


class SQLiteThread:
    """Runs blocking SQLAlchemy Core transactions on one SQLite file: writes one at a time on one thread, reads
    one at a time on a second thread with its own connection.

    The async engine's driver, aiosqlite, makes every cursor, execute, fetch, commit and rollback a
    round trip between the event loop and a connection thread: a dozen per customer turn, each one a
    thread wake-up and a GIL handoff. A transaction run here as one function costs one round trip,
    on one long-lived connection.

    The write-ahead log lets a reader run beside the writer, each on its own snapshot, so a turn's reads (its
    history, its dialogue state, open tickets) do not queue behind other turns' writes. In the one-worker load test
    the single thread had been busy 98% of the time, each transaction taking 1.6 ms of wall time for 0.34 ms of
    CPU; the reading thread took a third of the transactions off it. A read started after a write has committed
    sees it, so a turn that writes, then reads, reads its own write.
    """

    def __init__(self, url: URL) -> None:
        # Workers of one `kefu serve` write the same file: their writing threads take turns through a lock file.
        database = (url.database or "").removeprefix("file:")  # an operator's `?uri=true` URL names it so
        lock = Path(f"{database}.write-lock") if database else None
        self._writer = _Lane(url, "kefu-sqlite", read_only=False, write_lock=lock)
        self._reader = _Lane(url, "kefu-sqlite-read", read_only=True)

    async def run(self, fn: Callable[[Connection], T], *, write: bool = True) -> T:
        """`fn(connection)` in one transaction, committed when it returns and rolled back when it raises; on the
        reading connection (which refuses writes) unless `write`. Writes are serialised by their one thread.

        Cancelling the caller does not stop a transaction already running; it finishes (or fails) on its own.
        """
        return await (self._writer if write else self._reader).run(fn)

    async def aclose(self) -> None:
        """Let running transactions finish, then close the connections."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._writer.close()
        self._reader.close()
