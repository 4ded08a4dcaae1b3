"""Whole SQLite transactions on one dedicated thread: one round trip from the event loop per transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import Connection, create_engine
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


class SQLiteThread:
    """Runs blocking SQLAlchemy Core transactions on one SQLite file, one at a time, on its own thread.

    The async engine's driver, aiosqlite, makes every cursor, execute, fetch, commit and rollback a
    round trip between the event loop and a connection thread: a dozen per customer turn, each one a
    thread wake-up and a GIL handoff. A transaction run here as one function costs one round trip,
    on one long-lived connection. Callers serialise writers themselves (the store's write lock).
    """

    def __init__(self, url: URL) -> None:
        from kefu.store.database import enable_sqlite_pragmas

        self._engine = create_engine(
            url.set(drivername="sqlite+pysqlite"),
            # One connection, used only from this object's thread; closed from whichever thread closes us.
            connect_args={"timeout": 30, "check_same_thread": False},
            poolclass=StaticPool,
            hide_parameters=True,  # customer text stays out of exception messages (and so out of logs)
        )
        enable_sqlite_pragmas(self._engine)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kefu-sqlite")
        self._conn: Connection | None = None
        """Opened on the thread by its first transaction and kept: checking a connection out of the pool and
        back in (with its reset rollback) for every transaction cost a tenth of a millisecond each."""

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """`fn(connection)` in one transaction, committed when it returns and rolled back when it raises.

        Cancelling the caller does not stop a transaction already running; it finishes (or fails) on its own.
        """
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, fn)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = self._engine.connect()
        with conn.begin():  # an invalidated connection (a failed file) reconnects on its next use
            return fn(conn)

    async def aclose(self) -> None:
        """Let a running transaction finish, then close the connection."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
        self._engine.dispose()
