"""The customer WebSocket: one socket per session; messages in, tokens and status events out.

While the socket is open, what a human agent says (and handoff status changes) is pushed to it as it happens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kefu.api.chat.protocol import SESSION_ID_PATTERN, ChatResponse
from kefu.api.dependencies import get_services
from kefu.api.security import WS_PROTOCOL, access_of, wants_ws_protocol, ws_token
from kefu.api.streaming import Delta, Finished, Replaced, stream_turn
from kefu.api.turns import make_turn
from kefu.auth.ratelimit import RateLimitedError
from kefu.errors import KefuError, StoreUnavailableError, UserError
from kefu.handoff.hub import RESYNC, session_channel
from kefu.observability.logging import bind_session
from kefu.services import Services
from kefu.store import SessionRecord

log = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])

MAX_FRAME_BYTES = 64 * 1024
CLOSE_POLICY = 1008  # RFC 6455: policy violation (bad parameters)
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013  # RFC 6455 registry: try again later (rate limited)
CUSTOMER_LEFT = frozenset({1000, 1001})
"""Close codes of a customer who ended the chat (1000 normal, 1001 going away: the page was closed): a reply still
being written for them is cancelled, which ends its model request. Any other end (1006 a dropped network, 1005 the
widget reconnecting) lets the turn finish, so the reconnecting widget finds the stored reply."""
_INBOX_FRAMES = 32
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Incoming(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None
    client_message_id: str | None = Field(default=None, max_length=128)


class _Inbox:
    """Reads the socket on its own task, so that the customer closing it is noticed while a turn is answered.

    Frames are processed in order by the receive loop; at most `_INBOX_FRAMES` wait, then reading pauses.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        self._frames: asyncio.Queue[str | None] = asyncio.Queue(maxsize=_INBOX_FRAMES)
        self.left: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the customer closed the socket with a code in `CUSTOMER_LEFT`."""
        self._reader = asyncio.create_task(self._read())

    async def next(self) -> str | None:
        """The next text frame, or None once the socket is closed."""
        return await self._frames.get()

    async def _read(self) -> None:
        try:
            while True:
                message = await self._websocket.receive()
                if message["type"] == "websocket.disconnect":
                    if message.get("code", 1000) in CUSTOMER_LEFT:
                        self.left.set_result(None)
                    break
                text = message.get("text")
                if text is None:
                    text = bytes(message.get("bytes") or b"").decode("utf-8", "replace")
                await self._frames.put(text)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the connection is gone (the server closed it, or it broke): same as a close
        await self._frames.put(None)

    async def aclose(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}


@router.websocket("/v1/ws")
async def customer_socket(
    websocket: WebSocket,
    user_id: str = "",
    session_id: str | None = None,
    channel: str = "web",
    token: str | None = None,
) -> None:
    """Protocol: see docs/api.md. Customer messages are processed one at a time, in order."""
    services = get_services(websocket)
    await websocket.accept(subprotocol=WS_PROTOCOL if wants_ws_protocol(websocket) else None)
    tenant_id = "default"
    credential = ws_token(websocket, token)
    if credential is None and services.settings.auth.mode == "required":
        await websocket.send_json(_error("unauthorized", "connect with a customer token from POST /v1/widget/session"))
        await websocket.close(CLOSE_POLICY)
        return
    if credential is not None:
        try:
            claims = access_of(services).tokens.customer(credential)
        except UserError as exc:
            await websocket.send_json(_error(exc.code, str(exc)))
            await websocket.close(CLOSE_POLICY)
            return
        if (user_id and user_id != claims.user_id) or (session_id and session_id != claims.session_id):
            await websocket.send_json(_error("forbidden", "this token is for another customer or session"))
            await websocket.close(CLOSE_POLICY)
            return
        user_id, session_id, tenant_id = claims.user_id, claims.session_id, claims.tenant_id
    if not (1 <= len(user_id) <= 128) or (session_id is not None and not re.match(SESSION_ID_PATTERN, session_id)):
        await websocket.send_json(
            _error("invalid_request", "connect with ?user_id=<1-128 chars>&session_id=<optional id>")
        )
        await websocket.close(CLOSE_POLICY)
        return
    try:
        session = await services.store.open_session(
            session_id=session_id, user_id=user_id, channel=channel, tenant_id=tenant_id
        )
    except (UserError, StoreUnavailableError) as exc:
        await websocket.send_json(_error(exc.code, str(exc)))
        await websocket.close(CLOSE_POLICY if isinstance(exc, UserError) else 1011)
        return
    bind_session(session.id)
    lock = asyncio.Lock()

    async def send(event: dict[str, Any]) -> None:
        async with lock:  # turn events and pushed agent events come from two tasks
            await websocket.send_json(event)

    if services.handoff is None:
        await send({"type": "session", "session_id": session.id, "owner": session.owner, "handoff": None})
        await _receive(websocket, services, session, channel, send)
        return
    async with services.handoff.hub.subscribe(session_channel(session.id)) as pushed:
        await send(
            {
                "type": "session",
                "session_id": session.id,
                "owner": session.owner,
                "handoff": await _handoff(services, session),
            }
        )
        forwarder = asyncio.create_task(_push(pushed, send))
        try:
            await _receive(websocket, services, session, channel, send)
        finally:
            forwarder.cancel()
            await asyncio.gather(forwarder, return_exceptions=True)


async def _handoff(services: Services, session: SessionRecord) -> dict[str, Any] | None:
    """Where the session's handoff stands, for a (re)connecting widget: queued, or which agent has it."""
    assert services.handoff is not None
    ticket = await services.handoff.tickets.open_for_session(session.id)
    return {"status": ticket.status, "agent": ticket.agent_name} if ticket is not None else None


