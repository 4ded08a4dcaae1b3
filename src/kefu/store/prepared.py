"""A turn's statements, compiled once and handed straight to SQLite.

Every turn reads and writes a few rows (the session, the customer's message, the reply, the dialogue state, the
conversation's last messages). SQLAlchemy's `Connection.execute` spends most of a statement's time in Python before
SQLite sees it (the compiled cache's key, the parameters' processing, the execution context and its result):
measured on the load test, about a tenth of the event loop's time, against a hundredth in SQLite itself.
`PreparedWrite` and `PreparedRead` compile their statement once per set of parameter names and, on a `sqlite3`
connection, run it with the dialect's own bind and result processors (the same JSON and date texts SQLAlchemy
would store and read back), translating a `sqlite3` error into SQLAlchemy's (an `IntegrityError` is still an
`IntegrityError`). On any other driver (PostgreSQL, aiosqlite), or for a statement that needs SQLAlchemy's
execution context, they are `conn.execute`.
"""

from __future__ import annotations

import operator
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, Select
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import ClauseElement

_Processor = Callable[[Any], Any]
P = TypeVar("P")


def sqlite_connection(conn: Connection) -> sqlite3.Connection | None:
    """The `sqlite3` connection under `conn`, or None for any other driver."""
    raw = conn.connection.driver_connection
    return raw if isinstance(raw, sqlite3.Connection) else None


@contextmanager
def _sqlalchemy_errors(conn: Connection, sql: str, args: tuple[Any, ...]) -> Iterator[None]:
    """A `sqlite3` error as SQLAlchemy's exception for it (`IntegrityError`, `OperationalError`, with the `sqlite3`
    error as `.orig`), parameters hidden as the engines hide them."""
    try:
        yield
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, args, exc, sqlite3.Error, hide_parameters=True, dialect=conn.dialect) from exc


def run_on_sqlite(conn: Connection, raw: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> int:
    """Run `sql` on `conn`'s own `sqlite3` connection (in its transaction); returns the rows changed."""
    with _sqlalchemy_errors(conn, sql, args):
        return raw.execute(sql, args).rowcount


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    names: tuple[str, ...]
    """The parameters in the order of the SQL's placeholders."""
    processors: tuple[_Processor | None, ...]
    fixed: dict[str, Any]
    """Values the statement itself binds (`where(id == 1)`), as compiled."""
    _pick: Callable[[Mapping[str, Any]], tuple[Any, ...]] = field(init=False, repr=False)
    _process: tuple[tuple[int, _Processor], ...] = field(init=False, repr=False)
    """Where a value needs its processor (a date, a JSON column): most are passed as they are."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pick", _picker(self.names))
        object.__setattr__(self, "_process", _needing(self.processors))

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        values = self._pick({**self.fixed, **params} if self.fixed else params)
        return tuple(_processed(values, self._process)) if self._process else values


def _needing(processors: Sequence[_Processor | None]) -> tuple[tuple[int, _Processor], ...]:
    return tuple((i, p) for i, p in enumerate(processors) if p is not None)


def _processed(values: Sequence[Any], steps: tuple[tuple[int, _Processor], ...]) -> list[Any]:
    out = list(values)
    for i, process in steps:
        out[i] = process(out[i])
    return out


def _picker(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """`names`' values, in order, as a tuple (one C call for a statement's dozen columns)."""
    if not names:
        return lambda _values: ()
    pick = operator.itemgetter(*names)
    if len(names) == 1:
        return lambda values: (pick(values),)
    return cast(Callable[[Mapping[str, Any]], tuple[Any, ...]], pick)


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    query: _Plan
    row: type[tuple[Any, ...]]
    """A named tuple of the result's columns: attribute access by name, as SQLAlchemy's rows give."""
    processors: tuple[_Processor | None, ...]
    """Each column's result processor for the dialect (a JSON text decoded, a date text parsed)."""
    _process: tuple[tuple[int, _Processor], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_process", _needing(self.processors))

    def make_row(self, values: Sequence[Any]) -> tuple[Any, ...]:
        return self.row(*(_processed(values, self._process) if self._process else values))


def _compile(statement: ClauseElement, dialect: Dialect, params: Mapping[str, Any]) -> tuple[SQLCompiler, _Plan | None]:
    """The statement compiled for these parameter names, and its plan; None where SQLAlchemy's execution context is
    needed: Python-side defaults (`default=`, `onupdate=` not given here), expanding `IN` lists, a bind without a
    value."""
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=sorted(params)))
    positions = compiled.positiontup
    if positions is None or compiled.insert_prefetch or compiled.update_prefetch:
        return compiled, None
    if compiled.literal_execute_params or compiled.post_compile_params:
        return compiled, None
    unbound = {name: compiled.binds.get(name) for name in positions if name not in params}
    if any(bind is None or bind.required or bind.callable is not None for bind in unbound.values()):
        return compiled, None  # SQLAlchemy asks for the value, or computes it
    fixed = {name: bind.value for name, bind in unbound.items() if bind is not None}
    processors = [compiled._bind_processors.get(name) for name in positions]  # the dialect's, as execute's
    if not all(p is None or callable(p) for p in processors):
        return compiled, None
    typed = tuple(cast(_Processor | None, p) for p in processors)
    return compiled, _Plan(compiled.string, tuple(positions), typed, fixed)


