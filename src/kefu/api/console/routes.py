"""The agent console: queue, ticket with transcript, claim, reply, close, suggested replies, and the live socket.

Every route needs the agent role and is scoped to the operator's tenant; the routes translate HTTP to
`HandoffService` calls and back, and audit what the agent did (see docs/console.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, WebSocket, WebSocketDisconnect

from kefu.api.console.protocol import (
    AgentMessageIn,
    CloseIn,
    Suggestion,
    SuggestionsOut,
    TicketDetail,
    TicketOut,
    TranscriptMessage,
)
from kefu.api.dependencies import ServicesDep, get_services
from kefu.api.security import (
    OPEN_MODE_ACTOR,
    WS_PROTOCOL,
    Operator,
    access_of,
    require_role,
    wants_ws_protocol,
    ws_token,
)
from kefu.auth.accounts import role_allows
from kefu.auth.tokens import AuthError, ForbiddenError
from kefu.errors import ConfigError, ConflictError, NotFoundError, UserError
from kefu.handoff import HandoffService, TicketRecord, Tickets
from kefu.handoff.hub import AGENTS, RESYNC
from kefu.handoff.tickets import OPEN_STATUSES
from kefu.services import Services
from kefu.store.models import utcnow

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/console", tags=["agent console"])
AgentOp = Annotated[Operator, Depends(require_role("agent"))]
TicketId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
OPEN_MODE_AGENT = "demo"
"""The agent name customers see in open mode, where nobody signs in."""
SUGGESTIONS = 3
TRANSCRIPT_LIMIT = 1000
CLOSE_POLICY = 1008
CLOSE_TRY_LATER = 1013
_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Not signed in"},
    403: {"description": "Signed in without the agent role"},
    404: {"description": "No such ticket in your tenant"},
    409: {"description": "Another agent has the ticket, or it is already closed"},
    422: {"description": "Malformed request"},
}


def handoff_of(services: Services) -> HandoffService:
    if services.handoff is None:
        raise ConfigError("human handoff is not built for this app")
    return services.handoff


async def agent_name(services: Services, op: Operator) -> str:
    """The name customers see for this operator: their username."""
    if op.id == OPEN_MODE_ACTOR:
        return OPEN_MODE_AGENT
    account = await access_of(services).accounts.get_operator(op.id, tenant_id=op.tenant_id)
    return account.username


async def queue_snapshot(tickets: Tickets, tenant_id: str) -> list[TicketOut]:
    """Open tickets by priority then waiting time; queued ones numbered in that order (as `Tickets.position`)."""
    now = utcnow()
    snapshot: list[TicketOut] = []
    queued = 0
    for ticket in await tickets.queue(tenant_id=tenant_id):
        position = None
        if ticket.status == "queued":
            queued += 1
            position = queued
        snapshot.append(TicketOut.of(ticket, now=now, position=position))
    return snapshot


def _holder(ticket: TicketRecord) -> str:
    return ticket.agent_name or ticket.agent_id or "another agent"


def _ensure_open(ticket: TicketRecord) -> None:
    if ticket.status not in OPEN_STATUSES:
        raise ConflictError(f"ticket {ticket.id} is already {ticket.status}; nothing more can be done with it")


@router.get("/queue", response_model=list[TicketOut], responses=_ERRORS)
async def queue(op: AgentOp, services: ServicesDep) -> list[TicketOut]:
    """Open tickets of your tenant: highest priority first, then longest waiting."""
    return await queue_snapshot(handoff_of(services).tickets, op.tenant_id)


@router.get("/tickets/{ticket_id}", response_model=TicketDetail, responses=_ERRORS)
async def ticket_detail(ticket_id: TicketId, op: AgentOp, services: ServicesDep) -> TicketDetail:
    """The ticket, what the bot knew when it handed over, and the session's whole transcript."""
    tickets = handoff_of(services).tickets
    ticket = await tickets.get(ticket_id, tenant_id=op.tenant_id)
    position = await tickets.position(ticket) if ticket.status == "queued" else None
    records = await services.store.list_messages(ticket.session_id, limit=TRANSCRIPT_LIMIT, tenant_id=op.tenant_id)
    summary = TicketOut.of(ticket, now=utcnow(), position=position)
    return TicketDetail(
        **summary.model_dump(),
        context=ticket.context,
        transcript=[TranscriptMessage.of(r) for r in records],
    )


