"""Handoff tickets in the relational store: open, queue, claim, close, hand back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, or_, select, update

from kefu.errors import ConflictError, NotFoundError
from kefu.store import ConversationStore
from kefu.store.dialogue_models import Ticket
from kefu.store.models import new_id, utcnow
from kefu.store.prepared import PreparedRead, PreparedWrite
from kefu.store.repository import aware

_TICKETS = cast(Table, Ticket.__table__)
OPEN_STATUSES = ("queued", "assigned")
# The open statuses spelled out (not an IN list, which SQLAlchemy expands on each call): SQLite gets it as compiled.
_OPEN_FOR_SESSION = PreparedRead(
    select(_TICKETS).where(
        _TICKETS.c.session_id == bindparam("b_session_id"), or_(*(_TICKETS.c.status == s for s in OPEN_STATUSES))
    )
)
"""Built once: read on every turn of a session that asked for a person, and by every handoff."""
_INSERT_TICKET = PreparedWrite(insert(_TICKETS))
_TICKET_BY_ID = PreparedRead(select(_TICKETS).where(_TICKETS.c.id == bindparam("b_ticket_id")))
_QUEUED_AHEAD = PreparedRead(
    select(func.count())
    .select_from(_TICKETS)
    .where(
        _TICKETS.c.tenant_id == bindparam("b_tenant_id"),
        _TICKETS.c.status == "queued",
        (_TICKETS.c.priority > bindparam("b_priority"))
        | ((_TICKETS.c.priority == bindparam("b_priority")) & (_TICKETS.c.created_at < bindparam("b_created_at"))),
    )
)
"""A handoff tells the customer their place in the queue."""


@dataclass(frozen=True, slots=True)
class TicketRecord:
    """A handoff ticket as agents and the API see it."""

    id: str
    tenant_id: str
    session_id: str
    status: str
    priority: int
    reason: str
    summary: str
    intent: str | None
    emotion: str | None
    context: dict[str, Any]
    agent_id: str | None
    agent_name: str | None
    resolution_code: str | None
    note: str | None
    created_at: datetime
    claimed_at: datetime | None
    closed_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "status": self.status,
            "priority": self.priority,
            "reason": self.reason,
            "summary": self.summary,
            "intent": self.intent,
            "emotion": self.emotion,
            "context": self.context,
            "agent_id": self.agent_id,
            "agent_name": self.agent_name,
            "resolution_code": self.resolution_code,
            "note": self.note,
            "created_at": self.created_at.isoformat(),
            "claimed_at": self.claimed_at.isoformat() if self.claimed_at else None,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
        }


def _record(row: Any) -> TicketRecord:
    """A ticket's row (SQLAlchemy's, or a `PreparedRead`'s: its columns by name)."""
    return TicketRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        session_id=row.session_id,
        status=row.status,
        priority=row.priority,
        reason=row.reason,
        summary=row.summary,
        intent=row.intent,
        emotion=row.emotion,
        context=dict(row.context or {}),
        agent_id=row.agent_id,
        agent_name=row.agent_name,
        resolution_code=row.resolution_code,
        note=row.note,
        created_at=aware(row.created_at),
        claimed_at=aware(row.claimed_at) if row.claimed_at else None,
        closed_at=aware(row.closed_at) if row.closed_at else None,
    )


