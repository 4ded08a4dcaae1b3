"""A turn's writes, compiled once and handed straight to SQLite.

Every turn writes a few rows (the customer's message, the reply, the session marked active, the dialogue state).
SQLAlchemy's `Connection.execute` spends most of a statement's time in Python before SQLite sees it (the compiled
cache's key, the parameters' processing, the execution context and its result): measured on the load test, about
a tenth of the event loop's time, against a hundredth in SQLite itself. `PreparedWrite` compiles its statement once
per set of parameter names and, on a `sqlite3` connection, runs it with the dialect's own bind processors (the
same JSON and date texts SQLAlchemy would store), translating a `sqlite3` error into SQLAlchemy's (an
`IntegrityError` is still an `IntegrityError`). On any other driver (PostgreSQL, aiosqlite) it is `conn.execute`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import UpdateBase

_Processor = Callable[[Any], Any]


def sqlite_connection(conn: Connection) -> sqlite3.Connection | None:
    """The `sqlite3` connection under `conn`, or None for any other driver."""
    raw = conn.connection.driver_connection
    return raw if isinstance(raw, sqlite3.Connection) else None


def run_on_sqlite(conn: Connection, raw: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> int:
    """Run `sql` on `conn`'s own `sqlite3` connection (in its transaction); a failure is SQLAlchemy's exception
    for it (`IntegrityError`, `OperationalError`, with the `sqlite3` error as `.orig`), parameters hidden as the
    engines hide them. Returns the rows changed."""
    try:
        return raw.execute(sql, args).rowcount
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, args, exc, sqlite3.Error, hide_parameters=True, dialect=conn.dialect) from exc


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    names: tuple[str, ...]
    """The parameters in the order of the SQL's placeholders."""
    processors: tuple[_Processor | None, ...]


class PreparedWrite:
    """An INSERT or UPDATE run by name-bound parameters; `execute` returns the rows it changed."""

    def __init__(self, statement: UpdateBase) -> None:
        self.statement = statement
        self._plans: dict[frozenset[str], _Plan | None] = {}

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        raw = sqlite_connection(conn)
        plan = self._plan(conn.dialect, params) if raw is not None else None
        if raw is None or plan is None:
            return conn.execute(self.statement, dict(params)).rowcount
        args = tuple(
            value if process is None else process(value)
            for value, process in zip((params[name] for name in plan.names), plan.processors, strict=True)
        )
        return run_on_sqlite(conn, raw, plan.sql, args)

    def _plan(self, dialect: Dialect, params: Mapping[str, Any]) -> _Plan | None:
        names = frozenset(params)
        try:
            return self._plans[names]
        except KeyError:
            pass
        compiled = self.statement.compile(dialect=dialect, column_keys=sorted(names))
        positions = compiled.positiontup
        plan = None
        # Columns whose defaults SQLAlchemy computes in Python at execution (`default=`, `onupdate=` not given here)
        # need its execution context: such a statement goes through `conn.execute`.
        if positions is not None and not compiled.insert_prefetch and not compiled.update_prefetch:
            processors = [compiled._bind_processors.get(name) for name in positions]  # the dialect's, as execute's
            if set(positions) <= names and all(p is None or callable(p) for p in processors):
                plan = _Plan(compiled.string, tuple(positions), tuple(cast(_Processor | None, p) for p in processors))
        self._plans[names] = plan
        return plan


__all__ = ["PreparedWrite", "run_on_sqlite", "sqlite_connection"]
