"""Store behaviour on the default SQLite file: migrations, ordering, audit chain, feedback."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from kefu.errors import NotFoundError
from kefu.knowledge.repository import KnowledgeRepository
from kefu.store import ConversationStore
from kefu.store.database import create_engine, migrate, migration_status


@pytest.fixture
async def store(tmp_path: Path) -> ConversationStore:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'kefu.db'}")
    await migrate(engine)
    yield ConversationStore(engine)  # type: ignore[misc]
    await engine.dispose()


async def test_migrations_reach_head_and_are_idempotent(store: ConversationStore) -> None:
    await migrate(store.engine)
    current, head = await migration_status(store.engine)
    assert current == head == "0007"


async def test_messages_come_back_in_order_and_newest_window(store: ConversationStore) -> None:
    session = await store.open_session(session_id=None, user_id="u", channel="web")
    for i in range(5):
        await store.add_customer_message(session, f"m{i}")
    assert [m.text for m in await store.list_messages(session.id)] == [f"m{i}" for i in range(5)]
    assert [m.text for m in await store.list_messages(session.id, limit=2)] == ["m3", "m4"]
    assert (await store.list_messages(session.id))[0].created_at.tzinfo is not None


async def test_session_ids_are_scoped_to_their_customer_and_tenant(store: ConversationStore) -> None:
    session = await store.open_session(session_id="chosen-id-1", user_id="alice", channel="web")
    assert session.id == "chosen-id-1"
    assert (await store.open_session(session_id="chosen-id-1", user_id="alice", channel="web")).id == session.id
    with pytest.raises(NotFoundError):
        await store.open_session(session_id="chosen-id-1", user_id="bob", channel="web")
    with pytest.raises(NotFoundError):
        await store.get_session("chosen-id-1", tenant_id="other-shop")


async def test_feedback_must_point_at_a_message_of_the_session(store: ConversationStore) -> None:
    session = await store.open_session(session_id=None, user_id="u", channel="web")
    msg, _ = await store.add_customer_message(session, "hi")
    assert await store.add_feedback(session=session, kind="thumb", rating=1, message_id=msg.id)
    other = await store.open_session(session_id=None, user_id="v", channel="web")
    with pytest.raises(NotFoundError):
        await store.add_feedback(session=other, kind="thumb", rating=-1, message_id=msg.id)


async def test_audit_chain_verifies_and_detects_tampering(store: ConversationStore) -> None:
    for i in range(3):
        await store.audit(actor="admin", action="config.change", target=f"key{i}", data={"值": i})
    assert await store.verify_audit_chain() == (True, 3, "")
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET data = '{}' WHERE id = 2"))
    ok, _, problem = await store.verify_audit_chain()
    assert not ok and "audit event 2" in problem


async def test_dialogue_state_is_written_only_when_it_changed(store: ConversationStore) -> None:
    """Most turns start no flow: their unchanged state costs no write, and a real change still detects a race."""
    from kefu.dialogue.state import DialogueStates, FlowRun
    from kefu.errors import ConflictError

    states = DialogueStates(store)
    session = await store.open_session(session_id=None, user_id="u", channel="web")

    async def rows() -> list[tuple[int, str]]:
        query = text("SELECT version, data FROM dialogue_states WHERE session_id = :s")
        async with store.engine.connect() as conn:
            return [(int(r[0]), str(r[1])) for r in await conn.execute(query, {"s": session.id})]

    fresh = await states.load(session.id)
    await states.save(session.id, "default", fresh)
    assert await rows() == []  # nothing to remember yet: no row
    fresh.active = FlowRun(flow="order_status", run_id="r1", step="ask_order", slots={})
    await states.save(session.id, "default", fresh)
    assert [v for v, _ in await rows()] == [1]

    loaded = await states.load(session.id)
    await states.save(session.id, "default", loaded)
    assert [v for v, _ in await rows()] == [1]  # loaded and unchanged: not written again
    assert loaded.active is not None
    loaded.active.slots["order_number"] = "LM26110625"  # a flow fills a slot in place
    await states.save(session.id, "default", loaded)
    assert [v for v, _ in await rows()] == [2]
    assert "LM26110625" in (await rows())[0][1]

    stale = await states.load(session.id)
    racing = await states.load(session.id)
    racing.unresolved_streak = 1
    await states.save(session.id, "default", racing)
    stale.unresolved_streak = 2
    with pytest.raises(ConflictError):
        await states.save(session.id, "default", stale)


async def test_a_turn_that_created_its_session_reads_no_state_and_a_racing_save_still_conflicts(
    store: ConversationStore,
) -> None:
    """The first turn of a new session skips the read; a turn of the same session that saved first still wins."""
    from kefu.dialogue.state import DialogueStates, FlowRun
    from kefu.errors import ConflictError

    states = DialogueStates(store)
    session = await store.open_session(session_id=None, user_id="u", channel="web")
    first = await states.load(session.id, new_session=True)
    assert first.active is None and first.version == 0
    other = await states.load(session.id)
    other.unresolved_streak = 1
    await states.save(session.id, "default", other)
    first.active = FlowRun(flow="order_status", run_id="r1", step="ask_order", slots={})
    with pytest.raises(ConflictError):
        await states.save(session.id, "default", first)
    assert (await states.load(session.id)).unresolved_streak == 1


async def test_history_reads_the_words_without_the_traces(store: ConversationStore) -> None:
    """A prompt's history needs who said what; the words-only read leaves the kilobytes of trace in the database."""
    from kefu.store.repository import NewReply

    turn = await store.start_turn(session_id=None, user_id="u", channel="web", text_="退货政策是什么？")
    trace = {"understanding": {"intent": "return_policy", "emotion": {"label": "neutral"}}, "big": "x" * 4000}
    await store.add_reply(
        NewReply(
            session_id=turn.session.id,
            tenant_id="default",
            reply_to=turn.message.id,
            text="七天无理由退货 [1]",
            citations=[{"title": "退换货政策"}],
            stage_latency_ms={"generate": 20.0},
            trace=trace,
        )
    )
    full = await store.list_messages(turn.session.id)
    words = await store.list_messages(turn.session.id, words_only=True)
    assert [(m.id, m.role, m.text, m.created_at) for m in words] == [(m.id, m.role, m.text, m.created_at) for m in full]
    assert full[1].trace == trace and full[1].citations == [{"title": "退换货政策"}]
    assert words[1].trace == {} and words[1].citations == [] and words[1].stage_latency_ms == {}
    # how the customer felt is still there: the dialogue state counts unhappy turns from it
    assert words[1].emotion == full[1].emotion == "neutral"
    assert words[0].emotion is None and full[0].emotion is None


