"""The conversation store: sessions, messages, feedback and audit events behind one async API."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Connection,
    Integer,
    Row,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    null,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from kefu.errors import NotFoundError, StoreUnavailableError
from kefu.safety.crypto import TextCipher, is_encrypted
from kefu.store.dialogue_models import DialogueStateRow, Ticket
from kefu.store.models import AuditEvent, ChatMessage, ChatSession, Feedback, new_id, utcnow
from kefu.store.prepared import PreparedRead, PreparedWrite
from kefu.store.sqlite_thread import SQLiteThread, is_sqlite_file

GENESIS_HASH = "0" * 64
T = TypeVar("T")
# The per-turn paths are blocking Core statements in one function per transaction (see `_run`): a turn
# is the hot path, and the ORM's unit of work and aiosqlite's per-statement thread hops cost more CPU
# than the SQL itself (measured in bench/overhead.py).
_SESSIONS = cast(Table, ChatSession.__table__)
_MESSAGES = cast(Table, ChatMessage.__table__)
_AUDIT = cast(Table, AuditEvent.__table__)
_FEEDBACK = cast(Table, Feedback.__table__)
_SESSION_COLUMNS = (
    _SESSIONS.c.id,
    _SESSIONS.c.tenant_id,
    _SESSIONS.c.user_id,
    _SESSIONS.c.channel,
    _SESSIONS.c.owner,
    _SESSIONS.c.status,
    _SESSIONS.c.created_at,
    _SESSIONS.c.release_experiment,
    _SESSIONS.c.release_arm,
)
_MESSAGE_COLUMNS = tuple(c for c in _MESSAGES.c if c.key != "tenant_id")
_EMOTION_PATH = ("understanding", "emotion", "label")
"""Where a reply's trace keeps the emotion understanding read in the message it answers."""
_WORD_COLUMNS = (
    *(null().label(c.name) if c.name in ("metadata", "citations", "stage_latency_ms") else c for c in _MESSAGE_COLUMNS),
    _MESSAGES.c.metadata[_EMOTION_PATH].as_string().label("emotion"),
)


def _newest_of_session(columns: Sequence[Any]) -> Select[Any]:
    """A session's newest messages, newest first: built once (a statement's construction costs more than its run)."""
    return (
        select(*columns)
        .where(_MESSAGES.c.session_id == bindparam("session_id"), _MESSAGES.c.tenant_id == bindparam("tenant_id"))
        .order_by(_MESSAGES.c.created_at.desc(), _MESSAGES.c.id.desc())
        .limit(bindparam("limit", type_=Integer()))
    )


