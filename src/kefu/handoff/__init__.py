"""Handing conversations to human agents: tickets, the queue, and live delivery between agent and customer."""

from kefu.handoff.hub import EventHub, LocalEventHub, RedisEventHub
from kefu.handoff.service import HandoffService
from kefu.handoff.tickets import TicketRecord, Tickets

__all__ = ["EventHub", "HandoffService", "LocalEventHub", "RedisEventHub", "TicketRecord", "Tickets"]