@router.post("/tickets/{ticket_id}/claim", response_model=TicketOut, responses=_ERRORS)
async def claim(ticket_id: TicketId, op: AgentOp, services: ServicesDep) -> TicketOut:
    """Take a queued ticket: the customer is told you joined, and from now on only you answer them."""
    handoff = handoff_of(services)
    ticket = await handoff.tickets.get(ticket_id, tenant_id=op.tenant_id)
    if ticket.status == "assigned" and ticket.agent_id == op.id:
        return TicketOut.of(ticket, now=utcnow())  # a repeated click: the customer was told once
    _ensure_open(ticket)
    if ticket.status == "assigned":
        raise ConflictError(f"{_holder(ticket)} is already handling ticket {ticket.id}")
    ticket = await handoff.claim(
        ticket_id, tenant_id=op.tenant_id, agent_id=op.id, agent_name=await agent_name(services, op)
    )
    await access_of(services).audit(
        actor=op.actor,
        action="ticket.claim",
        tenant_id=op.tenant_id,
        target=ticket.id,
        data={"session_id": ticket.session_id},
    )
    return TicketOut.of(ticket, now=utcnow())


@router.post("/tickets/{ticket_id}/messages", response_model=TranscriptMessage, status_code=201, responses=_ERRORS)
async def send_message(
    ticket_id: TicketId, body: AgentMessageIn, op: AgentOp, services: ServicesDep
) -> TranscriptMessage:
    """Say something to the customer (stored with role `agent`, pushed to their widget); only the claiming agent."""
    handoff = handoff_of(services)
    ticket = await handoff.tickets.get(ticket_id, tenant_id=op.tenant_id)
    _ensure_open(ticket)
    if ticket.status == "queued":
        raise ConflictError(f"claim ticket {ticket.id} before writing to the customer")
    if ticket.agent_id != op.id:
        raise ConflictError(f"{_holder(ticket)} is handling ticket {ticket.id}; only they can write to the customer")
    stored = await handoff.agent_says(ticket, body.text, agent_name=ticket.agent_name or op.id)
    # The text is the customer's business, not the audit log's: the log says who wrote, when, and where.
    await access_of(services).audit(
        actor=op.actor,
        action="ticket.message",
        tenant_id=op.tenant_id,
        target=ticket.id,
        data={"message_id": stored.id, "chars": len(body.text)},
    )
    return TranscriptMessage.of(stored)


@router.post("/tickets/{ticket_id}/close", response_model=TicketOut, responses=_ERRORS)
async def close(ticket_id: TicketId, body: CloseIn, op: AgentOp, services: ServicesDep) -> TicketOut:
    """End the handoff with a resolution code; `hand_back` gives the conversation back to the bot.

    The claiming agent closes their ticket; a queued ticket (a duplicate, a customer who left) any agent;
    another agent's ticket only an admin.
    """
    handoff = handoff_of(services)
    ticket = await handoff.tickets.get(ticket_id, tenant_id=op.tenant_id)
    _ensure_open(ticket)
    if ticket.status == "assigned" and ticket.agent_id != op.id and not role_allows(op.role, "admin"):
        raise ConflictError(f"{_holder(ticket)} is handling ticket {ticket.id}; only they (or an admin) can close it")
    closed = await handoff.close(
        ticket_id,
        tenant_id=op.tenant_id,
        resolution_code=body.resolution_code,
        note=body.note or None,
        hand_back=body.hand_back,
    )
    await access_of(services).audit(
        actor=op.actor,
        action="ticket.close",
        tenant_id=op.tenant_id,
        target=closed.id,
        data={"resolution_code": body.resolution_code, "hand_back": body.hand_back},
    )
    return TicketOut.of(closed, now=utcnow())


@router.get("/tickets/{ticket_id}/suggestions", response_model=SuggestionsOut, responses=_ERRORS)
async def suggestions(
    ticket_id: TicketId,
    op: AgentOp,
    services: ServicesDep,
    q: Annotated[str | None, Query(max_length=500, description="Search for this instead.")] = None,
) -> SuggestionsOut:
    """Knowledge-base passages for the customer's last message (or `q`): the best three, to quote or adapt."""
    ticket = await handoff_of(services).tickets.get(ticket_id, tenant_id=op.tenant_id)
    query = (q or "").strip()
    if not query:
        records = await services.store.list_messages(ticket.session_id, limit=50, tenant_id=op.tenant_id)
        customer = [r.redacted_text or r.text for r in records if r.role == "user"]
        query = customer[-1] if customer else ""
    knowledge = services.knowledge
    if not query or knowledge is None:
        return SuggestionsOut(query=query, suggestions=[])
    await knowledge.refresh()
    language = ticket.context.get("language")
    hits = await knowledge.search(
        query, tenant_id=op.tenant_id, language=language if isinstance(language, str) else None, k=SUGGESTIONS
    )
    return SuggestionsOut(query=query, suggestions=[Suggestion.of(h) for h in hits[:SUGGESTIONS]])


# ---------------------------------------------------------------- the live socket


