"""Request and response schemas of the agent console API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from kefu.handoff import TicketRecord
from kefu.knowledge.service import KnowledgeService
from kefu.knowledge.types import SearchHit
from kefu.store import MessageRecord

ResolutionCode = Literal["resolved", "refunded", "replaced", "escalated", "no_response", "duplicate", "other"]
MAX_AGENT_MESSAGE_CHARS = 4000


class TicketOut(BaseModel):
    """A handoff ticket as the console lists it."""

    id: str
    session_id: str
    status: str = Field(description="queued, assigned, closed or returned (closed and handed back to the bot).")
    priority: int
    reason: str
    summary: str
    intent: str | None
    emotion: str | None
    language: str | None = Field(description="The customer's language (zh or en), as the bot saw it.")
    agent_id: str | None
    agent_name: str | None
    created_at: datetime
    claimed_at: datetime | None
    closed_at: datetime | None
    waiting_s: float = Field(description="Seconds from the handoff until an agent claimed it (or until now).")
    position: int | None = Field(description="1-based place in the queue; None once claimed.")
    resolution_code: str | None = None
    note: str | None = None

    @classmethod
    def of(cls, ticket: TicketRecord, *, now: datetime, position: int | None = None) -> TicketOut:
        waited_until = ticket.claimed_at or ticket.closed_at or now
        language = ticket.context.get("language")
        return cls(
            id=ticket.id,
            session_id=ticket.session_id,
            status=ticket.status,
            priority=ticket.priority,
            reason=ticket.reason,
            summary=ticket.summary,
            intent=ticket.intent,
            emotion=ticket.emotion,
            language=language if isinstance(language, str) else None,
            agent_id=ticket.agent_id,
            agent_name=ticket.agent_name,
            created_at=ticket.created_at,
            claimed_at=ticket.claimed_at,
            closed_at=ticket.closed_at,
            waiting_s=round(max(0.0, (waited_until - ticket.created_at).total_seconds()), 1),
            position=position,
            resolution_code=ticket.resolution_code,
            note=ticket.note,
        )


class TranscriptMessage(BaseModel):
    """One message of the conversation as an agent reads it (personal data masked where it was detected)."""

    id: str
    role: str = Field(description="user, assistant, agent or system.")
    text: str
    created_at: datetime
    route: str | None = None
    intent: str | None = None
    agent: str | None = Field(default=None, description="The agent's name, for role agent.")

    @classmethod
    def of(cls, record: MessageRecord) -> TranscriptMessage:
        agent = record.trace.get("agent")
        return cls(
            id=record.id,
            role=record.role,
            text=record.redacted_text or record.text,
            created_at=record.created_at,
            route=record.route,
            intent=record.intent,
            agent=agent if isinstance(agent, str) else None,
        )


class TicketDetail(TicketOut):
    """A ticket with what the bot knew (summary, intent, emotion, slots, flow) and the whole conversation."""

    context: dict[str, Any]
    transcript: list[TranscriptMessage]


class AgentMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_AGENT_MESSAGE_CHARS)]


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution_code: ResolutionCode
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None
    hand_back: bool = Field(description="Give the conversation back to the bot; false ends it with the ticket.")


class Suggestion(BaseModel):
    """A knowledge-base passage an agent may quote."""

    title: str
    text: str
    source: str
    url: str
    score: float

    @classmethod
    def of(cls, hit: SearchHit) -> Suggestion:
        chunk = hit.chunk
        title = f"{chunk.title} · {chunk.section}" if chunk.section and chunk.section != chunk.title else chunk.title
        return cls(
            title=title,
            text=chunk.text,
            source=chunk.source,
            url=KnowledgeService.source_url(chunk),
            score=round(hit.score, 4),
        )


class SuggestionsOut(BaseModel):
    query: str = Field(description="What was searched: `q`, else the customer's last message.")
    suggestions: list[Suggestion]