async def _push(events: asyncio.Queue[dict[str, Any]], send: Send) -> None:
    """Forwards the session channel's events (`agent_message`, `status`) to the customer until cancelled."""
    while True:
        event = await events.get()
        if event.get("type") == RESYNC:
            continue  # the widget re-reads the session history when it reconnects; nothing to show here
        try:
            await send(event)
        except (WebSocketDisconnect, RuntimeError):
            return  # the socket closed; the receive loop ends the connection


async def _receive(websocket: WebSocket, services: Services, session: SessionRecord, channel: str, send: Send) -> None:
    inbox = _Inbox(websocket)
    try:
        await _process_frames(websocket, inbox, services, session, channel, send)
    finally:
        await inbox.aclose()


async def _process_frames(
    websocket: WebSocket, inbox: _Inbox, services: Services, session: SessionRecord, channel: str, send: Send
) -> None:
    user_id, tenant_id = session.user_id, session.tenant_id
    try:
        while True:
            raw = await inbox.next()
            if raw is None:
                return
            if len(raw.encode()) > MAX_FRAME_BYTES:
                await send(_error("payload_too_large", f"frames are limited to {MAX_FRAME_BYTES} bytes"))
                await websocket.close(CLOSE_TOO_BIG)
                return
            try:
                incoming = _Incoming.model_validate(json.loads(raw))
            except (ValueError, ValidationError):
                await send(_error("invalid_request", 'send JSON like {"type":"message","text":"..."}'))
                continue
            if incoming.type == "ping":
                await send({"type": "pong"})
            elif incoming.type == "message":
                try:
                    await access_of(services).limiter.hit("ws", f"{tenant_id}:{user_id}")
                except RateLimitedError as exc:
                    await send(
                        {
                            **_error(exc.code, str(exc)),
                            "retry_after": exc.retry_after_s,
                            "client_message_id": incoming.client_message_id,
                        }
                    )
                    await websocket.close(CLOSE_TRY_LATER)
                    return
                await _handle_message(send, services, session, channel, incoming, inbox.left)
            else:
                await send(_error("invalid_request", f"unknown message type {incoming.type!r}"))
    except WebSocketDisconnect:
        return


async def _handle_message(
    send: Send,
    services: Services,
    session: SessionRecord,
    channel: str,
    incoming: _Incoming,
    left: asyncio.Future[None],
) -> None:
    cid = incoming.client_message_id
    try:
        turn = make_turn(
            services.settings,
            user_id=session.user_id,
            channel=channel,
            text=incoming.text or "",
            session_id=session.id,
            client_message_id=cid,
            tenant_id=session.tenant_id,
        )
    except UserError as exc:
        await send({**_error(exc.code, str(exc)), "client_message_id": cid})
        return
    try:
        async for event in stream_turn(services.runner, turn, finish_in=services.background_turns, left=left):
            if isinstance(event, Delta):
                await send({"type": "delta", "client_message_id": cid, "text": event.text})
            elif isinstance(event, Replaced):
                # The deltas so far are withdrawn: a check replaced the reply (see docs/security.md).
                await send({"type": "replace", "client_message_id": cid, "text": event.text})
            elif isinstance(event, Finished):
                # A silent reply (a human agent owns the session) carries "silent": true and an empty text.
                reply = ChatResponse.from_result(event.result).model_dump(mode="json")
                await send({"type": "reply", "client_message_id": cid, **reply})
            else:
                await send({"type": "ack", "client_message_id": cid, "message_id": event.user_message_id})
                await send({"type": "typing"})
    except KefuError as exc:
        await send({**_error(exc.code, str(exc)), "client_message_id": cid})
