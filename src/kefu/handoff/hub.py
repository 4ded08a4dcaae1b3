"""Live delivery of events to open sockets: a session's customer widget, and the agents watching the queue.

In process by default; the scale-out issue adds a Redis pub/sub hub with the same interface so an agent on
one worker reaches a customer connected to another.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

log = logging.getLogger(__name__)
_QUEUE_SIZE = 256

AGENTS = "agents"
"""The channel every agent console listens to (queue changes, customer messages of sessions)."""


def session_channel(session_id: str) -> str:
    return f"session:{session_id}"


class EventHub:
    """Publish/subscribe by channel name; a slow subscriber loses its oldest events, never blocks a publisher."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    async def publish(self, channel: str, event: dict[str, Any]) -> int:
        """Deliver `event` to the channel's subscribers; returns how many there were."""
        queues = list(self._subscribers.get(channel, ()))
        for queue in queues:
            if queue.full():
                queue.get_nowait()
                log.warning("dropping an event for a slow subscriber of %s", channel)
            queue.put_nowait(event)
        return len(queues)

    def subscribers(self, channel: str) -> int:
        return len(self._subscribers.get(channel, ()))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        self._subscribers[channel].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[channel].discard(queue)
            if not self._subscribers[channel]:
                del self._subscribers[channel]

    async def aclose(self) -> None:
        self._subscribers.clear()
