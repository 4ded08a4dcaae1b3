"""SQLite WAL checkpoints happen on the checkpointer's thread, not in the commit of a customer's turn."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import text

from kefu.store.checkpoint import WAL_AUTOCHECKPOINT_PAGES, WalCheckpointer
from kefu.store.database import create_engine


async def test_store_connections_leave_checkpoints_to_the_background(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'kefu.db'}")
    try:
        async with engine.connect() as conn:
            pages = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
    finally:
        await engine.dispose()
    assert (pages, mode) == (WAL_AUTOCHECKPOINT_PAGES, "wal")


def _writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
    return conn


def _wal_frames(path: Path) -> int:
    """Pages in the WAL now (a PASSIVE checkpoint reports them without waiting for anyone)."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        frames: int = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    return frames


def test_the_checkpointer_copies_the_wal_and_starts_it_over(tmp_path: Path) -> None:
    database = tmp_path / "kefu.db"
    writer = _writer(database)
    checkpointer = WalCheckpointer(database, interval_s=0.02, restart_frames=50).start()
    try:
        for n in range(400):  # one page or more per commit: the WAL passes restart_frames many times over
            writer.execute("INSERT INTO notes (body) VALUES (?)", (f"note {n} " * 200,))
        # The next write after a restart starts the WAL over: soon it holds a few pages, not every one written.
        # (Without the checkpointer it would hold all 400+.)
        deadline, frames = time.monotonic() + 10, -1
        while time.monotonic() < deadline:
            writer.execute("INSERT INTO notes (body) VALUES ('later')")
            frames = _wal_frames(database)
            if 0 <= frames < 400:
                break
            time.sleep(0.05)
        assert 0 <= frames < 400, frames
        assert checkpointer.restarts >= 1 and checkpointer.passes >= 1
    finally:
        writer.close()
        checkpointer.close()
    assert (tmp_path / "kefu.db-wal").stat().st_size == 0, "close() leaves the WAL empty"
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM notes WHERE body != 'later'").fetchone()[0] == 400


def test_without_a_checkpointer_the_wal_keeps_growing_below_the_safety_net(tmp_path: Path) -> None:
    database = tmp_path / "kefu.db"
    writer = _writer(database)
    try:
        for n in range(400):
            writer.execute("INSERT INTO notes (body) VALUES (?)", (f"note {n} " * 200,))
        frames = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        writer.close()
    assert 400 <= frames < WAL_AUTOCHECKPOINT_PAGES  # no commit checkpointed on its own


def test_a_restart_blocked_by_a_long_reader_gives_up_and_writers_go_on(tmp_path: Path) -> None:
    database = tmp_path / "kefu.db"
    writer = _writer(database)
    for n in range(100):
        writer.execute("INSERT INTO notes (body) VALUES (?)", (f"note {n} " * 200,))
    report = sqlite3.connect(database, isolation_level=None)
    report.execute("BEGIN")
    report.execute("SELECT count(*) FROM notes").fetchone()  # a long report holds its snapshot
    checkpointer = WalCheckpointer(database, restart_frames=10, busy_s=0.05)
    conn = sqlite3.connect(database, timeout=0.05, isolation_level=None)
    try:
        writer.execute("INSERT INTO notes (body) VALUES ('during the report')")
        started = time.monotonic()
        checkpointer.checkpoint(conn)
        assert time.monotonic() - started < 2, "the RESTART waited for the report"
        assert checkpointer.restarts == 0  # it could not restart the WAL under the report's snapshot
        writer.execute("INSERT INTO notes (body) VALUES ('after the attempt')")  # writers are not held back
        report.execute("COMMIT")
        checkpointer.checkpoint(conn)
        assert checkpointer.restarts == 1
    finally:
        conn.close()
        report.close()
        writer.close()
