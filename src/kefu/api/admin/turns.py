"""Admin view of how turns were understood and routed: intent, entities, emotion, route and its reasons."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from kefu.api.dependencies import ServicesDep
from kefu.api.security import Operator, require_role
from kefu.errors import NotFoundError
from kefu.store import MessageRecord

router = APIRouter(prefix="/v1/admin", tags=["admin"])
ViewerOp = Annotated[Operator, Depends(require_role("viewer"))]
_ID = r"^[A-Za-z0-9_-]{1,64}$"
_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Not signed in"},
    403: {"description": "Signed in without the needed role"},
    404: {"description": "Not found in your tenant"},
}


class TurnOut(BaseModel):
    """One customer message and the bot's reply, with the decisions behind the reply."""

    message_id: str
    """The reply's id (what POST /v1/chat returned as message_id)."""
    session_id: str
    reply_to: str | None
    customer_text: str | None
    """The customer's message as the models saw it (personal data redacted where the guard found some)."""
    reply: str
    created_at: datetime
    intent: str | None
    route: str | None
    handoff: bool
    understanding: dict[str, Any] | None
    """Intent, confidence, deciding stage, candidates, language, entities, emotion, per-part latency."""
    route_decision: dict[str, Any] | None
    """The router's handler, reasons, scores, missing entities, and what finally answered."""
    stage_latency_ms: dict[str, float]
    latency_ms: float | None
    model: str | None
    error_code: str | None

    @classmethod
    def of(cls, reply: MessageRecord, customer: MessageRecord | None) -> TurnOut:
        said = None if customer is None else (customer.redacted_text or customer.text)
        return cls(
            message_id=reply.id,
            session_id=reply.session_id,
            reply_to=reply.reply_to,
            customer_text=said,
            reply=reply.text,
            created_at=reply.created_at,
            intent=reply.intent,
            route=reply.route,
            handoff=reply.handoff,
            understanding=reply.trace.get("understanding"),
            route_decision=reply.trace.get("route"),
            stage_latency_ms=reply.stage_latency_ms,
            latency_ms=reply.latency_ms,
            model=reply.model,
            error_code=reply.error_code,
        )


class SessionTurns(BaseModel):
    session_id: str
    turns: list[TurnOut]


@router.get("/turns/{message_id}", response_model=TurnOut, responses=_ERRORS)
async def get_turn(services: ServicesDep, operator: ViewerOp, message_id: Annotated[str, Path(pattern=_ID)]) -> TurnOut:
    """Why a reply was what it was; `message_id` is the reply's id or the customer message's id."""
    store = services.store
    record = await store.get_message(message_id, tenant_id=operator.tenant_id)
    if record.role == "user":
        reply = await store.reply_to(record.id)
        if reply is None:
            raise NotFoundError(f"message {message_id} has no stored reply yet")
        return TurnOut.of(reply, record)
    customer = await store.get_message(record.reply_to, tenant_id=operator.tenant_id) if record.reply_to else None
    return TurnOut.of(record, customer)


@router.get("/sessions/{session_id}/turns", response_model=SessionTurns, responses=_ERRORS)
async def session_turns(
    services: ServicesDep, operator: ViewerOp, session_id: Annotated[str, Path(pattern=_ID)]
) -> SessionTurns:
    """Every turn of a session, oldest first, with its understanding and routing trace."""
    await services.store.get_session(session_id, tenant_id=operator.tenant_id)
    messages = await services.store.list_messages(session_id, tenant_id=operator.tenant_id)
    by_id = {m.id: m for m in messages}
    turns = [TurnOut.of(m, by_id.get(m.reply_to or "")) for m in messages if m.role == "assistant"]
    return SessionTurns(session_id=session_id, turns=turns)
