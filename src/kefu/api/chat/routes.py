"""HTTP routes of the native chat API; they only translate HTTP to turns and back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from kefu.api.chat.protocol import (
    SESSION_ID_PATTERN,
    ChatRequest,
    ChatResponse,
    ConversationRating,
    FeedbackOut,
    MessageOut,
    ReplyFeedback,
    SessionMessages,
)
from kefu.api.dependencies import ServicesDep
from kefu.api.errors import error_body
from kefu.api.security import Caller, ChannelCaller, SessionReader, access_of, limit_customer
from kefu.api.streaming import Delta, Finished, Replaced, Started, stream_turn
from kefu.api.turns import make_turn
from kefu.errors import KefuError, NotFoundError, StoreUnavailableError, UserError
from kefu.pipeline import TurnInput
from kefu.services import Services
from kefu.store import SessionRecord

router = APIRouter(prefix="/v1", tags=["chat"])
RATED_ROLES = ("assistant", "agent")
_MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

ERROR_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "Invalid message (empty or too long)"},
    401: {"description": "Missing or invalid API key / customer token"},
    403: {"description": "The API key is for another channel"},
    429: {"description": "Rate limited; see Retry-After"},
    404: {"description": "Session not found for this customer"},
    422: {"description": "Malformed request body"},
    503: {"description": "Conversation store unavailable; retry"},
}


async def _turn(services: Services, req: ChatRequest, caller: Caller) -> TurnInput:
    caller.check_channel(req.channel)
    await limit_customer(services, caller, req.user_id)
    return make_turn(
        services.settings,
        user_id=req.user_id,
        channel=req.channel,
        text=req.text,
        session_id=req.session_id,
        client_message_id=req.client_message_id,
        metadata=req.metadata,
        tenant_id=caller.tenant_id,
    )


@router.post("/chat", response_model=ChatResponse, responses=ERROR_RESPONSES)
async def chat(req: ChatRequest, services: ServicesDep, caller: ChannelCaller) -> ChatResponse:
    """Send a customer message and get the whole reply."""
    result = await services.runner.run(await _turn(services, req, caller))
    return ChatResponse.from_result(result)


@router.post(
    "/chat/stream",
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "Server-Sent Events: `start` {session_id, user_message_id}, `delta` {text} "
            "repeated, `replace` {text} when a check withdrew the text streamed so far (show `text` instead), "
            "then `done` with the ChatResponse (the stored, checked reply), or `error` {error: {code, message}}.",
            "content": {"text/event-stream": {}},
        },
    },
)
async def chat_stream(req: ChatRequest, services: ServicesDep, caller: ChannelCaller) -> EventSourceResponse:
    """Send a customer message and receive the reply as Server-Sent Events."""
    turn = await _turn(services, req, caller)

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            async for event in stream_turn(services.runner, turn):
                if isinstance(event, Started):
                    data = {"session_id": event.session_id, "user_message_id": event.user_message_id}
                    yield ServerSentEvent(event="start", data=json.dumps(data))
                elif isinstance(event, Delta):
                    yield ServerSentEvent(event="delta", data=json.dumps({"text": event.text}, ensure_ascii=False))
                elif isinstance(event, Replaced):
                    # The deltas so far are withdrawn: a check replaced the reply (see docs/security.md).
                    yield ServerSentEvent(event="replace", data=json.dumps({"text": event.text}, ensure_ascii=False))
                elif isinstance(event, Finished):
                    body = ChatResponse.from_result(event.result).model_dump_json()
                    yield ServerSentEvent(event="done", data=body)
        except StoreUnavailableError as exc:
            yield ServerSentEvent(event="error", data=json.dumps(error_body(exc.code, "service unavailable; retry")))
        except KefuError as exc:
            yield ServerSentEvent(event="error", data=json.dumps(error_body(exc.code, str(exc)), ensure_ascii=False))

    return EventSourceResponse(events(), ping=15)


@router.get("/sessions/{session_id}/messages", response_model=SessionMessages, responses=ERROR_RESPONSES)
async def session_messages(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
    services: ServicesDep,
    caller: SessionReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> SessionMessages:
    """The session's messages, oldest first (the newest `limit` of them)."""
    session = await _readable_session(services, caller, session_id)  # a customer token opens its own session only
    records = await services.store.list_messages(session.id, limit=limit, tenant_id=session.tenant_id)
    return SessionMessages(session_id=session.id, messages=[MessageOut.from_record(r) for r in records])


async def _readable_session(services: Services, caller: Caller, session_id: str) -> SessionRecord:
    """The session, if this caller may read it: its own customer token, or a channel key of its tenant."""
    if caller.customer is not None and caller.customer.session_id != session_id:
        raise NotFoundError(f"session {session_id} not found")
    return await services.store.get_session(session_id, tenant_id=caller.tenant_id)


def _redacted(services: Services, comment: str | None) -> str | None:
    """A comment is customer text: personal data in it is replaced before it is stored."""
    text = (comment or "").strip()
    if not text:
        return None
    if services.access is None:
        return text
    safety = access_of(services).safety
    return safety.redactor.redact(text, safety.vault(None)).text


@router.post(
    "/sessions/{session_id}/messages/{message_id}/feedback", response_model=FeedbackOut, responses=ERROR_RESPONSES
)
async def reply_feedback(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
    message_id: Annotated[str, Path(pattern=_MESSAGE_ID_PATTERN)],
    body: ReplyFeedback,
    services: ServicesDep,
    caller: SessionReader,
) -> FeedbackOut:
    """Thumb up or down on one reply of the assistant or an agent; voting again replaces the earlier vote."""
    session = await _readable_session(services, caller, session_id)
    await limit_customer(services, caller, session.user_id)
    message = await services.store.get_message(message_id, tenant_id=session.tenant_id)
    if message.session_id != session.id:
        raise NotFoundError(f"message {message_id} not found in session {session_id}")
    if message.role not in RATED_ROLES:
        raise UserError(f"message {message_id} is a {message.role} message: only replies can be rated")
    rating = 1 if body.rating == "up" else -1
    comment = _redacted(services, body.comment)
    feedback_id = await services.store.add_feedback(
        session=session, kind="thumb", rating=rating, message_id=message.id, comment=comment
    )
    return FeedbackOut(
        id=feedback_id, session_id=session.id, message_id=message.id, kind="thumb", rating=rating, comment=comment
    )


@router.post("/sessions/{session_id}/rating", response_model=FeedbackOut, responses=ERROR_RESPONSES)
async def rate_conversation(
    session_id: Annotated[str, Path(pattern=SESSION_ID_PATTERN)],
    body: ConversationRating,
    services: ServicesDep,
    caller: SessionReader,
) -> FeedbackOut:
    """Rate the whole conversation 1-5 (CSAT), with an optional comment; rating again replaces the rating."""
    session = await _readable_session(services, caller, session_id)
    await limit_customer(services, caller, session.user_id)
    comment = _redacted(services, body.comment)
    feedback_id = await services.store.add_feedback(session=session, kind="csat", rating=body.score, comment=comment)
    return FeedbackOut(
        id=feedback_id, session_id=session.id, message_id=None, kind="csat", rating=body.score, comment=comment
    )
