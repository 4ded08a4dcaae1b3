"""Bridges a running turn to a streaming channel: the turn runs as a task, its events arrive on a queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kefu.pipeline import TurnContext, TurnInput, TurnResult, TurnRunner


@dataclass(frozen=True, slots=True)
class Started:
    session_id: str
    user_message_id: str


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    result: TurnResult


TurnStreamEvent = Started | Delta | Finished
_END = object()


class QueueEvents:
    """A `TurnEvents` sink that puts every event on an asyncio queue."""

    streaming = True

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    async def started(self, ctx: TurnContext) -> None:
        assert ctx.session is not None and ctx.customer_message is not None
        self.queue.put_nowait(Started(ctx.session.id, ctx.customer_message.id))

    async def delta(self, text: str) -> None:
        self.queue.put_nowait(Delta(text))


async def stream_turn(
    runner: TurnRunner, turn: TurnInput, *, finish_in: set[asyncio.Task[TurnResult]] | None = None
) -> AsyncIterator[TurnStreamEvent]:
    """Yield Started, Deltas, then Finished. Errors from intake (message not stored) propagate.

    Closing the iterator early means the customer went away: the turn is cancelled (SSE: they closed
    the stream), or, with `finish_in`, left to finish in the background and parked in that set (WebSocket:
    a dropped socket is usually a network blip, and the widget fetches the stored reply on reconnect).
    """
    events = QueueEvents()
    task = asyncio.create_task(runner.run(turn, events))
    task.add_done_callback(lambda _: events.queue.put_nowait(_END))
    try:
        while True:
            item = await events.queue.get()
            if item is _END:
                yield Finished(task.result())
                return
            assert isinstance(item, Started | Delta)
            yield item
    finally:
        if not task.done():
            if finish_in is not None:
                finish_in.add(task)
                task.add_done_callback(finish_in.discard)
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
            else:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