async def test_a_sessions_history_is_read_through_its_own_index(store: ConversationStore) -> None:
    """Reading a session's last messages must not scan the tenant's whole history (SQLite's planner, given only
    single-column indexes, chose the tenant index and sorted every message of the tenant)."""
    import sqlite3

    from kefu.store.repository import _SESSION_WORDS

    turn = await store.start_turn(session_id=None, user_id="u", channel="web", text_="退货政策是什么？")
    query = _SESSION_WORDS.statement.params(session_id=turn.session.id, tenant_id="default", limit=41)
    sql = str(query.compile(store.engine.sync_engine, compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(store.engine.url.database or "") as db:
        plan = " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
    assert "ix_messages_session_created" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def _channel(session_id: str) -> Callable[[Connection], Any]:
    return lambda conn: conn.execute(text("SELECT channel FROM sessions WHERE id = :id"), {"id": session_id}).scalar()


async def test_reads_run_beside_a_write_in_progress_and_see_only_what_was_committed(store: ConversationStore) -> None:
    session = await store.open_session(session_id=None, user_id="u", channel="web")
    await store.add_customer_message(session, "first")
    entered, release = threading.Event(), threading.Event()

    def slow_write(conn: Connection) -> None:
        conn.execute(text("UPDATE sessions SET channel = 'api' WHERE id = :id"), {"id": session.id})
        entered.set()
        release.wait(10)

    writing = asyncio.create_task(store.transaction(slow_write, write=True, brief=False))
    try:
        assert await asyncio.to_thread(entered.wait, 10)
        # a brief write waits for the writing connection on its thread, not on the event loop
        second = asyncio.create_task(store.add_customer_message(session, "second"))
        # answered while the write is still open (a read queued behind it would time out here)
        history = await asyncio.wait_for(store.list_messages(session.id), 5)
        before = await asyncio.wait_for(store.transaction(_channel(session.id), write=False), 5)
        assert not second.done()
    finally:
        release.set()
        await writing
    await asyncio.wait_for(second, 5)
    assert [m.text for m in history] == ["first"]
    assert before == "web"
    assert await store.transaction(_channel(session.id), write=False) == "api"
    assert [m.text for m in await store.list_messages(session.id)] == ["first", "second"]


async def test_a_brief_transaction_runs_on_the_event_loop_and_a_long_one_on_a_thread(store: ConversationStore) -> None:
    def where(conn: Connection) -> int:
        conn.execute(text("SELECT 1"))
        return threading.get_ident()

    loop_thread = threading.get_ident()
    assert await store.transaction(where, write=True) == loop_thread
    assert await store.transaction(where, write=False) == loop_thread
    assert await store.transaction(where, write=True, brief=False) != loop_thread
    assert await store.transaction(where, write=False, brief=False) != loop_thread


async def test_a_writer_outside_the_lock_file_never_stalls_the_event_loop(store: ConversationStore) -> None:
    """An operator's `sqlite3` shell (here a connection of the test) holds SQLite's write lock: a turn's brief write
    waits for it on the writing thread, while the event loop goes on serving reads."""
    session = await store.open_session(session_id="s-1", user_id="u", channel="web")
    shell = sqlite3.connect(store.engine.url.database or "", isolation_level=None)
    try:
        shell.execute("BEGIN IMMEDIATE")
        shell.execute("UPDATE sessions SET channel = 'api' WHERE id = 's-1'")
        writing = asyncio.create_task(store.add_customer_message(session, "hello"))
        await asyncio.sleep(0.3)
        assert not writing.done()  # held in SQLite's busy handler, the loop would have come back only to its error
        assert await asyncio.wait_for(store.transaction(_channel("s-1"), write=False), 5) == "web"
        shell.execute("COMMIT")
    finally:
        shell.close()
    await asyncio.wait_for(writing, 5)
    assert [m.text for m in await store.list_messages("s-1")] == ["hello"]
    assert await store.transaction(_channel("s-1"), write=False) == "api"


async def test_a_transaction_sent_as_a_read_cannot_write(store: ConversationStore) -> None:
    session = await store.open_session(session_id=None, user_id="u", channel="web")

    with pytest.raises(OperationalError, match="readonly"):
        await store.transaction(lambda conn: conn.execute(text("DELETE FROM sessions")), write=False)

    assert await store.transaction(_channel(session.id), write=False) == "web"


@asynccontextmanager
async def _lock_held_by_another_process(lock_file: Path) -> AsyncIterator[None]:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLD_LOCK, str(lock_file), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert (await asyncio.wait_for(holder.stdout.readline(), 10)).strip() == b"held"
        yield
    finally:
        holder.stdin.write(b"\n")
        await holder.stdin.drain()
        await asyncio.wait_for(holder.wait(), 10)


async def test_a_write_waits_while_another_worker_process_writes_and_reads_go_on(
    store: ConversationStore, tmp_path: Path
) -> None:
    """Workers sharing the file take turns through `kefu.db.write-lock` (here a second process holds it)."""
    async with _lock_held_by_another_process(tmp_path / "kefu.db.write-lock"):
        opening = asyncio.create_task(store.open_session(session_id="s-1", user_id="u", channel="web"))
        await asyncio.sleep(0.5)
        assert not opening.done()  # the write waits for the other process
        assert await asyncio.wait_for(store.transaction(_channel("s-1"), write=False), 5) is None  # reads go on
    session = await asyncio.wait_for(opening, 5)
    assert session.id == "s-1"
    assert await store.transaction(_channel("s-1"), write=False) == "web"


async def test_writes_that_waited_for_another_worker_run_on_the_event_loop_in_order_then_let_the_file_go(
    store: ConversationStore, tmp_path: Path
) -> None:
    """While another process holds the lock file, this worker's writes queue; once it lets go, they run on the event
    loop one after the other (on the lane's thread each had held the file through its GIL waits), a cancelled one
    not at all, and the file is free again for the other process."""
    await store.open_session(session_id="s-1", user_id="u", channel="web")
    lock_file = tmp_path / "kefu.db.write-lock"

    def set_channel(channel: str) -> Callable[[Connection], int]:
        def transaction(conn: Connection) -> int:
            conn.execute(text("UPDATE sessions SET channel = :c WHERE id = 's-1'"), {"c": channel})
            return threading.get_ident()

        return transaction

    async with _lock_held_by_another_process(lock_file):
        writes = [
            asyncio.create_task(store.transaction(set_channel(c), write=True)) for c in ("api", "cancelled", "wechat")
        ]
        await asyncio.sleep(0.3)
        assert not any(w.done() for w in writes)
        writes[1].cancel()
    threads = await asyncio.wait_for(asyncio.gather(writes[0], writes[2]), 5)
    assert threads == [threading.get_ident()] * 2
    assert writes[1].cancelled()
    assert await store.transaction(_channel("s-1"), write=False) == "wechat"
    assert await _lock_is_free(lock_file)


async def test_a_write_cancelled_while_its_worker_waits_for_the_file_gives_its_turn_back(
    store: ConversationStore, tmp_path: Path
) -> None:
    lock_file = tmp_path / "kefu.db.write-lock"
    async with _lock_held_by_another_process(lock_file):
        opening = asyncio.create_task(store.open_session(session_id="s-1", user_id="u", channel="web"))
        await asyncio.sleep(0.3)
        opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await asyncio.sleep(0.3)  # the lane's thread takes the file for the cancelled write, then lets it go
    assert await _lock_is_free(lock_file)
    assert await store.transaction(_channel("s-1"), write=False) is None
    session = await asyncio.wait_for(store.open_session(session_id="s-2", user_id="u", channel="web"), 5)
    assert session.id == "s-2"


async def _lock_is_free(lock_file: Path) -> bool:
    """Whether another process can take the lock file at once."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _TRY_LOCK, str(lock_file), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(probe.communicate(), 10)
    return out.strip() == b"free"


async def test_knowledge_writes_take_their_turn_too(store: ConversationStore, tmp_path: Path) -> None:
    """An unanswered question is counted by the knowledge store's writing thread, in turn with the other writers
    (on the async driver it had held SQLite's own write lock across awaits, outside the lock file)."""
    knowledge = KnowledgeRepository(store.engine)
    try:
        async with _lock_held_by_another_process(tmp_path / "kefu.db.write-lock"):
            counting = asyncio.create_task(
                knowledge.record_gap(
                    tenant_id="t", question="Do you ship to Mars?", lang="en", reason="x", session_id=None
                )
            )
            await asyncio.sleep(0.5)
            assert not counting.done()
        assert await asyncio.wait_for(counting, 5) == 1
        again = await knowledge.record_gap(
            tenant_id="t", question="do you ship to mars", lang="en", reason="x", session_id=None
        )
        assert again == 2
        assert [(g.question, g.count) for g in await knowledge.gaps("t")] == [("do you ship to mars", 2)]
        assert await knowledge.delete_gaps("t") == 1
    finally:
        await knowledge.aclose()


_HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""

_TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("busy")
else:
    print("free")
"""