class _Prepared(Generic[P]):
    """Plans for SQLite, one per set of parameter names (None: the statement goes through SQLAlchemy)."""

    def __init__(self) -> None:
        self._plans: dict[frozenset[str], P | None] = {}

    def _sqlite_plan(self, conn: Connection, params: Mapping[str, Any]) -> tuple[sqlite3.Connection, P] | None:
        """`conn`'s sqlite3 connection and the plan for these parameters; None where `conn.execute` runs it."""
        raw = sqlite_connection(conn)
        if raw is None:
            return None
        names = frozenset(params)
        if names not in self._plans:
            self._plans[names] = self._build(conn.dialect, params)
        plan = self._plans[names]
        return None if plan is None else (raw, plan)

    def _build(self, dialect: Dialect, params: Mapping[str, Any]) -> P | None:
        raise NotImplementedError


class PreparedWrite(_Prepared[_Plan]):
    """An INSERT or UPDATE run by name-bound parameters; `execute` returns the rows it changed."""

    def __init__(self, statement: UpdateBase) -> None:
        super().__init__()
        self.statement = statement

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        found = self._sqlite_plan(conn, params)
        if found is None:
            return conn.execute(self.statement, dict(params)).rowcount
        raw, plan = found
        return run_on_sqlite(conn, raw, plan.sql, plan.args(params))

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """The statement once per row (SQLAlchemy's executemany elsewhere); every row binds the same names."""
        if not rows:
            return
        found = self._sqlite_plan(conn, rows[0])
        if found is None:
            conn.execute(self.statement, [dict(row) for row in rows])
            return
        raw, plan = found
        if any(row.keys() != rows[0].keys() for row in rows):
            raise ValueError("execute_many: every row must bind the same parameters")
        args = [plan.args(row) for row in rows]
        with _sqlalchemy_errors(conn, plan.sql, args[0]):
            raw.executemany(plan.sql, args)

    def _build(self, dialect: Dialect, params: Mapping[str, Any]) -> _Plan | None:
        return _compile(self.statement, dialect, params)[1]


class PreparedRead(_Prepared[_ReadPlan]):
    """A SELECT run by name-bound parameters: `first` gives its first row (its columns by name) or None, `all` every
    row, `scalar` the first column of the first row. The values are what SQLAlchemy's result would hold: each
    column's type decodes it as the dialect does."""

    def __init__(self, statement: Select[Any]) -> None:
        super().__init__()
        self.statement = statement

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any | None:
        rows = self._run(conn, params or {}, first=True)
        if rows is None:
            return conn.execute(self.statement, dict(params or {})).first()
        return rows[0] if rows else None

    def all(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        rows = self._run(conn, params or {}, first=False)
        return conn.execute(self.statement, dict(params or {})).all() if rows is None else rows

    def scalar(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        row = self.first(conn, params)
        return None if row is None else row[0]

    def _run(self, conn: Connection, params: Mapping[str, Any], *, first: bool) -> list[Any] | None:
        """The rows, or None where this statement goes through `conn.execute`."""
        found = self._sqlite_plan(conn, params)
        if found is None:
            return None
        raw, plan = found
        args = plan.query.args(params)
        with _sqlalchemy_errors(conn, plan.query.sql, args):
            cursor = raw.execute(plan.query.sql, args)
            rows = [cursor.fetchone()] if first else cursor.fetchall()
        return [plan.make_row(values) for values in rows if values is not None]

    def _build(self, dialect: Dialect, params: Mapping[str, Any]) -> _ReadPlan | None:
        compiled, query = _compile(self.statement, dialect, params)
        columns = compiled._result_columns
        if query is None or not columns:
            return None
        keys = [column[0] for column in columns]
        if len(set(keys)) != len(keys) or not all(key.isidentifier() and not key.startswith("_") for key in keys):
            return None
        processors = tuple(column[3]._cached_result_processor(dialect, None) for column in columns)
        return _ReadPlan(query, namedtuple("Row", keys), processors)


__all__ = ["PreparedRead", "PreparedWrite", "run_on_sqlite", "sqlite_connection"]
