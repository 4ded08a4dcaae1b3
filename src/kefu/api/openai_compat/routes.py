"""POST /v1/chat/completions: the last user message is the customer's turn; `user` maps to the session."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

from fastapi import APIRouter
from sse_starlette import EventSourceResponse, ServerSentEvent

from kefu.api.dependencies import ServicesDep
from kefu.api.errors import error_body
from kefu.api.openai_compat.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChoiceMessage,
    CompletionUsage,
)
from kefu.api.security import Caller, ChannelCaller, limit_customer
from kefu.api.streaming import Delta, Finished, Replaced, stream_turn
from kefu.api.turns import make_turn
from kefu.errors import KefuError, UserError
from kefu.pipeline import TurnInput, TurnResult
from kefu.services import Services

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
CHANNEL = "openai"


async def _turn(req: ChatCompletionRequest, services: Services, caller: Caller) -> TurnInput:
    last_user = next((m for m in reversed(req.messages) if m.role == "user"), None)
    if last_user is None or not last_user.text().strip():
        raise UserError("messages must end with a user message that has text content")
    caller.check_channel(CHANNEL)
    user_id = req.user or f"anonymous-{uuid4().hex}"
    await limit_customer(services, caller, user_id)
    session = (
        await services.store.latest_session(user_id=user_id, channel=CHANNEL, tenant_id=caller.tenant_id)
        if req.user
        else None
    )
    return make_turn(
        services.settings,
        user_id=user_id,
        channel=CHANNEL,
        text=last_user.text(),
        session_id=session.id if session else None,
        tenant_id=caller.tenant_id,
    )


def _extras(result: TurnResult) -> dict[str, Any]:
    return {
        "session_id": result.session_id,
        "message_id": result.message_id,
        "citations": result.citations,
        "intent": result.intent,
        "handoff": result.handoff,
        "error": result.error,
    }


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or chunks as SSE when stream=true"},
        400: {"description": "No user message"},
        401: {"description": "Missing or invalid API key"},
        429: {"description": "Rate limited; see Retry-After"},
        422: {"description": "Malformed request"},
    },
)
async def chat_completions(req: ChatCompletionRequest, services: ServicesDep, caller: ChannelCaller) -> Any:
    """OpenAI-compatible chat completion (streaming and not), answered by kefu's full pipeline."""
    turn = await _turn(req, services, caller)
    created = int(time.time())
    if not req.stream:
        result = await services.runner.run(turn)
        return ChatCompletionResponse(
            id=f"chatcmpl-{result.message_id}",
            created=created,
            model=req.model,
            choices=[Choice(message=ChoiceMessage(content=result.reply))],
            usage=CompletionUsage(
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                total_tokens=result.prompt_tokens + result.completion_tokens,
            ),
            kefu=_extras(result),
        )

    completion_id = f"chatcmpl-{uuid4().hex}"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEvent:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return ServerSentEvent(data=json.dumps(body, ensure_ascii=False))

    # An OpenAI client cannot take text back: `whole` sends the reply once every check passed; `checked` streams
    # text that passed the streaming checks and, if the reply was replaced after all, appends the final reply and
    # ends with finish_reason "content_filter" (docs/security.md).
    whole = services.settings.guards.openai_stream == "whole"

    async def events() -> AsyncIterator[ServerSentEvent]:
        yield chunk({"role": "assistant", "content": ""})
        streamed = withdrawn = False
        try:
            async for event in stream_turn(services.runner, turn):
                if isinstance(event, Delta) and not whole:
                    streamed = True
                    yield chunk({"content": event.text})
                elif isinstance(event, Replaced) and not whole:
                    withdrawn = True
                    yield chunk({"content": "\n\n" + event.text})
                elif isinstance(event, Finished):
                    result = event.result
                    if not streamed:
                        yield chunk({"content": result.reply})
                    extras = _extras(result)
                    if withdrawn:
                        # What a kefu-aware client shows instead of the concatenated content.
                        extras.update(replaced=True, reply=result.reply)
                    filtered = withdrawn and not result.error
                    yield chunk({}, "content_filter" if filtered else "stop", kefu=extras)
        except KefuError as exc:
            yield ServerSentEvent(data=json.dumps(error_body(exc.code, str(exc)), ensure_ascii=False))
        yield ServerSentEvent(data="[DONE]")

    return EventSourceResponse(events(), ping=15)
