"""Live delivery of events to open sockets: a session's customer widget, and the agents watching the queue.

Two hubs share one interface. `LocalEventHub` delivers within this process (one worker); `RedisEventHub`
delivers through Redis pub/sub, so an agent connected to one worker or replica reaches a customer connected to
another. Delivery is live only: an event published while a subscriber is not connected (its socket, or its
worker's connection to Redis) is lost. Everything delivered is also stored, so clients catch up from the store:
the console from its queue snapshot and the ticket transcript, the widget from the session history.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
_QUEUE_SIZE = 256

AGENTS = "agents"
"""The channel every agent console listens to (queue changes, customer messages of sessions)."""

RESYNC = "resync"
"""Type of the event a subscriber gets when its subscription was restored after a lost Redis connection:
events may have been missed, so re-read what matters from the store."""

_CONTROL = "_hub"
"""Subscribed by every RedisEventHub, so its connection exists (and is checked) even with no sockets open."""


def session_channel(session_id: str) -> str:
    return f"session:{session_id}"


class EventHub(Protocol):
    """Publish/subscribe of JSON-serialisable events by channel name."""

    async def publish(self, channel: str, event: dict[str, Any]) -> int:
        """Deliver `event` to the channel's subscribers; returns how many received it (sockets or workers)."""
        ...

    def subscribe(self, channel: str) -> AbstractAsyncContextManager[asyncio.Queue[dict[str, Any]]]:
        """A queue of the channel's events while the context is open."""
        ...

    async def aclose(self) -> None: ...


