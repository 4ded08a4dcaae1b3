"""Hands a conversation to people and back: the ticket with full context, the customer's notice, live messages.

While a person owns a session the bot stays silent: customer messages are stored and delivered to the
agent console; agent messages are stored (role 'agent') and delivered to the customer's widget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from kefu.handoff.hub import AGENTS, EventHub, session_channel
from kefu.handoff.tickets import TicketRecord, Tickets
from kefu.language import Language
from kefu.prompts import PromptLibrary
from kefu.shop import ShopProfile
from kefu.store import ConversationStore, MessageRecord, NewReply, SessionRecord

log = logging.getLogger(__name__)

_PRIORITY = {"complaint": 80, "angry": 80, "backend_failure": 70, "customer_request": 50}
_MINUTES_PER_CUSTOMER = 3


@dataclass(frozen=True, slots=True)
class HandoffNotice:
    """What the customer is told when their conversation goes to a person."""

    ticket: TicketRecord
    created: bool
    position: int
    wait_minutes: int
    off_hours: bool
    text: str


class HandoffService:
    """Opens tickets, tells the customer where they stand, and relays messages between agent and customer."""

    def __init__(
        self,
        store: ConversationStore,
        hub: EventHub,
        prompts: PromptLibrary,
        shop: ShopProfile,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.tickets = Tickets(store)
        self.hub = hub
        self.prompts = prompts
        self.shop = shop
        self.clock = clock

    async def hand_off(
        self,
        *,
        session: SessionRecord,
        reason: str,
        language: Language,
        intent: str | None,
        emotion: str | None,
        summary: str,
        context: dict[str, Any],
    ) -> HandoffNotice:
        priority = max(_PRIORITY.get(reason, 60), _PRIORITY.get(emotion or "", 0))
        ticket, created = await self.tickets.open(
            session_id=session.id,
            tenant_id=session.tenant_id,
            reason=reason,
            priority=priority,
            summary=summary,
            intent=intent,
            emotion=emotion,
            context={**context, "language": language},
        )
        await self.store.set_owner(session.id, "human")
        position = await self.tickets.position(ticket) if ticket.status == "queued" else 0
        wait = max(1, position * _MINUTES_PER_CUSTOMER)
        off_hours = not self.within_support_hours()
        if created:
            await self._to_agents(ticket, {"type": "ticket_opened", "ticket": ticket.as_dict(), "position": position})
        if off_hours:
            text = self.prompts.reply("handoff_off_hours", language).format(hours=self.shop.support_hours or "")
        else:
            text = self.prompts.reply("handoff_queued", language).format(position=position, wait=wait)
        return HandoffNotice(ticket, created, position, wait, off_hours, text)

    def within_support_hours(self) -> bool:
        hours = self.shop.support.hours
        if not hours or "-" not in hours:
            return True
        zone = ZoneInfo(self.shop.support.timezone) if self.shop.support.timezone else None
        now = self.clock().astimezone(zone) if zone else self.clock()
        start_s, end_s = hours.split("-", 1)
        start, end = time.fromisoformat(start_s.strip()), time.fromisoformat(end_s.strip())
        return start <= now.time() < end

    async def waiting_notice(self, session: SessionRecord, language: Language) -> str | None:
        """For a customer writing while queued: where they stand (None once an agent has the conversation)."""
        ticket = await self.tickets.open_for_session(session.id)
        if ticket is None or ticket.status != "queued":
            return None
        ahead = await self.tickets.position(ticket) - 1
        return self.prompts.reply("handoff_waiting", language).format(ahead=ahead)

    async def relay_customer(self, session: SessionRecord, message: MessageRecord, text: str) -> None:
        """A customer's message in a human-owned session reaches the agent consoles."""
        ticket = await self.tickets.open_for_session(session.id)
        await self.hub.publish(
            AGENTS,
            {
                "type": "customer_message",
                "tenant_id": session.tenant_id,
                "session_id": session.id,
                "ticket_id": ticket.id if ticket else None,
                "message": {
                    "id": message.id,
                    "role": "user",
                    "text": text,
                    "created_at": message.created_at.isoformat(),
                },
            },
        )

    async def claim(self, ticket_id: str, *, tenant_id: str, agent_id: str, agent_name: str) -> TicketRecord:
        """Give the ticket to the agent; the customer is told who joined (once: claiming again changes nothing)."""
        ticket, assigned = await self.tickets.claim(
            ticket_id, tenant_id=tenant_id, agent_id=agent_id, agent_name=agent_name
        )
        if not assigned:
            return ticket
        notice = self.prompts.reply("handoff_agent_joined", _language(ticket)).format(agent=agent_name)
        stored = await self._say(ticket, "system", notice, agent_name=None)
        await self.hub.publish(
            session_channel(ticket.session_id), _message_event("status", stored, owner="human", agent=agent_name)
        )
        await self._to_agents(ticket, {"type": "ticket_claimed", "ticket": ticket.as_dict()})
        return ticket

    async def agent_says(self, ticket: TicketRecord, text: str, *, agent_name: str) -> MessageRecord:
        stored = await self._say(ticket, "agent", text, agent_name=agent_name)
        await self.hub.publish(
            session_channel(ticket.session_id), _message_event("agent_message", stored, agent=agent_name)
        )
        await self._to_agents(
            ticket,
            {
                "type": "agent_message",
                "session_id": ticket.session_id,
                "ticket_id": ticket.id,
                "message": _message(stored),
            },
        )
        return stored

    async def close(
        self, ticket_id: str, *, tenant_id: str, resolution_code: str, note: str | None, hand_back: bool
    ) -> TicketRecord:
        """End the agent's part. Hand back: the bot takes the conversation over again and says so. Close: the ticket is
        resolved and the customer is told the conversation ended; a later message starts fresh with the bot (nobody
        is left writing into a conversation no agent will read)."""
        ticket = await self.tickets.close(
            ticket_id,
            tenant_id=tenant_id,
            resolution_code=resolution_code,
            note=note,
            status="returned" if hand_back else "closed",
        )
        await self.store.set_owner(ticket.session_id, "bot")
        notice = self.prompts.reply("handoff_returned" if hand_back else "handoff_closed", _language(ticket))
        stored = await self._say(ticket, "system", notice, agent_name=None)
        await self.hub.publish(
            session_channel(ticket.session_id),
            _message_event("status", stored, owner="bot", ticket_status=ticket.status),
        )
        await self._to_agents(ticket, {"type": "ticket_closed", "ticket": ticket.as_dict()})
        return ticket

    async def _to_agents(self, ticket: TicketRecord, event: dict[str, Any]) -> None:
        """Every event on the shared agents channel names its tenant, so consoles show only their own."""
        await self.hub.publish(AGENTS, {**event, "tenant_id": ticket.tenant_id})

    async def _say(self, ticket: TicketRecord, role: str, text: str, *, agent_name: str | None) -> MessageRecord:
        return await self.store.add_reply(
            NewReply(
                session_id=ticket.session_id,
                tenant_id=ticket.tenant_id,
                reply_to=None,
                role=role,
                text=text,
                route="human" if role == "agent" else "handoff_status",
                trace={"ticket_id": ticket.id, **({"agent": agent_name} if agent_name else {})},
            )
        )


def _language(ticket: TicketRecord) -> Language:
    return "en" if ticket.context.get("language") == "en" else "zh"


def _message(stored: MessageRecord) -> dict[str, Any]:
    return {"id": stored.id, "role": stored.role, "text": stored.text, "created_at": stored.created_at.isoformat()}


def _message_event(kind: str, stored: MessageRecord, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": _message(stored), **extra}