async def socket_operator(services: Services, token: str | None) -> Operator:
    """The agent behind a console socket: the same rules as `require_role("agent")`, with the token from the socket."""
    access = access_of(services)
    if token is None:
        if services.settings.auth.mode == "open" and not await access.accounts.has_operators():
            return Operator(OPEN_MODE_ACTOR, "default", "admin")
        raise AuthError("sign in first (POST /v1/auth/login), then connect with the access token")
    claims = access.tokens.operator(token)
    try:
        account = await access.accounts.get_operator(claims.operator_id, tenant_id=claims.tenant_id)
    except NotFoundError:
        raise AuthError("this account no longer exists") from None
    if not account.active or account.token_version != claims.version:
        raise AuthError("this token is no longer valid (the account changed); sign in again")
    if not role_allows(account.role, "agent"):
        raise ForbiddenError(f"the console needs the agent role; you are {account.role}")
    return Operator(account.id, account.tenant_id, account.role)


class TenantEvents:
    """Decides which events of the shared agents channel belong to one tenant (by their ticket), caching the answer."""

    def __init__(self, tickets: Tickets, tenant_id: str) -> None:
        self.tickets = tickets
        self.tenant_id = tenant_id
        self._ours: dict[str, bool] = {}

    def know(self, snapshot: list[TicketOut]) -> None:
        self._ours.update((t.id, True) for t in snapshot)

    async def concerns_us(self, event: dict[str, Any]) -> bool:
        if "tenant_id" in event:
            return bool(event["tenant_id"] == self.tenant_id)
        ticket = event.get("ticket")
        ticket_id = ticket.get("id") if isinstance(ticket, dict) else event.get("ticket_id")
        if not isinstance(ticket_id, str):
            return False
        if ticket_id not in self._ours:
            try:
                await self.tickets.get(ticket_id, tenant_id=self.tenant_id)
                self._ours[ticket_id] = True
            except NotFoundError:
                self._ours[ticket_id] = False
        return self._ours[ticket_id]


@router.websocket("/ws")
async def console_socket(websocket: WebSocket, token: str | None = None) -> None:
    """Live events for agents: a `queue` snapshot first (and after every ticket change), then every event of the
    agents channel for your tenant (`ticket_*`, `customer_message`, `agent_message`). Send `{"type":"ping"}` to
    keep the socket alive. The token comes as subprotocol `kefu.token.<access token>` or as `?token=`."""
    services = get_services(websocket)
    await websocket.accept(subprotocol=WS_PROTOCOL if wants_ws_protocol(websocket) else None)
    try:
        op = await socket_operator(services, ws_token(websocket, token))
        handoff = handoff_of(services)
    except UserError as exc:
        await websocket.send_json({"type": "error", "error": {"code": exc.code, "message": str(exc)}})
        await websocket.close(CLOSE_POLICY)
        return
    lock = asyncio.Lock()

    async def send(event: dict[str, Any]) -> None:
        async with lock:  # the forwarder and the ping answers share the socket
            await websocket.send_json(event)

    tenant = TenantEvents(handoff.tickets, op.tenant_id)

    async def send_queue() -> None:
        snapshot = await queue_snapshot(handoff.tickets, op.tenant_id)
        tenant.know(snapshot)
        await send({"type": "queue", "tickets": [t.model_dump(mode="json") for t in snapshot]})

    async with handoff.hub.subscribe(AGENTS) as events:
        await send_queue()
        tasks = {
            asyncio.create_task(_forward(events, tenant, send, send_queue)),
            asyncio.create_task(_answer_pings(websocket, send)),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    failure = next((t.exception() for t in done if not t.cancelled() and t.exception() is not None), None)
    if failure is not None and not isinstance(failure, WebSocketDisconnect):
        # e.g. the store went away: close, so the console reconnects and starts from a fresh snapshot
        log.warning("console socket ended: %s", type(failure).__name__)
        with contextlib.suppress(Exception):
            await websocket.close(CLOSE_TRY_LATER)


async def _forward(
    events: asyncio.Queue[dict[str, Any]],
    tenant: TenantEvents,
    send: Callable[[dict[str, Any]], Awaitable[None]],
    send_queue: Callable[[], Awaitable[None]],
) -> None:
    while True:
        event = await events.get()
        if event.get("type") == RESYNC:  # live events may have been lost: send the queue as it stands now
            await send_queue()
            continue
        if not await tenant.concerns_us(event):
            continue
        await send(event)
        if str(event.get("type", "")).startswith("ticket_"):
            await send_queue()


async def _answer_pings(websocket: WebSocket, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    while True:
        raw = await websocket.receive_text()
        try:
            kind = json.loads(raw).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind == "ping":
            await send({"type": "pong"})
        else:
            await send({"type": "error", "error": {"code": "invalid_request", "message": 'send {"type":"ping"}'}})
