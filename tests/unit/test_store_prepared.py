"""A turn's statements handed straight to SQLite store and read what SQLAlchemy would have, and fail as it would."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, event, insert, select
from sqlalchemy.exc import IntegrityError

from kefu.dialogue.state import _STATES, _UPDATE
from kefu.handoff.tickets import Tickets
from kefu.knowledge.repository import KnowledgeRepository
from kefu.store import ConversationStore
from kefu.store.database import create_engine, migrate
from kefu.store.prepared import PreparedRead, PreparedWrite
from kefu.store.repository import _MESSAGE_COLUMNS, _MESSAGES, _SESSIONS, AuditEntry, _newest_of_session


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConversationStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'kefu.db'}")
    await migrate(engine)
    yield ConversationStore(engine)
    await engine.dispose()


def _message(message_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "session_id": "s1",
        "tenant_id": "default",
        "role": "assistant",
        "text": "退货政策：7 天无理由 ✅",
        "client_message_id": None,
        "citations": [{"doc": "returns.md", "score": 0.91}],
        "handoff": True,
        "stage_latency_ms": {"understand": 1.25},
        "metadata": {"route": "faq", "nested": {"ok": [1, 2]}},
        "created_at": datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC),
        "prompt_tokens": 12,
    }


def _rows(path: Path, table: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path)) as raw:
        raw.row_factory = sqlite3.Row
        return [dict(row) for row in raw.execute(f"SELECT * FROM {table} ORDER BY rowid")]


async def _open(store: ConversationStore) -> None:
    await store.open_session(session_id="s1", user_id="u", channel="web")


async def test_a_prepared_insert_stores_what_sqlalchemy_stores_and_sqlalchemy_never_sees_it(
    store: ConversationStore, tmp_path: Path
) -> None:
    await _open(store)
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    prepared = PreparedWrite(insert(_MESSAGES))

    def write(conn: Connection) -> None:
        conn.execute(insert(_MESSAGES), _message("by-sqlalchemy"))
        statements = len(seen)
        assert prepared.execute(conn, _message("prepared")) == 1
        assert len(seen) == statements  # straight to sqlite3: no statement went through SQLAlchemy

    event.listen(store.engine.sync_engine.__class__, "before_cursor_execute", count)
    try:
        await store.transaction(write, write=True)
    finally:
        event.remove(store.engine.sync_engine.__class__, "before_cursor_execute", count)
    assert any("INSERT INTO messages" in s for s in seen)
    by_sqlalchemy, prepared_row = _rows(tmp_path / "kefu.db", "messages")
    assert {**by_sqlalchemy, "id": None} == {**prepared_row, "id": None}
    stored = (await store.list_messages("s1"))[-1]
    assert stored.id == "prepared"
    assert stored.citations == [{"doc": "returns.md", "score": 0.91}] and stored.handoff is True
    assert stored.created_at == datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)


async def test_a_duplicate_key_is_sqlalchemys_integrity_error_without_the_customers_text(
    store: ConversationStore,
) -> None:
    await _open(store)
    prepared = PreparedWrite(insert(_MESSAGES))
    await store.transaction(lambda conn: prepared.execute(conn, _message("m1")), write=True)
    with pytest.raises(IntegrityError) as raised:
        await store.transaction(lambda conn: prepared.execute(conn, _message("m1")), write=True)
    assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    assert "退货政策" not in str(raised.value)
    assert [m.id for m in await store.list_messages("s1")] == ["m1"]  # the failed transaction left nothing behind


async def test_an_update_says_how_many_rows_it_changed(store: ConversationStore) -> None:
    await _open(store)
    now = datetime(2026, 12, 7, tzinfo=UTC)
    row = {"session_id": "s1", "tenant_id": "default", "data": {"flows": []}, "version": 1, "updated_at": now}
    await store.transaction(lambda conn: conn.execute(insert(_STATES), row), write=True)
    stale = {"b_session_id": "s1", "b_expected": 5, "b_data": {"x": 1}, "b_version": 6, "b_now": now}
    current = {**stale, "b_expected": 1, "b_version": 2}
    assert await store.transaction(lambda conn: _UPDATE.execute(conn, stale), write=True) == 0
    assert await store.transaction(lambda conn: _UPDATE.execute(conn, current), write=True) == 1


async def test_a_column_left_to_its_python_default_goes_through_sqlalchemy(
    store: ConversationStore, tmp_path: Path
) -> None:
    prepared = PreparedWrite(insert(_SESSIONS))
    values = {"tenant_id": "default", "user_id": "u2", "channel": "web", "owner": "bot", "status": "open"}
    await store.transaction(lambda conn: prepared.execute(conn, values), write=True)
    (row,) = _rows(tmp_path / "kefu.db", "sessions")
    assert row["user_id"] == "u2" and len(row["id"]) == 32 and row["created_at"]  # id and times from the defaults


async def test_prepared_reads_give_sqlalchemys_rows_without_going_through_it(store: ConversationStore) -> None:
    await _open(store)
    write = PreparedWrite(insert(_MESSAGES))
    await store.transaction(lambda conn: [write.execute(conn, _message(f"m{i}")) for i in range(3)], write=True)
    newest = _newest_of_session(_MESSAGE_COLUMNS)
    params = {"session_id": "s1", "tenant_id": "default", "limit": 2}
    by_id = select(*_MESSAGE_COLUMNS).where(_MESSAGES.c.id == bindparam("b_id"))
    user_of_s1 = select(_SESSIONS.c.user_id).where(_SESSIONS.c.id == "s1")  # a value the statement binds itself
    seen: list[str] = []

    def read(conn: Connection) -> tuple[Any, ...]:
        expected = (
            conn.execute(newest, params).all(),
            conn.execute(by_id, {"b_id": "m1"}).first(),
            conn.execute(by_id, {"b_id": "none"}).first(),
            conn.execute(user_of_s1).scalar(),
        )
        event.listen(conn, "before_cursor_execute", lambda *args: seen.append(args[2]))
        got = (
            PreparedRead(newest).all(conn, params),
            PreparedRead(by_id).first(conn, {"b_id": "m1"}),
            PreparedRead(by_id).first(conn, {"b_id": "none"}),
            PreparedRead(user_of_s1).scalar(conn),
        )
        return expected, got

    expected, got = await store.transaction(read, write=False)
    assert seen == []
    assert [tuple(row) for row in got[0]] == [tuple(row) for row in expected[0]]
    assert [row.id for row in got[0]] == ["m2", "m1"]
    assert tuple(got[1]) == tuple(expected[1]) and got[1].citations == [{"doc": "returns.md", "score": 0.91}]
    assert got[1].created_at == expected[1].created_at == datetime(2026, 12, 7, 1, 2, 3, 456789)
    assert got[2] is expected[2] is None
    assert got[3] == expected[3] == "u"


async def test_a_read_sqlite_cannot_take_as_compiled_goes_through_sqlalchemy(store: ConversationStore) -> None:
    await _open(store)
    ids = select(_SESSIONS.c.id).where(_SESSIONS.c.id.in_(["s1", "s2"]))  # an expanding IN list
    assert await store.transaction(lambda conn: PreparedRead(ids).scalar(conn), write=False) == "s1"


async def test_an_unanswered_question_is_counted_straight_on_sqlite(store: ConversationStore, tmp_path: Path) -> None:
    """The knowledge store counts a turn's unanswered question without SQLAlchemy's per-statement work, and the row
    reads back through SQLAlchemy as written: a second asking counts on the first's row, with its own time."""
    knowledge = KnowledgeRepository(store.engine)
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(store.engine.sync_engine.__class__, "before_cursor_execute", count)
    try:
        first = await knowledge.record_gap(
            tenant_id="t", question="Do you ship to Mars? ", lang="en", reason="not_covered", session_id="s1"
        )
        again = await knowledge.record_gap(
            tenant_id="t", question="do you ship to mars", lang="en", reason="low_score", session_id="s2"
        )
        assert not [s for s in seen if "kb_gaps" in s]
        (gap,) = await knowledge.gaps("t")
    finally:
        event.remove(store.engine.sync_engine.__class__, "before_cursor_execute", count)
        await knowledge.aclose()
    assert (first, again) == (1, 2)
    (row,) = _rows(tmp_path / "kefu.db", "kb_gaps")
    assert (row["question"], row["reason"], row["count"], row["last_session_id"], row["lang"]) == (
        "do you ship to mars",
        "low_score",
        2,
        "s2",
        "en",
    )
    assert gap.first_seen.tzinfo is not None and gap.first_seen <= gap.last_seen <= datetime.now(UTC)


