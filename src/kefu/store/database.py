"""Engine creation and schema migrations (Alembic, applied in-process at start-up)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from kefu.store.json_columns import json_text
from kefu.store.sqlite_thread import is_sqlite_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Several workers may start at once against one PostgreSQL; one applies migrations, the others wait.
_PG_MIGRATION_LOCK = 0x6B656675


def create_engine(url: str) -> AsyncEngine:
    """An async engine for SQLite (file under the data dir) or PostgreSQL.

    SQL parameters are kept out of exception messages: they are customer text, and exceptions reach the logs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True, json_serializer=json_text)
        enable_sqlite_pragmas(engine.sync_engine)
        return engine
    return create_async_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True, json_serializer=json_text
    )


def enable_sqlite_pragmas(engine: Engine) -> None:
    """Foreign keys on, write-ahead log (readers never block the writer), fsync only at checkpoints, and
    checkpoints left to a background thread (`kefu.store.checkpoint`) instead of the commit that fills the WAL."""
    from sqlalchemy import event

    from kefu.store.checkpoint import WAL_AUTOCHECKPOINT_PAGES

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    command.upgrade(_alembic_config(connection), "head")


def _status(connection: Connection) -> tuple[str | None, str]:
    current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(_alembic_config(connection)).get_current_head()
    return current, head or ""


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision.

    Workers started together migrate one at a time: PostgreSQL through an advisory lock, a SQLite file through a
    lock file beside it (SQLite runs DDL outside a transaction, so two workers would both create the tables)."""
    from filelock import FileLock

    lock = FileLock(f"{engine.url.database}.migrate.lock", timeout=120) if is_sqlite_file(engine.url) else None
    if lock is not None:
        await asyncio.to_thread(lock.acquire)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    finally:
        if lock is not None:
            lock.release()


async def migration_status(engine: AsyncEngine) -> tuple[str | None, str]:
    """(current revision, head revision); equal when the database is migrated."""
    async with engine.connect() as conn:
        return await conn.run_sync(_status)