class Tickets:
    """Reads and writes tickets through the conversation store's database."""

    def __init__(self, store: ConversationStore) -> None:
        self.store = store

    async def open(
        self,
        *,
        session_id: str,
        tenant_id: str,
        reason: str,
        priority: int,
        summary: str,
        intent: str | None,
        emotion: str | None,
        context: dict[str, Any],
    ) -> tuple[TicketRecord, bool]:
        """The session's open ticket, or a new one; the flag says whether it was created now."""

        def transaction(conn: Connection) -> tuple[TicketRecord, bool]:
            existing = _OPEN_FOR_SESSION.first(conn, {"b_session_id": session_id})
            if existing is not None:
                return _record(existing), False
            ticket_id = new_id()
            _INSERT_TICKET.execute(
                conn,
                {
                    "id": ticket_id,
                    "tenant_id": tenant_id,
                    "session_id": session_id,
                    "status": "queued",
                    "priority": priority,
                    "reason": reason,
                    "summary": summary,
                    "intent": intent,
                    "emotion": emotion,
                    "context": context,
                    "created_at": utcnow(),
                },
            )
            row = _TICKET_BY_ID.first(conn, {"b_ticket_id": ticket_id})
            return _record(row), True

        return await self.store.transaction(transaction, write=True)

    async def get(self, ticket_id: str, *, tenant_id: str) -> TicketRecord:
        query = select(_TICKETS).where(_TICKETS.c.id == ticket_id, _TICKETS.c.tenant_id == tenant_id)
        row = await self.store.transaction(lambda conn: conn.execute(query).first(), write=False)
        if row is None:
            raise NotFoundError(f"ticket {ticket_id} not found")
        return _record(row)

    async def open_for_session(self, session_id: str) -> TicketRecord | None:
        row = await self.store.transaction(
            lambda conn: _OPEN_FOR_SESSION.first(conn, {"b_session_id": session_id}), write=False
        )
        return _record(row) if row is not None else None

    async def queue(
        self, *, tenant_id: str, statuses: tuple[str, ...] = OPEN_STATUSES, limit: int = 200
    ) -> list[TicketRecord]:
        """Tickets by priority (highest first), then waiting time (longest first)."""
        query = (
            select(_TICKETS)
            .where(_TICKETS.c.tenant_id == tenant_id, _TICKETS.c.status.in_(statuses))
            .order_by(_TICKETS.c.priority.desc(), _TICKETS.c.created_at.asc())
            .limit(limit)
        )
        rows = await self.store.transaction(lambda conn: conn.execute(query).all(), write=False)
        return [_record(r) for r in rows]

    async def queue_stats(self) -> tuple[dict[str, int], datetime | None]:
        """Open tickets by status across tenants, and when the longest-waiting queued one was opened (metrics)."""
        query = (
            select(_TICKETS.c.status, func.count(), func.min(_TICKETS.c.created_at))
            .where(_TICKETS.c.status.in_(OPEN_STATUSES))
            .group_by(_TICKETS.c.status)
        )
        rows = await self.store.transaction(lambda conn: conn.execute(query).all(), write=False)
        counts = {str(status): int(count) for status, count, _ in rows}
        oldest = next((aware(first) for status, _, first in rows if status == "queued" and first is not None), None)
        return counts, oldest

    async def position(self, ticket: TicketRecord) -> int:
        """1-based place in the queue: tickets waiting ahead of this one (higher priority, or same and older)."""
        params = {"b_tenant_id": ticket.tenant_id, "b_priority": ticket.priority, "b_created_at": ticket.created_at}
        count = await self.store.transaction(lambda conn: _QUEUED_AHEAD.scalar(conn, params), write=False)
        return int(count) + 1

    async def claim(
        self, ticket_id: str, *, tenant_id: str, agent_id: str, agent_name: str
    ) -> tuple[TicketRecord, bool]:
        """Assign a queued ticket to an agent: (ticket, whether this call assigned it; False when the agent already
        had it). ConflictError when another agent was faster."""
        statement = (
            update(_TICKETS)
            .where(_TICKETS.c.id == ticket_id, _TICKETS.c.tenant_id == tenant_id, _TICKETS.c.status == "queued")
            .values(status="assigned", agent_id=agent_id, agent_name=agent_name, claimed_at=utcnow())
        )
        changed = await self.store.transaction(lambda conn: conn.execute(statement).rowcount, write=True)
        ticket = await self.get(ticket_id, tenant_id=tenant_id)
        if not changed and not (ticket.status == "assigned" and ticket.agent_id == agent_id):
            raise ConflictError(f"ticket {ticket_id} is {ticket.status} (agent {ticket.agent_name or '-'})")
        return ticket, bool(changed)

    async def close(
        self, ticket_id: str, *, tenant_id: str, resolution_code: str, note: str | None, status: str = "closed"
    ) -> TicketRecord:
        statement = (
            update(_TICKETS)
            .where(_TICKETS.c.id == ticket_id, _TICKETS.c.tenant_id == tenant_id, _TICKETS.c.status.in_(OPEN_STATUSES))
            .values(status=status, resolution_code=resolution_code, note=note, closed_at=utcnow())
        )
        changed = await self.store.transaction(lambda conn: conn.execute(statement).rowcount, write=True)
        ticket = await self.get(ticket_id, tenant_id=tenant_id)
        if not changed:
            raise ConflictError(f"ticket {ticket_id} is already {ticket.status}")
        return ticket