_MESSAGE_KEYS = tuple(c.name for c in _MESSAGE_COLUMNS)
_WORD_KEYS = tuple(c.name for c in _WORD_COLUMNS)
_SESSION_MESSAGES = PreparedRead(_newest_of_session(_MESSAGE_COLUMNS))
_SESSION_WORDS = PreparedRead(_newest_of_session(_WORD_COLUMNS))
# A turn's writes go to SQLite without SQLAlchemy's per-call work (store/prepared.py).
_INSERT_SESSION = PreparedWrite(insert(_SESSIONS))
_INSERT_MESSAGE = PreparedWrite(insert(_MESSAGES))
# A turn's other statements, built once too (reading the session's row took 25 µs built once, 110 µs built on each
# call): bound by name, with names no column has, as update() requires.
_SESSION_BY_ID = PreparedRead(select(*_SESSION_COLUMNS).where(_SESSIONS.c.id == bindparam("b_session_id")))
_TOUCH_SESSION = PreparedWrite(
    update(_SESSIONS).where(_SESSIONS.c.id == bindparam("b_session_id")).values(updated_at=bindparam("b_now"))
)
_MESSAGE_BY_CLIENT_ID = PreparedRead(
    select(*_MESSAGE_COLUMNS).where(
        _MESSAGES.c.session_id == bindparam("b_session_id"), _MESSAGES.c.client_message_id == bindparam("b_client_id")
    )
)
_LAST_AUDIT_HASH = PreparedRead(select(_AUDIT.c.hash).order_by(_AUDIT.c.id.desc()).limit(1))
_INSERT_AUDIT = PreparedWrite(insert(_AUDIT))
_MAX_TURN_ATTEMPTS = 2
_PURGE_LOCK = 0x6B656675_7075
"""PostgreSQL advisory lock key of the scheduled purge ("kefu", "pu")."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A conversation as the rest of kefu sees it."""

    id: str
    tenant_id: str
    user_id: str
    channel: str
    owner: str
    status: str
    created_at: datetime
    experiment: str | None = None
    arm: str | None = None
    """The release experiment and arm the session was assigned to at its first turn in it (docs/release.md)."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A stored message with its trace."""

    id: str
    session_id: str
    role: str
    text: str
    created_at: datetime
    client_message_id: str | None = None
    reply_to: str | None = None
    intent: str | None = None
    route: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    handoff: bool = False
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    stage_latency_ms: dict[str, float] = field(default_factory=dict)
    error_code: str | None = None
    error: str | None = None
    trace: dict[str, Any] = field(default_factory=dict)
    redacted_text: str | None = None
    """The text with personal data replaced by placeholders; None when it had none (or is not a customer's)."""
    experiment: str | None = None
    arm: str | None = None
    """The release arm that served a bot reply (docs/release.md)."""
    arm_error: str | None = None
    """A canary failure the control arm covered for in this reply: the customer saw no error."""
    emotion: str | None = None
    """A bot reply's record of the customer's emotion in the message it answers (its trace's understanding), also
    where the trace itself was not read (`list_messages(words_only=True)`)."""


_REPLY_COLUMNS = tuple(f.name for f in fields(MessageRecord) if f.name not in ("trace", "redacted_text", "emotion"))
"""A reply's record fields that are its row's columns (its trace is stored as `metadata`)."""


