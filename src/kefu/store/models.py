"""Relational schema of the conversation store (SQLite and PostgreSQL, same models)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import uuid4

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid4().hex


class Base(DeclarativeBase):
    """Declarative base; every table carries a tenant so no query needs to cross tenants."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class ChatSession(Base):
    """One conversation between a customer and the shop, on one channel."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(16), default="bot")
    """Who answers: 'bot' or 'human' (an agent took over)."""
    status: Mapped[str] = mapped_column(String(16), default="open")
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    release_experiment: Mapped[str | None] = mapped_column(String(64), nullable=True)
    release_arm: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """The arm of `release_experiment` the session was assigned to at its first turn (docs/release.md)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_sessions_user_channel", "tenant_id", "user_id", "channel", "updated_at"),
        Index("ix_sessions_tenant_created", "tenant_id", "created_at"),
    )


class ChatMessage(Base):
    """One message in a session, with the trace of how a bot reply was produced."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    role: Mapped[str] = mapped_column(String(16))
    """'user', 'assistant', 'agent' or 'system'."""
    text: Mapped[str] = mapped_column(Text)
    redacted_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_message_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reply_to: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    intent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    route: Mapped[str | None] = mapped_column(String(64), nullable=True)
    citations: Mapped[list[Any]] = mapped_column(JSON, default=list)
    handoff: Mapped[bool] = mapped_column(Boolean, default=False)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    stage_latency_ms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    experiment: Mapped[str | None] = mapped_column(String(64), nullable=True)
    arm: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """The release arm that served this reply (docs/release.md)."""
    arm_error: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """A failure of the canary arm that the control arm covered for: the customer saw no error."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    __table_args__ = (
        UniqueConstraint("session_id", "client_message_id", name="uq_messages_client_id"),
        Index("ix_messages_experiment_arm", "experiment", "arm", "created_at"),
        Index("ix_messages_session_created", "session_id", "created_at", "id"),  # a session's newest messages
    )


class Feedback(Base):
    """A customer's rating of one reply (thumb) or of a whole conversation (csat), with a comment."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[str | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        # One thumb per reply: a second vote replaces the first (NULLs, the conversation ratings, are distinct).
        Index("uq_feedback_message", "message_id", unique=True),
        Index("ix_feedback_tenant_created", "tenant_id", "created_at"),
    )


class AuditEvent(Base):
    """An append-only record of who did what; each row hashes the previous one so tampering shows."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default="default", index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(256), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
