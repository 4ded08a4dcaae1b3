"""Relational schema of dialogue: each session's flow state, and handoff tickets for human agents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kefu.store.models import Base, new_id, utcnow


class DialogueStateRow(Base):
    """Where a session stands: the active flow, its step and slots, the verified customer, recent failures."""

    __tablename__ = "dialogue_states"

    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=0)
    """Bumped by every save; a save from a stale read is refused (two workers, one session)."""
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Ticket(Base):
    """A conversation handed to people: why, what the bot knew, who took it and how it ended."""

    __tablename__ = "tickets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    """'queued' (waiting for an agent), 'assigned' (an agent is talking), 'closed'."""
    priority: Mapped[int] = mapped_column(Integer, default=50)
    reason: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")
    intent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    emotion: Mapped[str | None] = mapped_column(String(16), nullable=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Flow, slots, verified customer, the actions called, the language: what the agent needs at a glance."""
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    agent_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    resolution_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_tickets_queue", "tenant_id", "status", "priority", "created_at"),)