@dataclass(frozen=True, slots=True)
class NewReply:
    """What the pipeline produced for one customer message."""

    session_id: str
    tenant_id: str
    reply_to: str | None
    text: str
    role: str = "assistant"
    intent: str | None = None
    route: str | None = None
    citations: Sequence[dict[str, Any]] = ()
    handoff: bool = False
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    stage_latency_ms: dict[str, float] = field(default_factory=dict)
    error_code: str | None = None
    error: str | None = None
    trace: dict[str, Any] = field(default_factory=dict)
    experiment: str | None = None
    arm: str | None = None
    arm_error: str | None = None
    assign_session: bool = False
    """Also record `experiment` and `arm` as the session's assignment (its first turn in the experiment)."""


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A customer's thumb on one reply (kind 'thumb', rating 1 or -1) or rating of a session ('csat', 1-5)."""

    id: str
    session_id: str
    message_id: str | None
    kind: str
    rating: int
    comment: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit event waiting to be appended to the chain."""

    actor: str
    action: str
    tenant_id: str = "default"
    target: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class TurnStart:
    """A customer message as stored at the start of a turn, and the session it belongs to."""

    session: SessionRecord
    message: MessageRecord
    created: bool
    """False when the message is a resend of a client_message_id already stored (it was not stored again)."""
    new_session: bool
    """The session was created by this message, so it has no earlier messages."""
    also: object = None
    """What `start_turn(also=...)` read in the same transaction."""


_AnyRow = Row[*tuple[Any, ...]]


def _session_record(row: ChatSession | _AnyRow) -> SessionRecord:
    return SessionRecord(
        row.id,
        row.tenant_id,
        row.user_id,
        row.channel,
        row.owner,
        row.status,
        aware(row.created_at),
        row.release_experiment,
        row.release_arm,
    )


def _emotion(trace: dict[str, Any]) -> str | None:
    label = (trace.get("understanding") or {}).get("emotion", {}).get("label")
    return label if isinstance(label, str) else None


def _message_record(row: _AnyRow, keys: Sequence[str] = _MESSAGE_KEYS) -> MessageRecord:
    """`keys`: the names of the row's columns in order (`_MESSAGE_COLUMNS` unless told): one dict built from them is
    cheaper than a Row's attributes or `_asdict`, and a session's history is dozens of rows."""
    m = dict(zip(keys, row, strict=True))
    trace: dict[str, Any] = dict(m["metadata"] or {})
    return MessageRecord(
        id=m["id"],
        session_id=m["session_id"],
        role=m["role"],
        text=m["text"],
        created_at=aware(m["created_at"]),
        client_message_id=m["client_message_id"],
        reply_to=m["reply_to"],
        intent=m["intent"],
        route=m["route"],
        citations=list(m["citations"] or []),
        handoff=m["handoff"],
        model=m["model"],
        prompt_tokens=m["prompt_tokens"],
        completion_tokens=m["completion_tokens"],
        latency_ms=m["latency_ms"],
        stage_latency_ms=dict(m["stage_latency_ms"] or {}),
        error_code=m["error_code"],
        error=m["error"],
        trace=trace,
        redacted_text=m["redacted_text"],
        experiment=m["experiment"],
        arm=m["arm"],
        arm_error=m["arm_error"],
        emotion=m["emotion"] if "emotion" in m else _emotion(trace),
    )


def aware(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything kefu stores is UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def audit_hash(prev_hash: str, actor: str, action: str, target: str | None, data: dict[str, Any], at: datetime) -> str:
    stamp = aware(at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    payload = json.dumps(
        [prev_hash, actor, action, target, data, stamp], ensure_ascii=False, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class ConversationStore:
    """Reads and writes conversations; every write commits before it returns."""

    def __init__(self, engine: AsyncEngine, *, cipher: TextCipher | None = None) -> None:
        self.engine = engine
        self._cipher = cipher
        """Decrypts customer originals kept encrypted at rest (privacy.keep_original) when history is read."""
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # SQLite lets one writer in at a time and makes the others poll with sleeps of 1, 2, 5, 10… ms;
        # queueing this process's writers here instead keeps latency flat under concurrent turns, and
        # keeps waiting turns from holding pooled connections.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._sqlite = SQLiteThread(engine.url) if is_sqlite_file(engine.url) else None

    async def aclose(self) -> None:
        """Release what the store holds beside the engine (the SQLite thread); the engine is the caller's."""
        if self._sqlite is not None:
            await self._sqlite.aclose()

    def _db(self) -> AsyncSession:
        return self._sessions()

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        """Held around every write transaction (a no-op where the database queues writers itself)."""
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    async def _run(self, fn: Callable[[Connection], T], *, write: bool, brief: bool = True) -> T:
        """Run `fn` (blocking Core statements on one connection) as one transaction.

        On a SQLite file it runs on the store's SQLite connections (`SQLiteThread`): a `brief` one (a few indexed
        rows, as every turn's are) straight on the event loop when it need not wait, any other on a connection's
        thread. Elsewhere it runs through the async driver (`AsyncConnection.run_sync`), writers holding the write
        lock on an in-memory SQLite.
        """
        if self._sqlite is not None:
            return await self._sqlite.run(fn, write=write, brief=brief)
        if write:
            async with self._writing():
                return await self._run_now(fn)
        return await self._run_now(fn)

    async def transaction(self, fn: Callable[[Connection], T], *, write: bool, brief: bool = True) -> T:
        """Run blocking Core statements as one transaction of this store (other stores of the same database);
        `brief=False` for one that reads or writes many rows (a report), so it never holds up the event loop."""
        return await self._run(fn, write=write, brief=brief)

    async def set_owner(self, session_id: str, owner: str) -> None:
        """Hand a session to a person ('human') or back to the bot ('bot')."""
        statement = update(_SESSIONS).where(_SESSIONS.c.id == session_id).values(owner=owner, updated_at=utcnow())
        await self._run(lambda conn: conn.execute(statement), write=True)

    async def _run_now(self, fn: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    async def ping(self) -> None:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OSError, SQLAlchemyError) as exc:
            raise StoreUnavailableError(f"conversation store unreachable: {type(exc).__name__}") from exc

    async def start_turn(
        self,
        *,
        session_id: str | None,
        user_id: str,
        channel: str,
        text_: str,
        tenant_id: str = "default",
        client_message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        also: Callable[[Connection], object] | None = None,
    ) -> TurnStart:
        """Open (or create) the customer's session and store their message, in one transaction.

        The same as `open_session` then `add_customer_message`, in one round of the database instead of two.
        `also`: a read of the same database the turn needs anyway (the knowledge version), done in this round.
        """

        def transaction(conn: Connection) -> TurnStart:
            session, new_session = _open_session(conn, session_id, user_id, channel, tenant_id)
            extra = also(conn) if also is not None else None
            if client_message_id is not None and not new_session:
                existing = _find_by_client_id(conn, session.id, client_message_id)
                if existing is not None:
                    return TurnStart(session, existing, created=False, new_session=False, also=extra)
            message = _insert_message(conn, session, text_, client_message_id, metadata, touch_session=not new_session)
            return TurnStart(session, message, created=True, new_session=new_session, also=extra)

        for attempt in range(1, _MAX_TURN_ATTEMPTS + 1):
            try:
                return await self._run(transaction, write=True)
            except IntegrityError:
                # Another request created the same new session, or stored the same resend, first; the
                # next attempt finds its rows.
                if attempt == _MAX_TURN_ATTEMPTS:
                    raise
            except (OperationalError, OSError) as exc:
                raise StoreUnavailableError(f"conversation store unreachable: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def open_session(
        self, *, session_id: str | None, user_id: str, channel: str, tenant_id: str = "default"
    ) -> SessionRecord:
        """Return the customer's session, creating it (with the given id, if any) when it does not exist.

        A session that belongs to another customer is reported as not found, so ids cannot be probed.
        """
        try:
            for attempt in range(1, _MAX_TURN_ATTEMPTS + 1):
                try:
                    session, _ = await self._run(
                        lambda conn: _open_session(conn, session_id, user_id, channel, tenant_id), write=True
                    )
                    return session
                except IntegrityError:
                    # Two first messages of one new session raced; the other one created it.
                    if attempt == _MAX_TURN_ATTEMPTS:
                        raise
        except (OperationalError, OSError) as exc:
            raise StoreUnavailableError(f"conversation store unreachable: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def latest_session(self, *, user_id: str, channel: str, tenant_id: str = "default") -> SessionRecord | None:
        query = (
            select(*_SESSION_COLUMNS)
            .where(
                _SESSIONS.c.tenant_id == tenant_id,
                _SESSIONS.c.user_id == user_id,
                _SESSIONS.c.channel == channel,
                _SESSIONS.c.status == "open",
            )
            .order_by(_SESSIONS.c.updated_at.desc())
            .limit(1)
        )
        row = await self._run(lambda conn: conn.execute(query).first(), write=False)
        return _session_record(row) if row is not None else None

    async def get_session(self, session_id: str, *, tenant_id: str = "default") -> SessionRecord:
        row = await self._run(lambda conn: _SESSION_BY_ID.first(conn, {"b_session_id": session_id}), write=False)
        if row is None or row.tenant_id != tenant_id:
            raise NotFoundError(f"session {session_id} not found")
        return _session_record(row)

    async def add_customer_message(
        self,
        session: SessionRecord,
        text_: str,
        *,
        client_message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[MessageRecord, bool]:
        """Store a customer message; returns (message, created). A repeated client_message_id is not stored twice."""

        def transaction(conn: Connection) -> tuple[MessageRecord, bool]:
            if client_message_id is not None:
                existing = _find_by_client_id(conn, session.id, client_message_id)
                if existing is not None:
                    return existing, False
            return _insert_message(conn, session, text_, client_message_id, metadata, touch_session=True), True

        try:
            for attempt in range(1, _MAX_TURN_ATTEMPTS + 1):
                try:
                    return await self._run(transaction, write=True)
                except IntegrityError:
                    # The same resend was stored by a concurrent request; the next attempt finds it.
                    if client_message_id is None or attempt == _MAX_TURN_ATTEMPTS:
                        raise
        except (OperationalError, OSError) as exc:
            raise StoreUnavailableError(f"conversation store unreachable: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def find_by_client_id(self, session_id: str, client_message_id: str) -> MessageRecord | None:
        return await self._run(lambda conn: _find_by_client_id(conn, session_id, client_message_id), write=False)

    async def reply_to(self, message_id: str) -> MessageRecord | None:
        """The bot's reply to a customer message, if one was stored."""
        query = (
            select(*_MESSAGE_COLUMNS)
            .where(_MESSAGES.c.reply_to == message_id, _MESSAGES.c.role == "assistant")
            .order_by(_MESSAGES.c.created_at)
            .limit(1)
        )
        row = await self._run(lambda conn: conn.execute(query).first(), write=False)
        return _message_record(row) if row is not None else None

    async def get_message(self, message_id: str, *, tenant_id: str = "default") -> MessageRecord:
        """One message of the tenant by id, with its trace; NotFoundError when there is none."""
        query = select(*_MESSAGE_COLUMNS).where(_MESSAGES.c.id == message_id, _MESSAGES.c.tenant_id == tenant_id)
        row = await self._run(lambda conn: conn.execute(query).first(), write=False)
        if row is None:
            raise NotFoundError(f"message {message_id} not found")
        record = _message_record(row)
        if self._cipher is not None and is_encrypted(record.text):
            record = replace(record, text=self._cipher.decrypt(record.text))
        return record

    async def add_reply(self, reply: NewReply) -> MessageRecord:
        message = MessageRecord(
            id=new_id(),
            session_id=reply.session_id,
            role=reply.role,
            text=reply.text,
            created_at=utcnow(),
            reply_to=reply.reply_to,
            intent=reply.intent,
            route=reply.route,
            citations=list(reply.citations),
            handoff=reply.handoff,
            model=reply.model,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            latency_ms=reply.latency_ms,
            stage_latency_ms=dict(reply.stage_latency_ms),
            error_code=reply.error_code,
            error=reply.error,
            trace=dict(reply.trace),
            experiment=reply.experiment,
            arm=reply.arm,
            arm_error=reply.arm_error,
            emotion=_emotion(reply.trace),
        )
        row = {name: getattr(message, name) for name in _REPLY_COLUMNS}
        params = {**row, "tenant_id": reply.tenant_id, "metadata": message.trace}
        assign = None
        if reply.assign_session:
            assign = (
                update(_SESSIONS)
                .where(_SESSIONS.c.id == reply.session_id)
                .values(release_experiment=reply.experiment, release_arm=reply.arm)
            )

        def transaction(conn: Connection) -> None:
            _INSERT_MESSAGE.execute(conn, params)
            if assign is not None:
                conn.execute(assign)

        await self._run(transaction, write=True)
        return message

    async def list_messages(
        self, session_id: str, *, limit: int = 200, tenant_id: str = "default", words_only: bool = False
    ) -> list[MessageRecord]:
        """The newest `limit` messages of a session, oldest first.

        `words_only`: without the JSON columns (trace, citations, stage times), for a stage that needs only who said
        what (conversation history for a prompt) and how the customer felt (`emotion`): a reply's trace is
        kilobytes, decoded for every message read.
        """
        query = _SESSION_WORDS if words_only else _SESSION_MESSAGES
        params = {"session_id": session_id, "tenant_id": tenant_id, "limit": limit}
        rows = await self._run(lambda conn: query.all(conn, params), write=False)
        keys = _WORD_KEYS if words_only else _MESSAGE_KEYS
        records = [_message_record(r, keys) for r in reversed(rows)]
        if self._cipher is not None:
            cipher = self._cipher
            records = [replace(r, text=cipher.decrypt(r.text)) if is_encrypted(r.text) else r for r in records]
        return records

    async def add_feedback(
        self,
        *,
        session: SessionRecord,
        kind: str,
        rating: int,
        message_id: str | None = None,
        comment: str | None = None,
    ) -> str:
        """Record a rating of one reply (`message_id`) or of the whole session; a second one replaces the first.

        Returns the feedback's id (the same id when a vote is replaced).
        """

        def transaction(conn: Connection) -> str:
            # Serialises two votes on one session (PostgreSQL; SQLite writers queue on the store's lock).
            conn.execute(select(_SESSIONS.c.id).where(_SESSIONS.c.id == session.id).with_for_update())
            if message_id is not None:
                owner = conn.scalar(select(_MESSAGES.c.session_id).where(_MESSAGES.c.id == message_id))
                if owner != session.id:
                    raise NotFoundError(f"message {message_id} not found in session {session.id}")
                same = _FEEDBACK.c.message_id == message_id
            else:
                same = (
                    (_FEEDBACK.c.session_id == session.id)
                    & (_FEEDBACK.c.kind == kind)
                    & _FEEDBACK.c.message_id.is_(None)
                )
            values = {"kind": kind, "rating": rating, "comment": comment, "created_at": utcnow()}
            existing = conn.scalar(select(_FEEDBACK.c.id).where(same).limit(1))
            if existing is not None:
                conn.execute(update(_FEEDBACK).where(_FEEDBACK.c.id == existing).values(**values))
                return str(existing)
            feedback_id = new_id()
            conn.execute(
                insert(_FEEDBACK).values(
                    id=feedback_id, tenant_id=session.tenant_id, session_id=session.id, message_id=message_id, **values
                )
            )
            return feedback_id

        return await self._run(transaction, write=True)

    async def list_feedback(
        self, *, tenant_id: str, start: datetime, end: datetime, limit: int = 100
    ) -> list[FeedbackRecord]:
        """The tenant's feedback given in [start, end), newest first."""
        query = (
            select(_FEEDBACK)
            .where(_FEEDBACK.c.tenant_id == tenant_id, _FEEDBACK.c.created_at >= start, _FEEDBACK.c.created_at < end)
            .order_by(_FEEDBACK.c.created_at.desc(), _FEEDBACK.c.id.desc())
            .limit(limit)
        )
        rows = await self._run(lambda conn: conn.execute(query).all(), write=False)
        return [
            FeedbackRecord(
                id=r.id,
                session_id=r.session_id,
                message_id=r.message_id,
                kind=r.kind,
                rating=r.rating,
                comment=r.comment,
                created_at=aware(r.created_at),
            )
            for r in rows
        ]

    async def audit(
        self,
        *,
        actor: str,
        action: str,
        target: str | None = None,
        data: dict[str, Any] | None = None,
        tenant_id: str = "default",
    ) -> str:
        """Append an audit event chained to the previous one; returns its hash."""
        entry = AuditEntry(actor=actor, action=action, tenant_id=tenant_id, target=target, data=data or {})
        return await self._run(lambda conn: _append_audit(conn, [entry]), write=True)

    async def audit_many(self, events: Sequence[AuditEntry]) -> None:
        """Append several audit events in one transaction (model I/O is audited in batches, off the turn)."""
        if not events:
            return
        await self._run(lambda conn: _append_audit(conn, events), write=True)

    async def audit_events(self, *, tenant_id: str, limit: int = 100, action: str | None = None) -> list[AuditEvent]:
        """The tenant's newest audit events, newest first."""
        query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        async with self._db() as db:
            return list((await db.scalars(query.order_by(AuditEvent.id.desc()).limit(limit))).all())

    async def session_meta(self, session_id: str) -> dict[str, Any]:
        query = select(_SESSIONS.c.metadata).where(_SESSIONS.c.id == session_id)
        value = await self._run(lambda conn: conn.scalar(query), write=False)
        return dict(value or {})

    async def update_session_meta(self, session_id: str, key: str, value: Any) -> None:
        """Set one key of a session's metadata (read-modify-write in one write transaction)."""
        await self._run(lambda conn: _set_session_meta(conn, session_id, key, value), write=True)

    async def redact_message(
        self, message_id: str, *, text_: str, redacted_text: str, session_meta: tuple[str, str, Any] | None = None
    ) -> None:
        """Replace a stored customer message by its redacted form (and the encrypted original, if kept).

        `session_meta` (session id, key, value): set that key of the session's metadata in the same transaction
        (the PII vault that resolves the redacted form's placeholders)."""
        redact = update(_MESSAGES).where(_MESSAGES.c.id == message_id).values(text=text_, redacted_text=redacted_text)

        def transaction(conn: Connection) -> None:
            conn.execute(redact)
            if session_meta is not None:
                _set_session_meta(conn, *session_meta)

        await self._run(transaction, write=True)

    async def erase_user(self, *, user_id: str, tenant_id: str) -> int:
        """Delete every session (with its messages and feedback) of one customer; returns sessions deleted."""
        query = select(_SESSIONS.c.id).where(_SESSIONS.c.user_id == user_id, _SESSIONS.c.tenant_id == tenant_id)

        def transaction(conn: Connection) -> int:
            ids = list(conn.scalars(query).all())
            self._delete_sessions(conn, ids)
            return len(ids)

        return await self._run(transaction, write=True, brief=False)

    async def purge_audited(
        self, cutoff: datetime, *, actor: str, data: dict[str, Any], not_since: datetime | None = None
    ) -> int | None:
        """Delete conversations last active before `cutoff` and audit it (`privacy.purge`, `data` plus the sessions
        deleted) in one transaction; returns sessions deleted.

        With `not_since` it is a scheduled purge that workers and replicas share: it does nothing (None) when `actor`
        purged after that time, or when another one is purging right now (a PostgreSQL advisory lock).
        """

        def transaction(conn: Connection) -> int | None:
            if not_since is not None:
                if conn.dialect.name == "postgresql":
                    locked = conn.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _PURGE_LOCK})
                    if not locked:
                        return None
                last = conn.scalar(
                    select(_AUDIT.c.created_at)
                    .where(_AUDIT.c.action == "privacy.purge", _AUDIT.c.actor == actor)
                    .order_by(_AUDIT.c.id.desc())
                    .limit(1)
                )
                if last is not None and aware(last) > not_since:
                    return None
            ids = list(conn.scalars(select(_SESSIONS.c.id).where(_SESSIONS.c.updated_at < cutoff)).all())
            self._delete_sessions(conn, ids)
            entry = AuditEntry(actor=actor, action="privacy.purge", data={**data, "sessions_deleted": len(ids)})
            _append_audit(conn, [entry])
            return len(ids)

        return await self._run(transaction, write=True, brief=False)

    @staticmethod
    def _delete_sessions(conn: Connection, ids: list[str]) -> None:
        dependents = [cast(Table, DialogueStateRow.__table__), cast(Table, Ticket.__table__), _FEEDBACK]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            # Explicit deletes: not every database enforces ON DELETE CASCADE (SQLite needs a pragma).
            for table in dependents:
                conn.execute(delete(table).where(table.c.session_id.in_(chunk)))
            conn.execute(delete(_MESSAGES).where(_MESSAGES.c.session_id.in_(chunk)))
            conn.execute(delete(_SESSIONS).where(_SESSIONS.c.id.in_(chunk)))

    async def count_sessions(self, *, tenant_id: str) -> int:
        async with self.engine.connect() as conn:
            query = select(func.count()).select_from(_SESSIONS).where(_SESSIONS.c.tenant_id == tenant_id)
            return int(await conn.scalar(query) or 0)

    async def verify_audit_chain(self) -> tuple[bool, int, str]:
        """Recompute the hash chain; returns (ok, events checked, first problem)."""
        async with self._db() as db:
            rows = (await db.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
        prev = GENESIS_HASH
        for row in rows:
            expected = audit_hash(prev, row.actor, row.action, row.target, row.data, row.created_at)
            if row.prev_hash != prev or row.hash != expected:
                return False, len(rows), f"audit event {row.id} does not match the chain"
            prev = row.hash
        return True, len(rows), ""


def _open_session(
    conn: Connection, session_id: str | None, user_id: str, channel: str, tenant_id: str
) -> tuple[SessionRecord, bool]:
    """(the customer's session, whether it was created now), inside the caller's transaction."""
    if session_id is not None:
        found = _SESSION_BY_ID.first(conn, {"b_session_id": session_id})
        if found is not None:
            if found.user_id != user_id or found.tenant_id != tenant_id:
                raise NotFoundError(f"session {session_id} not found for this customer")
            return _session_record(found), False
    now = utcnow()
    session = SessionRecord(session_id or new_id(), tenant_id, user_id, channel, "bot", "open", now)
    _INSERT_SESSION.execute(
        conn,
        {
            "id": session.id,
            "tenant_id": tenant_id,
            "user_id": user_id,
            "channel": channel,
            "owner": session.owner,
            "status": session.status,
            "metadata": {},
            "created_at": now,
            "updated_at": now,
        },
    )
    return session, True


def _insert_message(
    conn: Connection,
    session: SessionRecord,
    text_: str,
    client_message_id: str | None,
    metadata: dict[str, Any] | None,
    *,
    touch_session: bool,
) -> MessageRecord:
    """Store a customer message inside the caller's transaction; `touch_session` marks the session active."""
    now = utcnow()
    message = MessageRecord(
        id=new_id(),
        session_id=session.id,
        role="user",
        text=text_,
        created_at=now,
        client_message_id=client_message_id,
    )
    _INSERT_MESSAGE.execute(
        conn,
        {
            "id": message.id,
            "session_id": session.id,
            "tenant_id": session.tenant_id,
            "role": message.role,
            "text": text_,
            "client_message_id": client_message_id,
            "citations": [],
            "handoff": False,
            "stage_latency_ms": {},
            "metadata": metadata or {},
            "created_at": now,
        },
    )
    if touch_session:
        _TOUCH_SESSION.execute(conn, {"b_session_id": session.id, "b_now": now})
    return message


def _find_by_client_id(conn: Connection, session_id: str, client_message_id: str) -> MessageRecord | None:
    row = _MESSAGE_BY_CLIENT_ID.first(conn, {"b_session_id": session_id, "b_client_id": client_message_id})
    return _message_record(row) if row is not None else None


def _set_session_meta(conn: Connection, session_id: str, key: str, value: Any) -> None:
    """Set one key of a session's metadata, inside the caller's write transaction."""
    current = conn.scalar(select(_SESSIONS.c.metadata).where(_SESSIONS.c.id == session_id))
    meta = {**dict(current or {}), key: value}
    conn.execute(update(_SESSIONS).where(_SESSIONS.c.id == session_id).values(metadata=meta))


def _append_audit(conn: Connection, events: Sequence[AuditEntry]) -> str:
    """Chain `events` onto the audit log inside the caller's transaction; returns the newest hash."""
    if conn.dialect.name == "postgresql":
        # Appenders queue here, so that each one chains onto the hash the previous one wrote.
        conn.execute(text("LOCK TABLE audit_events IN SHARE ROW EXCLUSIVE MODE"))
    prev_hash = _LAST_AUDIT_HASH.scalar(conn) or GENESIS_HASH
    rows = []
    for event in events:
        digest = audit_hash(prev_hash, event.actor, event.action, event.target, event.data, event.at)
        rows.append(
            {
                "tenant_id": event.tenant_id,
                "actor": event.actor,
                "action": event.action,
                "target": event.target,
                "data": event.data,
                "created_at": event.at,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        prev_hash = digest
    _INSERT_AUDIT.execute_many(conn, rows)
    return prev_hash


def append_audit(conn: Connection, events: Sequence[AuditEntry]) -> str:
    """Chain `events` onto the audit log inside the caller's transaction, so a change and its record commit together."""
    return _append_audit(conn, events)