async def test_a_batch_of_audit_events_chains_and_goes_straight_to_sqlite(store: ConversationStore) -> None:
    """Model I/O is audited in batches: one executemany on sqlite3, chained as one at a time would be."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    await store.audit(actor="admin", action="config.change", target="k0", data={"值": 0})
    batch = [AuditEntry(actor="kefu", action="llm.call", target=f"s{i}", data={"n": i}) for i in range(3)]
    event.listen(store.engine.sync_engine.__class__, "before_cursor_execute", count)
    try:
        await store.audit_many(batch)
    finally:
        event.remove(store.engine.sync_engine.__class__, "before_cursor_execute", count)
    assert not [s for s in seen if "audit_events" in s]
    assert await store.verify_audit_chain() == (True, 4, "")
    events = await store.audit_events(tenant_id="default")
    assert [(e.target, e.data) for e in events] == [
        ("s2", {"n": 2}),
        ("s1", {"n": 1}),
        ("s0", {"n": 0}),
        ("k0", {"值": 0}),
    ]


async def test_execute_many_needs_the_same_names_in_every_row(store: ConversationStore) -> None:
    await _open(store)
    prepared = PreparedWrite(insert(_MESSAGES))
    rows = [_message("m1"), {**_message("m2"), "extra": 1}]
    with pytest.raises(ValueError, match="same parameters"):
        await store.transaction(lambda conn: prepared.execute_many(conn, rows), write=True)
    assert await store.list_messages("s1") == []


async def test_a_customers_place_in_the_queue_counts_tickets_ahead(store: ConversationStore) -> None:
    """Higher priority first, then the older of the same priority; another tenant's queue does not count."""
    tickets = Tickets(store)
    opened = []
    for session, tenant, priority in [("a", "default", 1), ("b", "default", 2), ("c", "default", 1), ("d", "acme", 3)]:
        await store.open_session(session_id=f"session-{session}", user_id=session, channel="web", tenant_id=tenant)
        ticket, _ = await tickets.open(
            session_id=f"session-{session}",
            tenant_id=tenant,
            reason="asked",
            priority=priority,
            summary="",
            intent=None,
            emotion=None,
            context={},
        )
        opened.append(ticket)
    assert [await tickets.position(t) for t in opened] == [2, 1, 3, 1]
