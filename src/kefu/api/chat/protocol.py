"""Request and response schemas of the native chat API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kefu.pipeline import TurnResult
from kefu.store import MessageRecord

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"


class ChatRequest(BaseModel):
    """One customer message."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN, description="Omit to start a new session.")
    user_id: str = Field(min_length=1, max_length=128, description="The customer's id on this channel.")
    channel: str = Field(default="web", pattern=r"^[a-z0-9_-]{1,32}$")
    text: str = Field(min_length=1, description="The customer's message.")
    client_message_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Idempotency key: a resend is answered once."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class CitationOut(BaseModel):
    title: str
    source: str
    url: str | None = None
    snippet: str | None = None


class ChatResponse(BaseModel):
    """The bot's reply and how it was produced."""

    session_id: str
    message_id: str
    reply: str
    citations: list[CitationOut] = Field(default_factory=list)
    intent: str | None = None
    handoff: bool = False
    latency_ms: float
    error: str | None = Field(default=None, description="Error code when the reply is a fallback.")
    silent: bool = Field(
        default=False, description="A human agent owns the conversation: the bot said nothing (reply is empty)."
    )

    @classmethod
    def from_result(cls, result: TurnResult) -> ChatResponse:
        return cls(
            session_id=result.session_id,
            message_id=result.message_id,
            reply=result.reply,
            citations=[CitationOut.model_validate(c) for c in result.citations],
            intent=result.intent,
            handoff=result.handoff,
            latency_ms=result.latency_ms,
            error=result.error,
            silent=result.silent,
        )


class MessageOut(BaseModel):
    id: str
    role: str
    text: str
    created_at: datetime
    citations: list[CitationOut] = Field(default_factory=list)
    intent: str | None = None
    handoff: bool = False
    error: str | None = None
    client_message_id: str | None = None
    reply_to: str | None = None
    agent: str | None = Field(default=None, description="The human agent's display name, on role 'agent' messages.")

    @classmethod
    def from_record(cls, record: MessageRecord) -> MessageOut:
        return cls(
            id=record.id,
            role=record.role,
            text=record.text,
            created_at=record.created_at,
            citations=[CitationOut.model_validate(c) for c in record.citations],
            intent=record.intent,
            handoff=record.handoff,
            error=record.error_code,
            client_message_id=record.client_message_id,
            reply_to=record.reply_to,
            agent=record.trace.get("agent") if record.role == "agent" else None,
        )


class SessionMessages(BaseModel):
    session_id: str
    messages: list[MessageOut]


MAX_COMMENT_CHARS = 1000


class ReplyFeedback(BaseModel):
    """A customer's thumb on one reply."""

    model_config = ConfigDict(extra="forbid")

    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


class ConversationRating(BaseModel):
    """A customer's rating of the whole conversation (CSAT)."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5, description="1 (very unhappy) to 5 (very happy).")
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


class FeedbackOut(BaseModel):
    """Stored feedback; a second vote on the same reply (or a second rating) replaces the first, same id."""

    id: str
    session_id: str
    message_id: str | None
    kind: Literal["thumb", "csat"]
    rating: int = Field(description="thumb: 1 (up) or -1 (down); csat: the score 1-5.")
    comment: str | None