class _Subscribers:
    """This process's subscriber queues by channel; a slow subscriber loses its oldest events, never blocks."""

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def add(self, channel: str) -> tuple[asyncio.Queue[dict[str, Any]], bool]:
        """A new queue on `channel`, and whether it is the channel's first."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        first = channel not in self._queues
        self._queues[channel].add(queue)
        return queue, first

    def remove(self, channel: str, queue: asyncio.Queue[dict[str, Any]]) -> bool:
        """Forget `queue`; returns whether the channel has no subscribers left."""
        queues = self._queues.get(channel)
        if queues is None:
            return False
        queues.discard(queue)
        if queues:
            return False
        del self._queues[channel]
        return True

    def deliver(self, channel: str, event: dict[str, Any]) -> int:
        queues = list(self._queues.get(channel, ()))
        for queue in queues:
            if queue.full():
                queue.get_nowait()
                log.warning("dropping an event for a slow subscriber of %s", channel)
            queue.put_nowait(event)
        return len(queues)

    def count(self, channel: str) -> int:
        return len(self._queues.get(channel, ()))

    def channels(self) -> list[str]:
        return list(self._queues)

    def clear(self) -> None:
        self._queues.clear()


class LocalEventHub:
    """Delivery within one process: enough for one worker, the default without Redis."""

    def __init__(self) -> None:
        self._local = _Subscribers()

    async def publish(self, channel: str, event: dict[str, Any]) -> int:
        return self._local.deliver(channel, event)

    def subscribers(self, channel: str) -> int:
        return self._local.count(channel)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue, _ = self._local.add(channel)
        try:
            yield queue
        finally:
            self._local.remove(channel, queue)

    async def aclose(self) -> None:
        self._local.clear()


class RedisEventHub:
    """Delivery through Redis pub/sub between workers and replicas: one subscriber connection per process, whose
    reader fans messages out to this process's queues, reconnecting with backoff when the connection is lost.

    Channels are named `kefu:<db>:<channel>`: pub/sub ignores Redis database numbers, so deployments sharing one
    Redis server keep apart by using different database numbers (as their rate-limit keys already do).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        backoff_s: tuple[float, float] = (0.1, 5.0),
        confirm_timeout_s: float = 5.0,
        poll_s: float = 1.0,
    ) -> None:
        # Publishing is on the request path: fail fast when Redis is away (the event is lost, the message stored).
        self._publisher: Redis = Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 1)
        )
        self.client_name = f"kefu-events-{os.getpid()}-{secrets.token_hex(4)}"
        """The subscriber connection's name in Redis `CLIENT LIST`."""
        # The subscriber's errors reach the reader at once; it reconnects and resubscribes itself.
        self._subscriber: Redis = Redis.from_url(
            url,
            socket_connect_timeout=2,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
            client_name=self.client_name,
        )
        db = self._publisher.connection_pool.connection_kwargs.get("db", 0)
        self._prefix = prefix if prefix is not None else f"kefu:{db}:"
        self._backoff_s = backoff_s
        self._confirm_timeout_s = confirm_timeout_s
        self._poll_s = poll_s
        self._local = _Subscribers()
        self._pubsub: PubSub | None = None
        self._commands = asyncio.Lock()
        """Serialises SUBSCRIBE/UNSUBSCRIBE and the reader's resubscription after a reconnect."""
        self._confirmed: dict[str, asyncio.Event] = {}
        self._reader: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        """Set while the subscriber connection is up (tests and health checks wait on it)."""

    def start(self) -> None:
        """Start the reader (in the application's event loop); it connects, and reconnects, on its own."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_forever(), name="kefu-redis-event-hub")

    async def publish(self, channel: str, event: dict[str, Any]) -> int:
        """Returns how many workers' hubs are subscribed to the channel (0 when Redis is unreachable)."""
        try:
            receivers = await self._publisher.publish(self._wire(channel), json.dumps(event, ensure_ascii=False))
        except (RedisError, OSError) as exc:
            log.warning("live event for %s lost: Redis unreachable (%s)", channel.split(":")[0], type(exc).__name__)
            return 0
        return int(receivers)

    def subscribers(self, channel: str) -> int:
        """This process's subscribers of `channel`."""
        return self._local.count(channel)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Returns once Redis confirmed the subscription (or at once while Redis is unreachable: the reader
        subscribes when it reconnects and then sends a `resync` event)."""
        queue, first = self._local.add(channel)
        try:
            if first:
                await self._subscribe_remote(channel)
            yield queue
        finally:
            if self._local.remove(channel, queue):
                await self._unsubscribe_remote(channel)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        self._local.clear()
        await self._publisher.aclose()
        await self._subscriber.aclose()

    def _wire(self, channel: str) -> str:
        return f"{self._prefix}{channel}"

    async def _subscribe_remote(self, channel: str) -> None:
        confirmed = self._confirmed[channel] = asyncio.Event()
        async with self._commands:
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                await pubsub.subscribe(self._wire(channel))
            except (RedisError, OSError):
                return  # the reader sees the same failure, reconnects and subscribes every open channel
        try:
            await asyncio.wait_for(confirmed.wait(), self._confirm_timeout_s)
        except TimeoutError:
            log.warning("Redis did not confirm a subscription within %.0f s", self._confirm_timeout_s)

    async def _unsubscribe_remote(self, channel: str) -> None:
        async with self._commands:
            if self._local.count(channel):
                return  # subscribed again meanwhile
            self._confirmed.pop(channel, None)
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                await pubsub.unsubscribe(self._wire(channel))
            except (RedisError, OSError):
                return  # the reader reconnects without this channel

    async def _read_forever(self) -> None:
        delay = self._backoff_s[0]
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                async with self._commands:
                    restored = set(self._local.channels())
                    await pubsub.subscribe(self._wire(_CONTROL), *(self._wire(c) for c in restored))
                    self._pubsub = pubsub
                await self._dispatch(pubsub, restored)
            except (RedisError, OSError) as exc:
                if self.connected.is_set():
                    delay = self._backoff_s[0]
                    log.warning("lost the Redis event connection (%s); reconnecting", type(exc).__name__)
                else:
                    log.warning(
                        "cannot reach Redis for live events (%s); next try in %.1f s", type(exc).__name__, delay
                    )
            except Exception:
                log.exception("the live event reader failed; reconnecting")  # a bug must not end live delivery
            finally:
                self._pubsub = None
                self.connected.clear()
                for event in self._confirmed.values():
                    event.clear()
                await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._backoff_s[1])

    async def _dispatch(self, pubsub: PubSub, restored: set[str]) -> None:
        """Deliver messages until the connection fails; a channel restored by this connection gets a `resync`."""
        while True:
            message = await pubsub.get_message(timeout=self._poll_s)
            if message is None:
                continue
            kind = message["type"]
            wire = message["channel"]
            wire = wire.decode() if isinstance(wire, bytes) else str(wire)
            if not wire.startswith(self._prefix):
                continue
            channel = wire[len(self._prefix) :]
            if kind == "message":
                try:
                    event = json.loads(message["data"])
                except ValueError:
                    log.warning("ignoring a malformed event on %s", channel.split(":")[0])
                    continue
                if isinstance(event, dict):
                    self._local.deliver(channel, event)
            elif kind == "subscribe":
                if channel == _CONTROL:
                    self.connected.set()
                if channel in self._confirmed:
                    self._confirmed[channel].set()
                if channel in restored:
                    restored.discard(channel)
                    self._local.deliver(channel, {"type": RESYNC})
